"""FASTA, A3M and Stockholm reading with AlphaFold2's conventions.

A3M: lower-case letters are insertions relative to the query; they are removed
from the aligned sequence and counted in the deletion matrix (number of
residues deleted just left of each aligned column). Stockholm: columns where
the query has a gap are removed and counted the same way. Duplicate aligned
sequences are dropped (the first copy is kept; the query always stays first).

Bad input raises :class:`InputError` with one message naming the file, the
problem and the fix.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from warpbio.fold import residue_constants as rc


class InputError(ValueError):
    """An input file that cannot be folded; the message names file and fix."""


# Letters accepted in a target sequence: the 20 amino acids, X, and the IUPAC
# ambiguity/rare codes AlphaFold2 maps to X (B, Z, J, U, O).
AMINO_ACID_LETTERS = set(rc.RESTYPES) | set("XBZJUO")
TARGET_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class Target:
    name: str
    sequence: str
    description: str = ""


@dataclass
class Msa:
    sequences: list[str]  # aligned to the query, query first
    deletion_matrix: list[list[int]]
    descriptions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sequences)


def parse_fasta(text: str) -> list[tuple[str, str]]:
    """(description, sequence) pairs; blank lines skipped, lines joined."""
    records: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith(">"):
            records.append((line[1:].strip(), ""))
        elif not records:
            raise ValueError("sequence data before the first '>' header")
        else:
            records[-1] = (records[-1][0], records[-1][1] + line)
    return records


def target_name(description: str, index: int) -> str:
    """A file-name-safe target name: the header's first word."""
    word = description.split()[0] if description.split() else f"target_{index + 1}"
    return TARGET_NAME.sub("_", word).strip("_") or f"target_{index + 1}"


def clean_sequence(sequence: str, where: str) -> str:
    """Upper-case, strip one trailing '*'; refuse anything not an amino-acid letter."""
    sequence = sequence.upper().removesuffix("*")
    bad = sorted({c for c in sequence if c not in AMINO_ACID_LETTERS})
    if bad:
        position = next(i for i, c in enumerate(sequence) if c in bad) + 1
        raise InputError(
            f"{where}: the sequence has non-amino-acid character(s) {''.join(bad)!r} "
            f"(first at position {position}); use one-letter amino-acid codes "
            f"({''.join(rc.RESTYPES)}, X for unknown)"
        )
    if not sequence:
        raise InputError(f"{where}: the sequence is empty; give at least one residue")
    return sequence


def read_targets(path: str | os.PathLike) -> list[Target]:
    """Every record of a FASTA file as a target, validated."""
    try:
        records = parse_fasta(Path(path).read_text())
    except ValueError as error:
        raise InputError(
            f"{path}: not a FASTA file ({error}); start each record with '>'"
        ) from None
    if not records:
        raise InputError(f"{path}: no FASTA records; give at least one '>name' and a sequence")
    targets, names = [], set()
    for index, (description, sequence) in enumerate(records):
        name = target_name(description, index)
        if name in names:
            raise InputError(
                f"{path}: two records are named {name!r}; give each target a unique name"
            )
        names.add(name)
        where = f"{path}, record {name!r}"
        targets.append(Target(name, clean_sequence(sequence, where), description))
    return targets


def parse_a3m(text: str) -> Msa:
    records = parse_fasta(text)
    sequences, deletions, descriptions = [], [], []
    for description, raw in records:
        raw = raw.replace(".", "")  # a2m-style insert gaps carry no residue
        counts, count, aligned = [], 0, []
        for char in raw:
            if char.islower():
                count += 1
            else:
                counts.append(count)
                aligned.append(char)
                count = 0
        sequences.append("".join(aligned))
        deletions.append(counts)
        descriptions.append(description)
    return Msa(sequences, deletions, descriptions)


def parse_stockholm(text: str) -> Msa:
    rows: OrderedDict[str, str] = OrderedDict()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"Stockholm line is not 'name sequence': {line[:60]!r}")
        name, chunk = parts
        rows[name] = rows.get(name, "") + chunk
    if not rows:
        return Msa([], [], [])
    query = next(iter(rows.values()))
    keep = [i for i, c in enumerate(query) if c != "-"]
    sequences, deletions = [], []
    for row in rows.values():
        sequences.append("".join(row[i] for i in keep))
        counts, count = [], 0
        for char, query_char in zip(row, query, strict=False):
            if char == "-" and query_char == "-":
                continue
            if query_char == "-":
                count += 1
            else:
                counts.append(count)
                count = 0
        deletions.append(counts)
    return Msa(sequences, deletions, list(rows))


def read_msa(path: str | os.PathLike, query: str) -> Msa:
    """Read an A3M or Stockholm file, check it against the query, dedup it."""
    path = str(path)
    text = Path(path).read_text()
    is_stockholm = path.endswith((".sto", ".stockholm")) or text.lstrip().startswith("# STOCKHOLM")
    try:
        msa = parse_stockholm(text) if is_stockholm else parse_a3m(text)
    except ValueError as error:
        raise InputError(f"{path}: cannot parse the alignment ({error})") from None
    if len(msa) == 0:
        raise InputError(
            f"{path}: the MSA is empty; give an A3M/Stockholm file whose first sequence "
            "is the query, or use fold.msa.mode: single_sequence"
        )
    first = msa.sequences[0].upper().replace("-", "")
    if msa.sequences[0].upper() != query:
        raise InputError(
            f"{path}: the MSA's first sequence is not the target sequence "
            f"(MSA query {len(first)} aa starting {first[:20]!r}, target {len(query)} aa "
            f"starting {query[:20]!r}); give the MSA made for this target"
        )
    width = len(query)
    for index, (sequence, deletion) in enumerate(
        zip(msa.sequences, msa.deletion_matrix, strict=True)
    ):
        if len(sequence) != width or len(deletion) != width:
            raise InputError(
                f"{path}: sequence {index + 1} ({msa.descriptions[index][:40]!r}) has "
                f"{len(sequence)} aligned columns, the query {width}; fix the alignment"
            )
    return deduplicate(msa)


def deduplicate(msa: Msa) -> Msa:
    seen: set[str] = set()
    keep = []
    for index, sequence in enumerate(msa.sequences):
        if sequence in seen:
            continue
        seen.add(sequence)
        keep.append(index)
    descriptions = msa.descriptions
    if len(descriptions) != len(msa.sequences):
        descriptions = [""] * len(msa.sequences)
    return Msa(
        [msa.sequences[i] for i in keep],
        [msa.deletion_matrix[i] for i in keep],
        [descriptions[i] for i in keep],
    )


def single_sequence_msa(query: str) -> Msa:
    return Msa([query], [[0] * len(query)], ["query"])


def msa_arrays(msa: Msa) -> tuple[np.ndarray, np.ndarray]:
    """(msa [S, N] in HHblits ids, deletion_matrix [S, N])."""
    lookup = np.full(128, rc.HHBLITS_AA_TO_ID["X"], dtype=np.int32)
    for letter, index in rc.HHBLITS_AA_TO_ID.items():
        lookup[ord(letter)] = index
    codes = np.array(
        [np.frombuffer(s.upper().encode("ascii", "replace"), dtype=np.uint8) for s in msa.sequences]
    )
    return lookup[np.minimum(codes, 127)], np.array(msa.deletion_matrix, dtype=np.float32)
