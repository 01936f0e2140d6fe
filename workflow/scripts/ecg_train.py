"""Snakemake entry point; the work is in warpbio.ecg.pipeline.train_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.ecg.pipeline import train_step
from warpbio.runner import run_step

run_step(snakemake, train_step)  # noqa: F821 - snakemake is injected by the script directive
