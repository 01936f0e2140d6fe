"""PDB / mmCIF / JSON writers: parseable by Biopython, pLDDT in the B-factor
column, random-parameter outputs marked as not real."""

from __future__ import annotations

import json

import numpy as np
import pytest

from warpbio.fold import residue_constants as rc
from warpbio.fold.outputs import Prediction, to_json, to_mmcif, to_pdb, to_timings_json


def prediction(real=True):
    sequence = "MKWVG"
    rng = np.random.default_rng(0)
    mask = rc.RESTYPE_ATOM37_MASK[[rc.RESTYPE_ORDER[c] for c in sequence]]
    return Prediction(
        target="t1",
        model_name="model_1_ptm",
        sequence=sequence,
        atom_positions=rng.normal(0, 10, (5, 37, 3)).astype(np.float32),
        atom_mask=mask,
        plddt=np.array([91.5, 80.25, 55.0, 12.75, 70.0]),
        ptm=0.4321,
        pae=rng.uniform(0, 30, (5, 5)),
        max_pae=31.75,
        real_prediction=real,
        timings={"inference": 1.5},
        peak_memory={"host_peak_rss": 100.0},
    )


def test_pdb_and_mmcif_parse_with_plddt_in_bfactor(tmp_path):
    bio = pytest.importorskip("Bio.PDB")
    p = prediction()
    (tmp_path / "m.pdb").write_text(to_pdb(p))
    (tmp_path / "m.cif").write_text(to_mmcif(p))
    for structure in (
        bio.PDBParser(QUIET=True).get_structure("m", tmp_path / "m.pdb"),
        bio.MMCIFParser(QUIET=True).get_structure("m", tmp_path / "m.cif"),
    ):
        residues = list(structure.get_residues())
        assert [r.get_resname() for r in residues] == ["MET", "LYS", "TRP", "VAL", "GLY"]
        assert len(list(structure.get_atoms())) == int(p.atom_mask.sum())
        for residue, plddt in zip(residues, p.plddt, strict=True):
            assert {a.get_bfactor() for a in residue} == {plddt}
        ca = residues[2]["CA"].get_coord()
        np.testing.assert_allclose(ca, p.atom_positions[2, rc.ATOM_ORDER["CA"]], atol=1e-3)
    assert "NOT A REAL" not in to_pdb(p)


def test_random_model_outputs_are_marked():
    p = prediction(real=False)
    assert "NOT A REAL PREDICTION" in to_pdb(p).splitlines()[1]
    assert "NOT A REAL PREDICTION" in to_mmcif(p)
    record = json.loads(to_json(p))
    assert record["real_prediction"] is False and "NOT A REAL PREDICTION" in record["warning"]


def test_json_fields():
    record = json.loads(to_json(prediction()))
    assert record["plddt"] == [91.5, 80.25, 55.0, 12.75, 70.0]
    assert record["mean_plddt"] == pytest.approx(61.9)
    assert record["ptm"] == 0.4321 and np.array(record["pae"]).shape == (5, 5)
    assert "timings_s" not in record and "peak_memory_mb" not in record
    timings = json.loads(to_timings_json(prediction()))
    assert timings["timings_s"] == {"inference": 1.5}
    assert timings["peak_memory_mb"] == {"host_peak_rss": 100.0}
