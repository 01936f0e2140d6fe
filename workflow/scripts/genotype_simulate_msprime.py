"""Snakemake entry point; the work is in warpbio.genotype.coalescent.simulate_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.genotype.coalescent import simulate_step
from warpbio.runner import run_step

run_step(snakemake, simulate_step)  # noqa: F821 - snakemake is injected by the script directive
