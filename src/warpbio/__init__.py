"""warpbio: GPU-accelerated, Snakemake-orchestrated life-science analyses."""

__version__ = "0.1.0"
