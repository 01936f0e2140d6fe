"""Snakemake entry point; the work is in warpbio.singlecell.plots.plots_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.runner import run_step
from warpbio.singlecell.plots import plots_step

run_step(snakemake, plots_step)  # noqa: F821 - snakemake is injected by the script directive
