"""Snakemake entry point; the work is in warpbio.genotype.pca.loadings_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.genotype.pca import loadings_step
from warpbio.runner import run_step

run_step(snakemake, loadings_step)  # noqa: F821 - snakemake is injected by the script directive
