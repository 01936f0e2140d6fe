import numpy as np
import pytest

from warpbio.genotype.plink import decode_genotypes, read_bed, write_bed
from warpbio.genotype.qc import QcThresholds, decide, write_filtered

from .test_plink import tables


@pytest.fixture
def fileset(tmp_path):
    rng = np.random.default_rng(4)
    n_snps, n_samples = 200, 40
    freq = rng.uniform(0.05, 0.5, n_snps)
    dosage = (rng.random((n_snps, n_samples)) < freq[:, None]).astype(np.int8)
    dosage += rng.random((n_snps, n_samples)) < freq[:, None]
    dosage[rng.random(dosage.shape) < 0.01] = -1
    dosage[0] = 0  # monomorphic
    dosage[1, :] = 0
    dosage[1, 0] = 1  # MAF 1/80 < 0.05
    dosage[2, :10] = -1  # 25% missing
    dosage[:, 3][rng.random(n_snps) < 0.5] = -1  # sample 3: ~50% missing
    variants, samples = tables(n_snps, n_samples)
    write_bed(tmp_path / "raw", dosage, variants, samples)
    return tmp_path, dosage


def test_filters_in_plink2_order(fileset):
    folder, dosage = fileset
    thresholds = QcThresholds(min_maf=0.05, max_variant_missing=0.1, max_sample_missing=0.2)
    decision = decide(read_bed(folder / "raw"), thresholds)
    assert decision.keep_samples.tolist() == [i != 3 for i in range(40)]
    kept = dosage[:, decision.keep_samples]
    called = (kept >= 0).sum(1)
    freq = np.where(kept >= 0, kept, 0).sum(1) / (2 * called)
    maf = np.minimum(freq, 1 - freq)
    expected = (1 - called / kept.shape[1] <= 0.1) & (maf >= 0.05) & (maf > 0)
    np.testing.assert_array_equal(decision.keep_variants, expected)
    assert not decision.keep_variants[:3].any()
    assert decision.removed["samples_missing"] == 1
    assert decision.removed["variants_monomorphic"] >= 1


def test_filtered_fileset_holds_exactly_the_kept_genotypes(fileset):
    folder, dosage = fileset
    raw = read_bed(folder / "raw")
    decision = decide(raw, QcThresholds(max_sample_missing=0.2))
    write_filtered(raw, decision, str(folder / "qc"), block_snps=37)
    qc = read_bed(folder / "qc")
    expected = dosage[decision.keep_variants][:, decision.keep_samples]
    np.testing.assert_array_equal(decode_genotypes(qc.packed, qc.n_samples), expected)
    assert qc.samples["iid"].tolist() == [f"i{i}" for i in range(40) if i != 3]


def test_nothing_left_is_an_error(fileset):
    folder, _ = fileset
    with pytest.raises(ValueError, match=r"relax genotype\.qc"):
        decide(read_bed(folder / "raw"), QcThresholds(min_maf=0.5, max_variant_missing=0.0))


def test_ld_pruning_drops_one_of_each_correlated_pair(tmp_path):
    rng = np.random.default_rng(8)
    n_samples = 300
    independent = (rng.random((40, n_samples)) < 0.3).astype(np.int8) + (
        rng.random((40, n_samples)) < 0.3
    )
    dosage = np.repeat(independent, 2, axis=0)  # each SNP twice, side by side: r^2 = 1
    dosage[1::2][:, :3] = 0  # near-copies
    variants, samples = tables(80, n_samples)
    write_bed(tmp_path / "ld", dosage, variants, samples)
    prune = {"enabled": True, "window": 10, "step": 3, "r2": 0.5}
    decision = decide(read_bed(tmp_path / "ld"), QcThresholds(min_maf=0.0, ld_prune=prune))
    kept = decision.keep_variants.reshape(40, 2)
    assert (kept.sum(1) == 1).all()  # exactly one of each pair
    assert decision.removed["variants_ld"] == 40
