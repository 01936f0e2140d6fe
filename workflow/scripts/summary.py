"""Snakemake entry point; the work is in warpbio.summary.summary_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.runner import run_step
from warpbio.summary import summary_step

run_step(snakemake, summary_step)  # noqa: F821 - snakemake is injected by the script directive
