"""A PCA pass with the production block decoder, under a memory cap.

On the CPU the cap is an address-space limit set here (the test's stand-in for
a small node): decoding 8192 SNPs x 4000 samples needs about 130 MB, the cap
allows ``headroom_mb`` more than the process maps at the start. On the GPU the
test sets CUPY_GPU_MEMORY_LIMIT, so CuPy's own pool raises its OutOfMemoryError.
"""

import resource
from pathlib import Path

import numpy as np
from gram_inputs import packed_genotypes  # beside this script (Snakemake's sys.path)

from warpbio.device import to_numpy
from warpbio.genotype.pca import PackedStandardizedMatrix, decode_standardized
from warpbio.io import atomic_write
from warpbio.runner import run_step


def cap_address_space(headroom_mb: int) -> None:
    status = Path("/proc/self/status").read_text().splitlines()
    mapped_kb = int(next(line for line in status if line.startswith("VmSize")).split()[1])
    limit = mapped_kb * 1024 + headroom_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def step(ctx):
    p = ctx.params
    packed, table, vectors = packed_genotypes(p.n_snps, p.n_samples)
    block = ctx.shrink(p.block_snps, minimum=64)
    xp = ctx.xp
    if ctx.backend == "cpu":
        # compile the Numba decoder first: the cap stands for too little memory for
        # the data, not for the compiler
        decode_standardized(packed[:1], table[:1], p.n_samples)
        cap_address_space(int(p.headroom_mb))
    matrix = PackedStandardizedMatrix(packed, table, p.n_samples, xp, block)
    gram = to_numpy(matrix.gram_times(xp.asarray(vectors)))
    with atomic_write(ctx.output.gram) as tmp:
        np.save(tmp, gram)
    return {"block_snps": block}


run_step(snakemake, step)  # noqa: F821
