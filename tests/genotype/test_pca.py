import numpy as np
import pytest

from warpbio.genotype.pca import (
    PackedStandardizedMatrix,
    decode_standardized,
    exact_pca,
    randomized_pca,
    run_pca,
    standardization_table,
)
from warpbio.genotype.plink import decode_genotypes, pack_genotypes
from warpbio.genotype.simulate import BaldingNicholsSpec, population_frequencies, simulate_block


def structured_dosage(n_samples=300, n_snps=4000, seed=0):
    spec = BaldingNicholsSpec(n_samples=n_samples, n_snps=n_snps, fst=0.08, missing_rate=0.02)
    rng = np.random.default_rng(seed)
    freqs = population_frequencies(spec, rng)
    labels = np.repeat(np.arange(3), n_samples // 3)
    dosage = simulate_block(freqs, labels, spec.missing_rate, rng, np)
    return dosage, labels


def frequencies(dosage):
    called = dosage >= 0
    return np.where(called, dosage, 0).sum(1) / (2 * called.sum(1))


def dense_standardized(dosage, freq):
    sd = np.sqrt(2 * freq * (1 - freq))
    values = (dosage - 2 * freq[:, None]) / sd[:, None]
    return np.where(dosage >= 0, values, 0.0)


def matrix_of(dosage, block_snps=1000, dtype=np.float32):
    freq = frequencies(dosage)
    keep = (freq > 0) & (freq < 1)
    packed = pack_genotypes(dosage[keep])
    table = standardization_table(freq[keep], dtype)
    return PackedStandardizedMatrix(packed, table, dosage.shape[1], np, block_snps, dtype), keep


def test_decoding_standardizes_with_mean_imputation():
    dosage, _ = structured_dosage(n_samples=30, n_snps=50)
    freq = frequencies(dosage)
    dosage, freq = dosage[(freq > 0) & (freq < 1)], freq[(freq > 0) & (freq < 1)]
    table = standardization_table(freq, np.float64)
    decoded = decode_standardized(pack_genotypes(dosage), table, 30)
    np.testing.assert_allclose(decoded, dense_standardized(dosage, freq), atol=1e-12)
    np.testing.assert_array_equal(decode_genotypes(pack_genotypes(dosage), 30), dosage)


@pytest.mark.parametrize("n_samples", [1, 4, 30, 1001, 1002, 1003])
def test_numba_decode_equals_the_vectorized_gather(n_samples, monkeypatch):
    from warpbio.genotype import pca

    rng = np.random.default_rng(n_samples)
    packed = pack_genotypes(rng.integers(-1, 3, (97, n_samples)).astype(np.int8))
    table = rng.standard_normal((97, 4)).astype(np.float32)
    assert pca._numba_decoder() is not None  # numba is a dependency
    fast = decode_standardized(packed, table, n_samples)
    monkeypatch.setattr(pca, "_numba_decoder", lambda: None)
    np.testing.assert_array_equal(fast, decode_standardized(packed, table, n_samples))


def test_monomorphic_variants_are_refused():
    with pytest.raises(ValueError, match="monomorphic"):
        standardization_table(np.array([0.2, 0.0, 1.0]))


def test_exact_pca_equals_dense_svd():
    dosage, _ = structured_dosage(n_samples=120, n_snps=800)
    matrix, keep = matrix_of(dosage, dtype=np.float64)
    result = exact_pca(matrix, 5)
    dense = dense_standardized(dosage[keep], frequencies(dosage[keep]))
    _, singular, vt = np.linalg.svd(dense, full_matrices=False)
    np.testing.assert_allclose(result.singular_values, singular[:5], rtol=1e-9)
    np.testing.assert_allclose(result.eigenvalues, singular[:5] ** 2 / keep.sum(), rtol=1e-9)
    for i in range(5):
        assert abs(np.dot(result.eigenvectors[:, i], vt[i])) > 1 - 1e-9
    assert result.total_variance == pytest.approx((dense**2).sum() / keep.sum())


@pytest.mark.parametrize("algorithm", ["krylov", "subspace"])
def test_randomized_matches_exact_on_structured_data(algorithm):
    dosage, _ = structured_dosage()
    matrix, _ = matrix_of(dosage)
    exact = exact_pca(matrix, 10)
    approx = randomized_pca(matrix, 10, seed=1, algorithm=algorithm)
    for i in range(2):  # population structure: 3 populations, 2 PCs
        assert abs(np.dot(exact.eigenvectors[:, i], approx.eigenvectors[:, i])) > 0.9999
    np.testing.assert_allclose(approx.eigenvalues[:2], exact.eigenvalues[:2], rtol=1e-4)
    assert approx.total_variance == pytest.approx(exact.total_variance, rel=1e-6)


def test_same_seed_same_result_and_independent_of_blocks():
    dosage, _ = structured_dosage()
    first = randomized_pca(matrix_of(dosage, 1000)[0], 6, seed=3)
    again = randomized_pca(matrix_of(dosage, 1000)[0], 6, seed=3)
    np.testing.assert_array_equal(first.eigenvectors, again.eigenvectors)
    np.testing.assert_array_equal(first.eigenvalues, again.eigenvalues)
    rechunked = randomized_pca(matrix_of(dosage, 317)[0], 6, seed=3)
    np.testing.assert_allclose(rechunked.eigenvalues, first.eigenvalues, rtol=1e-6)
    np.testing.assert_allclose(rechunked.eigenvectors, first.eigenvectors, atol=1e-5)


def test_run_pca_method_choice_and_bounds():
    dosage, _ = structured_dosage(n_samples=90, n_snps=600)
    matrix, _ = matrix_of(dosage)
    assert run_pca(matrix, 4, method="auto", exact_max_samples=100).method == "exact"
    assert run_pca(matrix, 4, method="auto", exact_max_samples=50).method == "randomized-krylov"
    with pytest.raises(ValueError, match=r"93\) exceeds the 90 samples"):
        run_pca(matrix, 10, method="randomized", oversampling=21)
    with pytest.raises(ValueError, match="k=0"):
        run_pca(matrix, 0)


def test_trace_from_genotype_counts_equals_decoded_sum():
    """CPU twin of the GPU trace: genotype-class counts x squared table entries."""
    from warpbio.genotype.kernels import sum_of_squares

    dosage, _ = structured_dosage(n_samples=61, n_snps=300)
    matrix, keep = matrix_of(dosage, dtype=np.float64)
    kept = dosage[keep]
    called = kept >= 0
    total = sum_of_squares(
        matrix.table, np.where(called, kept, 0).sum(1), (kept == 1).sum(1), called.sum(1)
    )
    decoded = sum(float((block**2).sum()) for _, block in matrix.blocks())
    assert total == pytest.approx(decoded, rel=1e-12)


def test_loadings_are_the_snp_space_singular_vectors():
    dosage, _ = structured_dosage(n_samples=90, n_snps=700)
    matrix, keep = matrix_of(dosage, dtype=np.float64)
    result = exact_pca(matrix, 3)
    loadings = matrix.times(result.eigenvectors) / result.singular_values[None, :]
    dense = dense_standardized(dosage[keep], frequencies(dosage[keep]))
    u, _, _ = np.linalg.svd(dense, full_matrices=False)
    for i in range(3):
        assert abs(np.dot(loadings[:, i], u[:, i])) > 1 - 1e-9
    np.testing.assert_allclose(np.linalg.norm(loadings, axis=0), 1, rtol=1e-9)
