"""Write the fold demo's tiny inputs: demo.fasta and one synthetic A3M per target.

The alignments are made up (seeded substitutions, gaps, lower-case insertions and
a few duplicates), so the demo needs no database; they exercise the parser and
the feature pipeline, not biology. Run from the repository root:
    python resources/fold/make_demo_msas.py
"""

from pathlib import Path

import numpy as np

TARGETS = {
    # villin headpiece HP36 and the Trp-cage miniprotein TC5b
    "villin_hp36": "MLSDEDFKAVFGMTRSAFANLPLWKQQNLKKEKGLF",
    "trp_cage": "NLYIQWLKDGGPSSGRPPPS",
}
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def homolog(query: str, rng: np.random.Generator) -> str:
    rate = rng.uniform(0.1, 0.5)
    row = []
    for residue in query:
        roll = rng.random()
        if roll < 0.08:
            row.append("-")
        elif roll < 0.08 + rate:
            row.append(AMINO[rng.integers(20)])
        else:
            row.append(residue)
        if rng.random() < 0.04:
            row.append("".join(rng.choice(list(AMINO.lower()), rng.integers(1, 4))))
    return "".join(row)


def main(folder: Path = Path(__file__).parent, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    (folder / "demo.fasta").write_text(
        "".join(f">{name} demo target\n{seq}\n" for name, seq in TARGETS.items())
    )
    for name, query in TARGETS.items():
        rows = [homolog(query, rng) for _ in range(48)]
        rows += rows[:3]  # duplicates, removed by the pipeline
        text = f">{name}\n{query}\n" + "".join(f">hit{i}\n{r}\n" for i, r in enumerate(rows))
        (folder / f"{name}.a3m").write_text(text)


if __name__ == "__main__":
    main()
