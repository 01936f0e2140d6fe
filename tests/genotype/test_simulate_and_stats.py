import numpy as np

from warpbio.genotype.plink import decode_genotypes, read_bed
from warpbio.genotype.simulate import BaldingNicholsSpec, simulate_to_bed
from warpbio.genotype.stats import (
    allele_frequency_table,
    count_genotypes,
    sample_missing_table,
    variant_missing_table,
)

SPEC = BaldingNicholsSpec(n_samples=150, n_snps=3000, fst=0.1, missing_rate=0.02, chunk_snps=700)


def simulate(tmp_path, seed, name="sim"):
    simulate_to_bed(tmp_path / name, SPEC, seed=seed)
    bed = read_bed(tmp_path / name)
    return bed, decode_genotypes(bed.packed, bed.n_samples)


def test_seeded_and_structured(tmp_path):
    bed, dosage = simulate(tmp_path, seed=3)
    _, again = simulate(tmp_path, seed=3, name="again")
    _, other = simulate(tmp_path, seed=4, name="other")
    np.testing.assert_array_equal(dosage, again)
    assert not np.array_equal(dosage, other)
    assert abs((dosage < 0).mean() - SPEC.missing_rate) < 0.003
    # population structure (FID holds the population): between-population
    # frequency variance is about Fst * p(1-p)
    labels = bed.samples["fid"].to_numpy()
    masked = np.where(dosage < 0, np.nan, dosage.astype(float))
    freqs = np.stack([np.nanmean(masked[:, labels == p], axis=1) / 2 for p in np.unique(labels)])
    mean = freqs.mean(axis=0)
    fst_hat = freqs.var(axis=0).mean() / (mean * (1 - mean)).mean()
    assert 0.05 < fst_hat < 0.15


def test_stats_match_direct_counts(tmp_path):
    bed, dosage = simulate(tmp_path, seed=5)
    counts = count_genotypes(bed, block_snps=512)
    missing = dosage < 0
    called = (~missing).sum(axis=1)
    afreq = allele_frequency_table(bed, counts)
    expected = np.where(missing, 0, dosage).sum(axis=1) / (2 * called)
    np.testing.assert_allclose(afreq["ALT_FREQS"], expected)
    assert (afreq["OBS_CT"] == 2 * called).all()
    assert list(afreq.columns) == ["#CHROM", "ID", "REF", "ALT", "ALT_FREQS", "OBS_CT"]
    vmiss = variant_missing_table(bed, counts)
    np.testing.assert_array_equal(vmiss["MISSING_CT"], missing.sum(axis=1))
    smiss = sample_missing_table(bed, counts)
    np.testing.assert_array_equal(smiss["MISSING_CT"], missing.sum(axis=0))
    np.testing.assert_allclose(smiss["F_MISS"], missing.mean(axis=0))


def test_numba_counts_equal_the_decoding_path(tmp_path, monkeypatch):
    from warpbio.genotype import stats

    bed, _ = simulate(tmp_path, seed=6)  # 150 samples: the last byte is half padding
    assert stats._numba_counter() is not None  # numba is a dependency
    fast = count_genotypes(bed, block_snps=700)
    monkeypatch.setattr(stats, "_numba_counter", lambda: None)
    slow = count_genotypes(bed, block_snps=700)
    for field in ("alt_dosage_sum", "variant_called", "sample_missing"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))
