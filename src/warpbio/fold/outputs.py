"""Prediction outputs: PDB and mmCIF with pLDDT in the B-factor column, JSON scores.

Outputs of a random-parameter model are marked as such in every file (PDB
REMARK, mmCIF title, JSON ``real_prediction: false`` and ``warning``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from warpbio.fold import residue_constants as rc

NOT_REAL_WARNING = (
    "NOT A REAL PREDICTION: made by a randomly initialised model (no trained weights); "
    "the coordinates and confidences carry no information about the protein"
)


@dataclass
class Prediction:
    """One model's result for one target, on the host."""

    target: str
    model_name: str
    sequence: str
    atom_positions: np.ndarray  # [N, 37, 3]
    atom_mask: np.ndarray  # [N, 37]
    plddt: np.ndarray  # [N] in 0..100
    ptm: float | None = None
    pae: np.ndarray | None = None  # [N, N]
    max_pae: float | None = None
    real_prediction: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    peak_memory: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_plddt(self) -> float:
        return float(np.mean(self.plddt))

    @property
    def aatype(self) -> np.ndarray:
        return np.array([rc.RESTYPE_ORDER.get(c, rc.UNK_INDEX) for c in self.sequence])


def _atoms(prediction: Prediction):
    """(serial, atom name, residue name, residue number, xyz, b-factor, element) rows."""
    serial = 0
    for i, letter in enumerate(prediction.sequence):
        resname = rc.RESTYPE_1TO3.get(letter, "UNK")
        for atom_index, atom in enumerate(rc.ATOM_TYPES):
            if prediction.atom_mask[i, atom_index] < 0.5:
                continue
            serial += 1
            yield (
                serial,
                atom,
                resname,
                i + 1,
                prediction.atom_positions[i, atom_index],
                float(prediction.plddt[i]),
                rc.atom_element(atom),
            )


def to_pdb(prediction: Prediction, chain: str = "A") -> str:
    lines = [f"REMARK   1 warpbio fold: target {prediction.target}, {prediction.model_name}"]
    if not prediction.real_prediction:
        text = NOT_REAL_WARNING
        lines += [f"REMARK   1 {text[i : i + 68]}" for i in range(0, len(text), 68)]
    lines.append("REMARK   1 B-factor column: per-residue pLDDT (0-100)")
    last = None
    for serial, atom, resname, resnum, xyz, bfactor, element in _atoms(prediction):
        name = atom if len(atom) == 4 else f" {atom}"
        x, y, z = (float(v) for v in xyz)
        lines.append(
            f"ATOM  {serial:>5} {name:<4} {resname:>3} {chain}{resnum:>4}    "
            f"{x:>8.3f}{y:>8.3f}{z:>8.3f}{1.0:>6.2f}{bfactor:>6.2f}          {element:>2}  "
        )
        last = (serial, resname, resnum)
    if last is not None:
        lines.append(f"TER   {last[0] + 1:>5}      {last[1]:>3} {chain}{last[2]:>4}")
    lines.append("END")
    return "\n".join(lines) + "\n"


def _cif_value(text: str) -> str:
    return f"'{text}'" if (" " in text or not text) else text


def to_mmcif(prediction: Prediction, chain: str = "A") -> str:
    title = f"warpbio fold prediction of {prediction.target} ({prediction.model_name})"
    if not prediction.real_prediction:
        title = f"{NOT_REAL_WARNING}. {title}"
    block = prediction.target.replace(" ", "_") or "prediction"
    lines = [
        f"data_{block}",
        "#",
        f"_entry.id {block}",
        "#",
        f"_struct.entry_id {block}",
        "_struct.title",
        ";" + title,
        ";",
        "#",
        "loop_",
        "_entity_poly_seq.entity_id",
        "_entity_poly_seq.num",
        "_entity_poly_seq.mon_id",
        "_entity_poly_seq.hetero",
    ]
    for i, letter in enumerate(prediction.sequence):
        lines.append(f"1 {i + 1} {rc.RESTYPE_1TO3.get(letter, 'UNK')} n")
    lines += [
        "#",
        "loop_",
        "_atom_site.group_PDB",
        "_atom_site.id",
        "_atom_site.type_symbol",
        "_atom_site.label_atom_id",
        "_atom_site.label_alt_id",
        "_atom_site.label_comp_id",
        "_atom_site.label_asym_id",
        "_atom_site.label_entity_id",
        "_atom_site.label_seq_id",
        "_atom_site.pdbx_PDB_ins_code",
        "_atom_site.Cartn_x",
        "_atom_site.Cartn_y",
        "_atom_site.Cartn_z",
        "_atom_site.occupancy",
        "_atom_site.B_iso_or_equiv",
        "_atom_site.auth_seq_id",
        "_atom_site.auth_asym_id",
        "_atom_site.pdbx_PDB_model_num",
    ]
    for serial, atom, resname, resnum, xyz, bfactor, element in _atoms(prediction):
        x, y, z = (float(v) for v in xyz)
        lines.append(
            f"ATOM {serial} {element} {atom} . {resname} {chain} 1 {resnum} ? "
            f"{x:.3f} {y:.3f} {z:.3f} 1.00 {bfactor:.2f} {resnum} {chain} 1"
        )
    lines.append("#")
    return "\n".join(lines) + "\n"


def to_json(prediction: Prediction) -> str:
    record: dict[str, Any] = {
        "target": prediction.target,
        "model": prediction.model_name,
        "real_prediction": prediction.real_prediction,
        "sequence": prediction.sequence,
        "num_residues": len(prediction.sequence),
        "mean_plddt": round(prediction.mean_plddt, 3),
        "plddt": [round(float(v), 2) for v in prediction.plddt],
        "ptm": None if prediction.ptm is None else round(float(prediction.ptm), 5),
        "max_pae": None if prediction.max_pae is None else round(float(prediction.max_pae), 3),
        "pae": None
        if prediction.pae is None
        else [[round(float(v), 2) for v in row] for row in prediction.pae],
        **prediction.extra,
    }
    if not prediction.real_prediction:
        record["warning"] = NOT_REAL_WARNING
    return json.dumps(record, indent=1) + "\n"


def to_timings_json(prediction: Prediction) -> str:
    """The run's facts, beside the scores: wall times and peak memory. Kept out of
    scores.json so that a rerun reproduces that file byte for byte."""
    record = {
        "target": prediction.target,
        "model": prediction.model_name,
        "timings_s": {k: round(v, 3) for k, v in prediction.timings.items()},
        "peak_memory_mb": {k: round(v, 1) for k, v in prediction.peak_memory.items()},
    }
    return json.dumps(record, indent=1) + "\n"
