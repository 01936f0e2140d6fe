"""Structure comparison: RMSD after optimal superposition (Kabsch), lDDT and
TM-score, on C-alpha atoms of residues matched by residue number.

- RMSD: Kabsch (1976) superposition of all matched C-alphas.
- lDDT (Mariani et al. 2013), C-alpha only, as AlphaFold2 computes it: pairs
  closer than 15 A in the reference, thresholds 0.5/1/2/4 A, global score.
- TM-score (Zhang & Skolnick 2004), normalised by the reference length, with
  the TM-score program's superposition search (seed fragments of L, L/2, L/4 ..
  residues, each extended iteratively by residues within d0 or 4.5 A...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Comparison:
    num_residues: int
    rmsd: float
    lddt: float
    tm_score: float

    def as_dict(self) -> dict[str, float]:
        return {
            "num_residues": self.num_residues,
            "rmsd_ca": self.rmsd,
            "lddt_ca": self.lddt,
            "tm_score": self.tm_score,
        }


def read_ca(path: str | os.PathLike, chain: str | None = None) -> dict[int, np.ndarray]:
    """C-alpha coordinates by residue number from a PDB or mmCIF file (first model)."""
    text = Path(path).read_text()
    if str(path).endswith((".cif", ".mmcif")) or text.lstrip().startswith("data_"):
        return _read_ca_mmcif(text, chain)
    coords: dict[int, np.ndarray] = {}
    for line in text.splitlines():
        if line.startswith("ENDMDL"):
            break
        if line.startswith("ATOM") and line[12:16].strip() == "CA":
            if chain is not None and line[21] != chain:
                continue
            if line[16] not in (" ", "A"):
                continue  # alternate locations beyond the first
            number = int(line[22:26])
            coords.setdefault(
                number, np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])])
            )
    return coords


def _read_ca_mmcif(text: str, chain: str | None) -> dict[int, np.ndarray]:
    columns: list[str] = []
    coords: dict[int, np.ndarray] = {}
    in_loop = False
    for line in text.splitlines():
        if line.startswith("_atom_site."):
            columns.append(line.split()[0][len("_atom_site.") :])
            in_loop = True
            continue
        if in_loop and (line.startswith(("ATOM", "HETATM"))):
            values = line.split()
            row = dict(zip(columns, values, strict=False))
            if row.get("label_atom_id") != "CA" or row.get("group_PDB") != "ATOM":
                continue
            if row.get("pdbx_PDB_model_num", "1") != "1":
                break
            if chain is not None and row.get("auth_asym_id", row.get("label_asym_id")) != chain:
                continue
            number = int(row.get("auth_seq_id", row.get("label_seq_id")))
            coords.setdefault(
                number,
                np.array([float(row["Cartn_x"]), float(row["Cartn_y"]), float(row["Cartn_z"])]),
            )
        elif in_loop and coords and line.startswith(("#", "loop_")):
            break
    return coords


def kabsch(mobile: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R and translation t minimising |R @ mobile + t - target|."""
    mobile_centre, target_centre = mobile.mean(0), target.mean(0)
    covariance = (mobile - mobile_centre).T @ (target - target_centre)
    u, _, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(vt.T @ u.T))
    correction = np.diag([1.0, 1.0, sign])
    rotation = vt.T @ correction @ u.T
    return rotation, target_centre - rotation @ mobile_centre


def superposed_rmsd(mobile: np.ndarray, target: np.ndarray) -> float:
    rotation, translation = kabsch(mobile, target)
    moved = mobile @ rotation.T + translation
    return float(np.sqrt(((moved - target) ** 2).sum(-1).mean()))


def lddt_ca(predicted: np.ndarray, reference: np.ndarray, cutoff: float = 15.0) -> float:
    """Global C-alpha lDDT in [0, 1] (AlphaFold2's definition)."""
    true_d = np.sqrt(((reference[:, None] - reference[None]) ** 2).sum(-1) + 1e-10)
    pred_d = np.sqrt(((predicted[:, None] - predicted[None]) ** 2).sum(-1) + 1e-10)
    considered = (true_d < cutoff) & ~np.eye(len(reference), dtype=bool)
    error = np.abs(true_d - pred_d)
    score = sum((error < t).astype(float) for t in (0.5, 1.0, 2.0, 4.0)) / 4
    return float((score * considered).sum() / (1e-10 + considered.sum()))


def tm_d0(length: int) -> float:
    return max(0.5, 1.24 * (max(length, 19) - 15) ** (1.0 / 3) - 1.8) if length > 21 else 0.5


def tm_score(predicted: np.ndarray, reference: np.ndarray) -> float:
    """TM-score of ``predicted`` against ``reference`` (same residues, same order)."""
    n = len(reference)
    d0 = tm_d0(n)
    search_cutoff = min(max(4.5, d0), 8.0)
    best = 0.0
    fragment = n
    starts_seen: set[tuple[int, int]] = set()
    while True:
        step = max(1, fragment // 2) if fragment < n else 1
        for start in range(0, n - fragment + 1, step):
            if (start, fragment) in starts_seen:
                continue
            starts_seen.add((start, fragment))
            selected = np.arange(start, start + fragment)
            best = max(best, _extend(predicted, reference, selected, d0, search_cutoff))
        if fragment <= 4:
            break
        fragment = max(4, fragment // 2)
    return best


def _extend(predicted, reference, selected, d0, cutoff, iterations: int = 20) -> float:
    best, previous = 0.0, None
    for _ in range(iterations):
        if len(selected) < 3:
            break
        rotation, translation = kabsch(predicted[selected], reference[selected])
        moved = predicted @ rotation.T + translation
        distances = np.sqrt(((moved - reference) ** 2).sum(-1))
        best = max(best, float((1.0 / (1.0 + (distances / d0) ** 2)).sum() / len(reference)))
        threshold = cutoff
        chosen = np.flatnonzero(distances < threshold)
        while len(chosen) < 3 and threshold < 100:
            threshold += 0.5
            chosen = np.flatnonzero(distances < threshold)
        key = tuple(chosen)
        if key == previous:
            break
        previous, selected = key, chosen
    return best


def compare_structures(
    predicted_path: str | os.PathLike, reference_path: str | os.PathLike
) -> Comparison:
    """RMSD, lDDT and TM-score on the C-alphas both structures share."""
    predicted, reference = read_ca(predicted_path), read_ca(reference_path)
    shared = sorted(set(predicted) & set(reference))
    if len(shared) < 3:
        raise ValueError(
            f"{predicted_path} and {reference_path} share {len(shared)} residue numbers; "
            "need at least 3 matching C-alpha atoms (same numbering)"
        )
    p = np.array([predicted[i] for i in shared])
    r = np.array([reference[i] for i in shared])
    return Comparison(len(shared), superposed_rmsd(p, r), lddt_ca(p, r), tm_score(p, r))
