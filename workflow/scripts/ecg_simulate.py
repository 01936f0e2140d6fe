"""Snakemake entry point; the work is in warpbio.ecg.simulate.simulate_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.ecg.simulate import simulate_step
from warpbio.runner import run_step

run_step(snakemake, simulate_step)  # noqa: F821 - snakemake is injected by the script directive
