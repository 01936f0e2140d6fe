import numpy as np
import pandas as pd
import pytest

from warpbio.genotype.plink import (
    BED_MAGIC,
    PlinkFormatError,
    decode_genotypes,
    pack_genotypes,
    read_bed,
    write_bed,
)


def random_dosage(rng, n_snps, n_samples, missing=0.1):
    dosage = rng.integers(0, 3, size=(n_snps, n_samples)).astype(np.int8)
    dosage[rng.random(dosage.shape) < missing] = -1
    return dosage


def tables(n_snps, n_samples):
    variants = pd.DataFrame(
        {
            "chrom": "1",
            "id": [f"rs{i}" for i in range(n_snps)],
            "cm": 0,
            "pos": np.arange(n_snps) + 100,
            "a1": "A",
            "a2": "G",
        }
    )
    samples = pd.DataFrame(
        {
            "fid": [f"f{i}" for i in range(n_samples)],
            "iid": [f"i{i}" for i in range(n_samples)],
            "father": 0,
            "mother": 0,
            "sex": 0,
            "phenotype": -9,
        }
    )
    return variants, samples


def test_codes_follow_the_plink_spec():
    # samples 0..3 = hom A1, missing, het, hom A2 -> codes 00, 01, 10, 11 from the low bits
    packed = pack_genotypes(np.array([[2, -1, 1, 0]], dtype=np.int8))
    assert packed.tolist() == [[0b11_10_01_00]]
    # a fifth sample starts a new byte; padding bits are zero
    packed = pack_genotypes(np.array([[2, -1, 1, 0, 0]], dtype=np.int8))
    assert packed.tolist() == [[0b11100100, 0b00000011]]


@pytest.mark.parametrize("n_samples", [1, 3, 4, 5, 37])
def test_pack_decode_round_trip(n_samples):
    rng = np.random.default_rng(n_samples)
    dosage = random_dosage(rng, 11, n_samples)
    packed = pack_genotypes(dosage)
    assert packed.shape == (11, (n_samples + 3) // 4) and packed.dtype == np.uint8
    np.testing.assert_array_equal(decode_genotypes(packed, n_samples), dosage)


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    dosage = random_dosage(rng, 50, 21)
    variants, samples = tables(50, 21)
    prefix = tmp_path / "chr1.qc"  # a dot in the prefix must survive
    write_bed(prefix, dosage, variants, samples)
    raw = (tmp_path / "chr1.qc.bed").read_bytes()
    assert raw[:3] == BED_MAGIC and len(raw) == 3 + 50 * 6
    bed = read_bed(prefix)
    assert (bed.n_snps, bed.n_samples) == (50, 21)
    np.testing.assert_array_equal(decode_genotypes(bed.packed, 21), dosage)
    assert bed.variants["id"].tolist() == variants["id"].tolist()


def test_bad_files_are_named(tmp_path):
    variants, samples = tables(4, 8)
    write_bed(tmp_path / "x", np.zeros((4, 8), dtype=np.int8), variants, samples)
    bed = tmp_path / "x.bed"
    data = bed.read_bytes()
    bed.write_bytes(data[:-1])
    with pytest.raises(PlinkFormatError, match=r"x\.bed: .* expected 11"):
        read_bed(tmp_path / "x")
    bed.write_bytes(bytes([0x6C, 0x1B, 0x00]) + data[3:])
    with pytest.raises(PlinkFormatError, match="sample-major"):
        read_bed(tmp_path / "x")
    bed.write_bytes(b"hello" + data[5:])
    with pytest.raises(PlinkFormatError, match=r"not a PLINK \.bed"):
        read_bed(tmp_path / "x")
    (tmp_path / "x.fam").unlink()
    with pytest.raises(PlinkFormatError, match=r"x\.fam: missing"):
        read_bed(tmp_path / "x")
