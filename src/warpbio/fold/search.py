"""MSA search with mmseqs2 or jackhmmer against a configured sequence database.

Both write an alignment that :func:`warpbio.fold.msa.read_msa` reads back, so
searched and given MSAs go through the same checks. The binaries are run from
PATH (Debian: ``apt-get install mmseqs2 hmmer``).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from warpbio.fold.msa import InputError, Msa, parse_a3m, parse_stockholm

log = logging.getLogger(__name__)


def _require(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if not found:
        raise InputError(
            f"fold.msa.mode needs '{binary}' on PATH; install it (Debian: apt-get install "
            f"{package}) or give MSA files (fold.msa.mode: files)"
        )
    return found


def _run(command: list[str], cwd: str | None = None) -> None:
    log.info("running: %s", " ".join(command))
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{command[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
        )


def jackhmmer_msa(
    query_fasta: str, database: str, iterations: int = 1, threads: int = 1, evalue: float = 1e-4
) -> Msa:
    """jackhmmer search; Stockholm hits parsed with the query first."""
    binary = _require("jackhmmer", "hmmer")
    with tempfile.TemporaryDirectory() as work:
        sto = str(Path(work) / "hits.sto")
        _run(
            [
                binary,
                "-o",
                "/dev/null",
                "-A",
                sto,
                "--noali",
                "--cpu",
                str(threads),
                "-N",
                str(iterations),
                "-E",
                str(evalue),
                "--incE",
                str(evalue),
                query_fasta,
                database,
            ]
        )
        text = Path(sto).read_text() if Path(sto).exists() else ""
    query = _first_sequence(query_fasta)
    hits = parse_stockholm(text) if text.strip() else Msa([], [], [])
    # jackhmmer puts the query only if it is in the database; add it first
    if not hits.sequences or hits.sequences[0] != query:
        hits = _with_query(hits, query)
    return hits


def mmseqs2_msa(query_fasta: str, database: str, threads: int = 1, sensitivity: float = 7.5) -> Msa:
    """mmseqs2 search + result2msa in A3M layout (query first)."""
    binary = _require("mmseqs", "mmseqs2")
    with tempfile.TemporaryDirectory() as work:
        w = Path(work)
        _run([binary, "createdb", query_fasta, str(w / "qdb")])
        _run([binary, "createdb", database, str(w / "tdb")])
        _run(
            [
                binary,
                "search",
                str(w / "qdb"),
                str(w / "tdb"),
                str(w / "res"),
                str(w / "tmp"),
                "-s",
                str(sensitivity),
                "--threads",
                str(threads),
                "-a",
            ]
        )
        _run(
            [
                binary,
                "result2msa",
                str(w / "qdb"),
                str(w / "tdb"),
                str(w / "res"),
                str(w / "msa"),
                "--msa-format-mode",
                "6",
                "--threads",
                str(threads),
            ]
        )
        text = _concatenated_db_text(w / "msa")
    msa = parse_a3m(text.replace("\x00", ""))
    query = _first_sequence(query_fasta)
    if not msa.sequences or msa.sequences[0] != query:
        msa = _with_query(msa, query)
    return msa


def _concatenated_db_text(prefix: Path) -> str:
    parts = sorted(prefix.parent.glob(prefix.name + "*"))
    data = [p for p in parts if not p.name.endswith((".index", ".dbtype", ".lookup", ".source"))]
    return "".join(p.read_text(errors="replace") for p in data)


def _first_sequence(fasta: str) -> str:
    lines = Path(fasta).read_text().splitlines()
    return "".join(line.strip() for line in lines[1:] if not line.startswith(">")).upper()


def _with_query(msa: Msa, query: str) -> Msa:
    rows = [
        (s, d, n)
        for s, d, n in zip(msa.sequences, msa.deletion_matrix, msa.descriptions, strict=False)
    ]
    rows = [r for r in rows if len(r[0]) == len(query)]
    return Msa(
        [query] + [r[0] for r in rows],
        [[0] * len(query)] + [r[1] for r in rows],
        ["query"] + [r[2] for r in rows],
    )


def write_a3m(msa: Msa, path: str) -> None:
    """A3M with insertions as lower case is not recoverable from the deletion
    counts, so deletions are written as that many lower-case 'x' before the column."""
    lines = []
    for index, (sequence, deletions) in enumerate(
        zip(msa.sequences, msa.deletion_matrix, strict=True)
    ):
        name = msa.descriptions[index] if index < len(msa.descriptions) else f"seq{index}"
        row = "".join("x" * int(d) + c for c, d in zip(sequence, deletions, strict=True))
        lines += [f">{name or f'seq{index}'}", row]
    Path(path).write_text("\n".join(lines) + "\n")
