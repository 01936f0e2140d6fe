"""Cross-checks with plink2 itself (Debian package plink2); skipped without it."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from warpbio.genotype.plink import decode_genotypes, read_bed
from warpbio.genotype.simulate import BaldingNicholsSpec, simulate_to_bed
from warpbio.genotype.stats import (
    allele_frequency_table,
    count_genotypes,
    sample_missing_table,
    variant_missing_table,
)

PLINK2 = shutil.which("plink2")
pytestmark = pytest.mark.skipif(PLINK2 is None, reason="plink2 is not installed")


def plink2(*args: str) -> None:
    subprocess.run([PLINK2, "--threads", "1", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def fileset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plink2")
    spec = BaldingNicholsSpec(n_samples=203, n_snps=2500, missing_rate=0.02, chunk_snps=999)
    simulate_to_bed(folder / "ours", spec, seed=11)
    return folder


def test_plink2_reads_our_bed_as_we_do(fileset):
    plink2("--bfile", str(fileset / "ours"), "--freq", "--missing", "--out", str(fileset / "p2"))
    bed = read_bed(fileset / "ours")
    counts = count_genotypes(bed)
    for ours, ext in (
        (allele_frequency_table(bed, counts), "afreq"),
        (variant_missing_table(bed, counts), "vmiss"),
        (sample_missing_table(bed, counts), "smiss"),
    ):
        theirs = pd.read_csv(fileset / f"p2.{ext}", sep="\t", dtype={"#CHROM": str})
        assert list(ours.columns) == list(theirs.columns)
        for column in ours.columns:
            if ours[column].dtype.kind == "f":
                np.testing.assert_allclose(ours[column], theirs[column], rtol=1e-5)
            else:
                assert (ours[column].astype(str) == theirs[column].astype(str)).all(), column


def test_we_read_plink2s_bed_as_plink2_wrote_it(fileset):
    # plink2 rewrites the fileset; its genotypes must decode to ours
    plink2("--bfile", str(fileset / "ours"), "--make-bed", "--out", str(fileset / "theirs"))
    ours, theirs = read_bed(fileset / "ours"), read_bed(fileset / "theirs")
    np.testing.assert_array_equal(
        decode_genotypes(theirs.packed, theirs.n_samples),
        decode_genotypes(ours.packed, ours.n_samples),
    )
    # and plink2's dosage export agrees value for value; it counts the allele
    # named in each column header (REF = A2 by default), we count A1 (ALT)
    plink2(
        *("--bfile", str(fileset / "ours"), "--export", "A", "include-alt"),
        *("--out", str(fileset / "dosage")),
    )
    raw_table = pd.read_csv(fileset / "dosage.raw", sep="\t")
    counted = [name.split("_")[-1].split("(")[0] for name in raw_table.columns[6:]]
    counts_a1 = np.array(counted) == ours.variants["a1"].to_numpy()
    assert (counts_a1 | (np.array(counted) == ours.variants["a2"].to_numpy())).all()
    raw = raw_table.iloc[:, 6:].to_numpy(dtype=float)
    dosage = decode_genotypes(ours.packed, ours.n_samples).T.astype(float)
    dosage[dosage < 0] = np.nan
    expected = np.where(counts_a1[None, :], dosage, 2 - dosage)
    np.testing.assert_array_equal(np.isnan(raw), np.isnan(expected))
    np.testing.assert_array_equal(raw[~np.isnan(raw)], expected[~np.isnan(expected)])
