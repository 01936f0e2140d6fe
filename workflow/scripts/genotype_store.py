"""Snakemake entry point; the work is in warpbio.genotype.store.store_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.genotype.store import store_step
from warpbio.runner import run_step

run_step(snakemake, store_step)  # noqa: F821 - snakemake is injected by the script directive
