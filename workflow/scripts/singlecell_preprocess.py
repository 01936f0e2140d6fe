"""Snakemake entry point; the work is in warpbio.singlecell.preprocess.preprocess_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.runner import run_step
from warpbio.singlecell.preprocess import preprocess_step

# Guarded: Dask worker processes start by spawn, which re-imports this script.
if __name__ == "__main__":
    run_step(snakemake, preprocess_step)  # noqa: F821 - snakemake is injected by the script directive
