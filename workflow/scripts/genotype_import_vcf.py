"""Snakemake entry point; the work is in warpbio.genotype.vcf.import_step."""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.genotype.vcf import import_step
from warpbio.runner import run_step

run_step(snakemake, import_step)  # noqa: F821 - snakemake is injected by the script directive
