"""Snakemake entry point; the work is in warpbio.singlecell.qc.qc_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.runner import run_step
from warpbio.singlecell.qc import qc_step

run_step(snakemake, qc_step)  # noqa: F821 - snakemake is injected by the script directive
