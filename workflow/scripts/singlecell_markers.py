"""Snakemake entry point; the work is in warpbio.singlecell.markers.markers_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.runner import run_step
from warpbio.singlecell.markers import markers_step

run_step(snakemake, markers_step)  # noqa: F821 - snakemake is injected by the script directive
