"""A real CuPy out-of-memory error in a GPU step: one clear error, then retries with
half the block each fit. Run on a CUDA machine (no Snakemake needed: the retries
are the runner's attempts 1, 2, 3 as Snakemake's --retries would start them)."""

import numpy as np
import pytest
from test_runner_faults import job

from warpbio.device import gpu_available
from warpbio.genotype.pca import PackedStandardizedMatrix, standardization_table
from warpbio.io import atomic_write
from warpbio.runner import OutOfMemoryError, run_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU and CuPy"),
]

N_SNPS, N_SAMPLES = 8192, 4000  # one 8192-SNP block decodes to ~460 MB on the device
POOL_LIMIT = 300 * 2**20


def test_gpu_out_of_memory_is_retried_with_half_the_block(tmp_path):
    import cupy

    rng = np.random.default_rng(0)
    packed = rng.integers(0, 256, size=(N_SNPS, N_SAMPLES // 4), dtype=np.uint8)
    table = standardization_table(rng.uniform(0.05, 0.5, N_SNPS))
    vectors = rng.standard_normal((N_SAMPLES, 4))
    expected = PackedStandardizedMatrix(packed, table, N_SAMPLES).gram_times(vectors)
    pool = cupy.get_default_memory_pool()

    def step(ctx):
        block = ctx.shrink(N_SNPS, minimum=64)
        matrix = PackedStandardizedMatrix(packed, table, N_SAMPLES, ctx.xp, block)
        gram = cupy.asnumpy(matrix.gram_times(ctx.xp.asarray(vectors)))
        with atomic_write(ctx.output.table) as tmp:
            np.save(tmp, gram)
        return {"block_snps": block}

    failures = []
    # cached blocks of earlier tests would serve the allocations without the limit
    # being checked: free them, and allow POOL_LIMIT beyond what is still in use
    pool.free_all_blocks()
    pool.set_limit(size=pool.used_bytes() + POOL_LIMIT)
    try:
        for attempt in (1, 2, 3, 4):
            smk = job(tmp_path, attempt=attempt)
            smk.params.backend = "gpu"
            smk.resources.gpu = 1
            smk.output.table = str(tmp_path / "gram.npy")
            smk.output[0] = smk.output.table
            try:
                run_step(smk, step)
                break
            except OutOfMemoryError as error:
                failures.append(str(error))
                pool.free_all_blocks()  # a retry is a new process with an empty pool
    finally:
        pool.set_limit(size=0)
    assert failures and "ran out of GPU memory on attempt 1" in failures[0]
    assert "OutOfMemoryError" in failures[0]  # CuPy's, named in the message
    np.testing.assert_allclose(np.load(tmp_path / "gram.npy"), expected, rtol=1e-4)
