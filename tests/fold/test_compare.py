"""RMSD / lDDT / TM-score against independent implementations: Biopython's
SVDSuperimposer, tmtools (TM-align) and AlphaFold2's own lDDT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from warpbio.fold.compare import (
    compare_structures,
    lddt_ca,
    read_ca,
    superposed_rmsd,
    tm_score,
)
from warpbio.fold.msa import read_targets

FOLDING = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "folding"
KWC = FOLDING / "6KWC"
needs_data = pytest.mark.skipif(not KWC.exists(), reason="shared folding data absent")


def ca_arrays(a, b):
    pa, pb = read_ca(a), read_ca(b)
    shared = sorted(set(pa) & set(pb))
    return np.array([pa[i] for i in shared]), np.array([pb[i] for i in shared])


def independent_scores(predicted, reference, sequence):
    tmtools = pytest.importorskip("tmtools")
    superimposer = pytest.importorskip("Bio.SVDSuperimposer").SVDSuperimposer()
    superimposer.set(reference, predicted)
    superimposer.run()
    aligned = tmtools.tm_align(predicted, reference, sequence, sequence)
    lddt = pytest.importorskip("alphafold.model.lddt").lddt(
        predicted_points=predicted[None].astype(np.float32),
        true_points=reference[None].astype(np.float32),
        true_points_mask=np.ones((1, len(reference), 1), np.float32),
        cutoff=15.0,
        per_residue=False,
    )
    # TM-align aligns structurally: its score is the sequence-dependent TM-score
    # only when its alignment is the identity (no gaps, residue i on residue i)
    identity = "-" not in aligned.seqxA + aligned.seqyA
    return superimposer.get_rms(), float(np.asarray(lddt)[0]), aligned.tm_norm_chain2, identity


@needs_data
def test_shipped_6kwc_predictions_agree_with_independent_tools():
    unrelaxed = KWC / "6KWC_1_model_1_ptm_unrelaxed.pdb"
    relaxed = KWC / "6KWC_1_model_1_ptm_relaxed.pdb"
    ours = compare_structures(unrelaxed, relaxed)
    sequence = read_targets(KWC / "6kwc.fasta")[0].sequence
    rmsd, lddt, tm, identity = independent_scores(*ca_arrays(unrelaxed, relaxed), sequence)
    print(ours, rmsd, lddt, tm)
    assert identity and ours.num_residues == 191
    assert abs(ours.rmsd - rmsd) < 1e-3
    assert abs(ours.lddt - lddt) < 1e-3
    assert abs(ours.tm_score - tm) < 1e-3


@needs_data
@pytest.mark.parametrize("noise", [1.5, 2.0, 4.0])
def test_perturbed_structures_agree_with_independent_tools(noise):
    """Harder cases than two near-identical models: noise and a shifted domain.
    Where TM-align realigns residues (large noise) its score may only be higher."""
    predicted, reference = ca_arrays(
        KWC / "6KWC_1_model_1_ptm_unrelaxed.pdb", KWC / "6KWC_1_model_1_ptm_relaxed.pdb"
    )
    rng = np.random.default_rng(int(noise * 10))
    moved = predicted + rng.normal(0, noise, predicted.shape)
    moved[120:] += np.array([4.0, -2.0, 1.0])
    sequence = read_targets(KWC / "6kwc.fasta")[0].sequence
    rmsd, lddt, tm, identity = independent_scores(moved, reference, sequence)
    assert abs(superposed_rmsd(moved, reference) - rmsd) < 1e-3
    assert abs(lddt_ca(moved, reference) - lddt) < 1e-3
    ours = tm_score(moved, reference)
    assert abs(ours - tm) < 1e-3 if identity else ours <= tm + 1e-3
    assert identity or noise >= 2  # TM-align keeps residue i on i up to ~1.5 A noise


def test_rigid_motion_is_invisible():
    rng = np.random.default_rng(1)
    reference = np.cumsum(rng.normal(0, 2.2, (60, 3)), axis=0)
    angle = 0.7
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    moved = reference @ rotation.T + np.array([10.0, -3.0, 5.0])
    assert superposed_rmsd(moved, reference) < 1e-9
    assert abs(lddt_ca(moved, reference) - 1) < 1e-9
    assert abs(tm_score(moved, reference) - 1) < 1e-9


@needs_data
def test_reads_ca_from_mmcif():
    cif = FOLDING / "mmcif" / "3zee.cif"
    coords = read_ca(cif)
    assert len(coords) > 20
    assert all(c.shape == (3,) for c in coords.values())
