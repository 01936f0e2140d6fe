"""The Triton kernels agree with their NumPy twins. GPU machine only."""

import numpy as np
import pytest

from warpbio.device import gpu_available

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU and CuPy"),
]


@pytest.fixture(scope="module")
def data():
    import cupy as cp

    from warpbio.genotype.pca import PackedStandardizedMatrix, standardization_table
    from warpbio.genotype.plink import pack_genotypes

    rng = np.random.default_rng(11)
    n_snps, n_samples = 3001, 1001  # neither a multiple of the tiles nor of 4
    freq = rng.uniform(0.05, 0.95, n_snps)
    dosage = (rng.random((n_snps, n_samples)) < freq[:, None]).astype(np.int8)
    dosage += rng.random((n_snps, n_samples)) < freq[:, None]
    dosage[rng.random(dosage.shape) < 0.03] = -1
    called = dosage >= 0
    alt = np.where(called, dosage, 0).sum(1)
    table = standardization_table(alt / (2 * called.sum(1)), np.float64)
    packed = pack_genotypes(dosage)
    cpu = PackedStandardizedMatrix(packed, table, n_samples, np, 500, np.float64)
    dense = np.concatenate([block for _, block in cpu.blocks()])
    return cp.asarray(packed), table, dosage, dense, cpu


def relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_count_genotypes(data):
    from warpbio.genotype.kernels import count_genotypes

    packed, _, dosage, _, _ = data
    alt, het, called = count_genotypes(packed, dosage.shape[1])
    np.testing.assert_array_equal(alt.get(), np.where(dosage >= 0, dosage, 0).sum(1))
    np.testing.assert_array_equal(het.get(), (dosage == 1).sum(1))
    np.testing.assert_array_equal(called.get(), (dosage >= 0).sum(1))


@pytest.mark.parametrize(
    ("precision", "tolerance"), [("ieee", 1e-6), ("tf32x3", 1e-5), ("tf32", 3e-3), ("fp16", 3e-3)]
)
def test_products_match_dense(data, precision, tolerance):
    import cupy as cp

    from warpbio.genotype.kernels import TritonPackedMatrix

    packed, table, _, dense, cpu = data
    gpu = TritonPackedMatrix(packed, table, dense.shape[1], precision)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((dense.shape[1], 20))
    image = gpu.times(cp.asarray(vectors)).get()
    assert relative(image, dense @ vectors) < tolerance
    weights = rng.standard_normal((dense.shape[0], 20))
    back = gpu.transpose_times(cp.asarray(weights, dtype=cp.float32)).get()
    assert relative(back, dense.T @ weights) < tolerance
    gram = gpu.gram_times(cp.asarray(vectors)).get()
    assert relative(gram, cpu.gram_times(vectors)) < 2 * tolerance
    assert gpu.sum_squares() == pytest.approx((dense**2).sum(), rel=1e-6)


def test_randomized_pca_on_gpu_matches_cpu(data):
    from warpbio.genotype.kernels import TritonPackedMatrix
    from warpbio.genotype.pca import randomized_pca

    packed, table, _, dense, cpu = data
    on_cpu = randomized_pca(cpu, 5, seed=2)
    on_gpu = randomized_pca(TritonPackedMatrix(packed, table, dense.shape[1], "tf32x3"), 5, seed=2)
    np.testing.assert_allclose(on_gpu.eigenvalues, on_cpu.eigenvalues, rtol=1e-5)
    for i in range(5):
        assert abs(np.dot(on_gpu.eigenvectors[:, i], on_cpu.eigenvectors[:, i])) > 1 - 1e-6


def test_offsets_past_int32():
    """A packed matrix over 2^31 bytes: the last rows must decode and multiply right."""
    import cupy as cp

    from warpbio.genotype.kernels import TritonPackedMatrix, count_genotypes
    from warpbio.genotype.pca import decode_standardized, standardization_table

    n_samples = 20_000
    n_snps = (2**31) // 5_000 + 1_000  # 2.15 GB packed
    packed = cp.random.randint(0, 256, size=(n_snps, 5_000), dtype=cp.uint8)
    alt, _, called = count_genotypes(packed, n_samples)
    tail = packed[-64:].get()
    codes = (tail[:, :, None] >> np.array([0, 2, 4, 6], dtype=np.uint8)) & 3
    codes = codes.reshape(64, -1)
    dosage = np.array([2, -1, 1, 0])[codes]
    np.testing.assert_array_equal(alt[-64:].get(), np.where(dosage >= 0, dosage, 0).sum(1))
    np.testing.assert_array_equal(called[-64:].get(), (dosage >= 0).sum(1))
    freq = np.clip((alt / (2 * called)).get(), 0.01, 0.99)
    table = standardization_table(freq)
    matrix = TritonPackedMatrix(packed, table, n_samples, "ieee")
    vectors = np.random.default_rng(1).standard_normal((n_samples, 2))
    image = matrix.times(cp.asarray(vectors)).get()
    expected = decode_standardized(tail, table[-64:], n_samples) @ vectors
    np.testing.assert_allclose(image[-64:], expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("n_gpus", [1, 2])
def test_snps_split_across_gpus_match_one_matrix(data, n_gpus):
    import cupy as cp

    from warpbio.genotype.kernels import MultiGpuPackedMatrix
    from warpbio.genotype.pca import randomized_pca

    if cp.cuda.runtime.getDeviceCount() < n_gpus:
        pytest.skip(f"needs {n_gpus} GPUs")
    packed, _, _, dense, cpu = data
    matrix = MultiGpuPackedMatrix.split(packed.get(), dense.shape[1], n_gpus, precision="ieee")
    assert matrix.devices == list(range(n_gpus))
    vectors = np.random.default_rng(3).standard_normal((dense.shape[1], 12))
    gram = matrix.gram_times(cp.asarray(vectors)).get()
    assert relative(gram, cpu.gram_times(vectors)) < 2e-6
    assert matrix.sum_squares() == pytest.approx((dense**2).sum(), rel=1e-6)
    on_cpu = randomized_pca(cpu, 4, seed=5)
    split = randomized_pca(matrix, 4, seed=5)
    np.testing.assert_allclose(split.eigenvalues, on_cpu.eigenvalues, rtol=1e-5)
