"""Snakemake entry point; the work is in warpbio.ecg.pipeline.segment_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.ecg.pipeline import segment_step
from warpbio.runner import run_step

run_step(snakemake, segment_step)  # noqa: F821 - snakemake is injected by the script directive
