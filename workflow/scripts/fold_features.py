"""Snakemake entry point; the work is in warpbio.fold.steps.features_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.fold.steps import features_step
from warpbio.runner import run_step

run_step(snakemake, features_step)  # noqa: F821 - snakemake is injected by the script directive
