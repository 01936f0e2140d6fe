"""Snakemake entry point; the work is in warpbio.fold.steps.relax_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.fold.steps import relax_step
from warpbio.runner import run_step

run_step(snakemake, relax_step)  # noqa: F821 - snakemake is injected by the script directive
