"""Amber relaxation against AlphaFold2's own: relaxing the shipped unrelaxed 6KWC
prediction lands on the shipped relaxed one."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openmm")
pytest.importorskip("pdbfixer")

from warpbio.fold.compare import compare_structures
from warpbio.fold.relax import relax_pdb

KWC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "folding" / "6KWC"


def atoms(text):
    return {
        (line[22:26].strip(), line[12:16].strip()): np.array(
            [float(line[30:38]), float(line[38:46]), float(line[46:54])]
        )
        for line in text.splitlines()
        if line.startswith("ATOM")
    }


def bfactors(text):
    return {
        line[22:26]: float(line[60:66]) for line in text.splitlines() if line.startswith("ATOM")
    }


@pytest.mark.skipif(not KWC.exists(), reason="shared folding data absent")
def test_relaxing_the_shipped_6kwc_model_matches_alphafolds_relaxed_model(tmp_path):
    unrelaxed = (KWC / "6KWC_1_model_1_ptm_unrelaxed.pdb").read_text()
    reference = (KWC / "6KWC_1_model_1_ptm_relaxed.pdb").read_text()
    text, info = relax_pdb(unrelaxed)
    (tmp_path / "relaxed.pdb").write_text(text)
    print(info)
    assert info["energy_after_kcal_mol"] < info["energy_before_kcal_mol"]
    ours, theirs = atoms(text), atoms(reference)
    assert set(ours) == set(theirs)  # same atoms, hydrogens and OXT included
    heavy = [k for k in theirs if not k[1].startswith("H")]
    shift = np.sqrt(np.mean([((ours[k] - theirs[k]) ** 2).sum() for k in heavy]))
    print("heavy-atom RMSD to AlphaFold2's relaxed model (no superposition):", shift)
    assert shift < 0.05, f"heavy atoms {shift:.3f} A from AlphaFold2's relaxed model"
    relaxed_path = KWC / "6KWC_1_model_1_ptm_relaxed.pdb"
    assert compare_structures(tmp_path / "relaxed.pdb", relaxed_path).rmsd < 0.05
    assert bfactors(text) == bfactors(unrelaxed)  # pLDDT kept in the B-factor column
    # reruns on another day give the same bytes: no date stamp (OpenMM's header has one)
    assert str(date.today()) not in text and "CREATED WITH OPENMM" not in text
