"""Acceptance 3: the real 6KWC FASTA and A3M through the feature pipeline and
the full-depth (48-block) model, with parameters from the reference's own
random initialisation in the official npz layout, to a valid PDB, mmCIF and JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from warpbio.fold import features as ft
from warpbio.fold.config import InferenceOptions
from warpbio.fold.inference import WeightsSpec, run_model
from warpbio.fold.msa import read_msa, read_targets
from warpbio.fold.outputs import to_json, to_mmcif, to_pdb, to_timings_json

KWC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "folding" / "6KWC"


@pytest.mark.slow
@pytest.mark.skipif(not KWC.exists(), reason="shared folding data absent")
def test_6kwc_full_depth_random_model_end_to_end(reference_npz_48, tmp_path):
    bio = pytest.importorskip("Bio.PDB")
    target = read_targets(KWC / "6kwc.fasta")[0]
    msa = read_msa(KWC / "bfd_uniref_hits.a3m", target.sequence)
    config = ft.FeatureConfig(max_msa_clusters=16, max_extra_msa=32, num_recycle=0)
    features = ft.build_features(target.sequence, msa, config, seed=0)
    ft.save_features(tmp_path / "features.npz", features)
    features = ft.load_features(tmp_path / "features.npz")
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(reference_npz_48, weights / "params_model_3_ptm.npz")

    torch.set_num_threads(2)
    prediction = run_model(
        target.name,
        target.sequence,
        features,
        "model_3_ptm",
        WeightsSpec(folder=str(weights)),
        InferenceOptions(num_recycle=0),
        torch.device("cpu"),
    )
    print(prediction.timings, prediction.peak_memory)
    assert prediction.extra["evoformer_blocks"] == 48 and prediction.real_prediction
    (tmp_path / "model.pdb").write_text(to_pdb(prediction))
    (tmp_path / "model.cif").write_text(to_mmcif(prediction))
    (tmp_path / "scores.json").write_text(to_json(prediction))

    structure = bio.PDBParser(QUIET=True).get_structure("m", tmp_path / "model.pdb")
    residues = list(structure.get_residues())
    assert len(residues) == 191
    atoms = list(structure.get_atoms())
    assert len(atoms) == int(prediction.atom_mask.sum())
    np.testing.assert_allclose(
        [a.get_bfactor() for a in atoms if a.get_id() == "CA"], prediction.plddt, atol=0.006
    )
    cif = bio.MMCIFParser(QUIET=True).get_structure("m", tmp_path / "model.cif")
    assert len(list(cif.get_atoms())) == len(atoms)
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert len(scores["plddt"]) == 191 and np.array(scores["pae"]).shape == (191, 191)
    assert 0 <= scores["ptm"] <= 1 and 0 <= scores["mean_plddt"] <= 100
    timings = json.loads(to_timings_json(prediction))
    assert timings["timings_s"]["inference"] > 0 and timings["peak_memory_mb"]["host_peak_rss"] > 0
    assert "timings_s" not in scores  # run facts stay out of the reproducible scores
