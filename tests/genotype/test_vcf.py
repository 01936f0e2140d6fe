import gzip
import shutil
import subprocess

import numpy as np
import pytest

from warpbio.genotype.plink import decode_genotypes, read_bed
from warpbio.genotype.simulate import BaldingNicholsSpec, simulate_to_bed
from warpbio.genotype.vcf import VcfFormatError, vcf_to_bed

HEADER = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tA\tB\tC\n"


def write_vcf(path, records, compress=False):
    text = HEADER + "".join("\t".join(r) + "\n" for r in records)
    if compress:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)


def record(pos, ref, alt, *calls, ident="."):
    return ["1", str(pos), ident, ref, alt, ".", "PASS", ".", "GT:DP", *[f"{c}:9" for c in calls]]


@pytest.mark.parametrize("compress", [False, True])
def test_calls_become_alt_dosages(tmp_path, compress):
    path = tmp_path / ("x.vcf.gz" if compress else "x.vcf")
    write_vcf(
        path,
        [
            record(10, "A", "G", "0/0", "0|1", "1/1", ident="rs1"),
            record(20, "AT", "A", "0/0", "0/1", "1/1"),  # indel: skipped
            record(30, "C", "T", "./.", "1|0", "0/0"),
            record(40, "G", ".", "0/0", "0/0", "0/0"),  # no ALT: skipped
        ],
        compress,
    )
    summary = vcf_to_bed(path, tmp_path / "out")
    assert summary == {"samples": 3, "snps": 2, "skipped_not_snp": 1, "skipped_no_alt": 1}
    bed = read_bed(tmp_path / "out")
    np.testing.assert_array_equal(decode_genotypes(bed.packed, 3), [[0, 1, 2], [-1, 1, 0]])
    assert bed.variants["id"].tolist() == ["rs1", "1:30"]
    assert bed.variants[["a1", "a2"]].values.tolist() == [["G", "A"], ["T", "C"]]
    assert bed.samples["iid"].tolist() == ["A", "B", "C"]


def test_multiallelic_site_is_a_clear_error_and_leaves_nothing(tmp_path):
    path = tmp_path / "x.vcf"
    write_vcf(
        path,
        [record(10, "A", "G", "0/0", "0/1", "1/1"), record(11, "A", "C,T", "0/0", "0/1", "1/2")],
    )
    with pytest.raises(VcfFormatError, match=r"x\.vcf:4: multi-allelic site 1:11 \(ALT=C,T\)"):
        vcf_to_bed(path, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [path]


def test_truncated_record_and_bcf_are_named(tmp_path):
    path = tmp_path / "x.vcf"
    write_vcf(path, [record(10, "A", "G", "0/0", "0/1")])
    with pytest.raises(VcfFormatError, match=r"x\.vcf:3: 11 columns, expected 12"):
        vcf_to_bed(path, tmp_path / "out")
    bcf = tmp_path / "y.bcf"  # BCF is read (tests/genotype/test_bcf.py); this one is cut short
    bcf.write_bytes(b"BCF\x02\x02rest")
    with pytest.raises(VcfFormatError, match=r"y\.bcf: the file ends inside the header text"):
        vcf_to_bed(bcf, tmp_path / "out")


@pytest.mark.skipif(shutil.which("plink2") is None, reason="plink2 is not installed")
def test_plink2_vcf_export_imports_back_identically(tmp_path):
    spec = BaldingNicholsSpec(n_samples=57, n_snps=700, missing_rate=0.05)
    simulate_to_bed(tmp_path / "orig", spec, seed=2)
    subprocess.run(
        ["plink2", "--bfile", str(tmp_path / "orig"), "--export", "vcf", "bgz",
         "--out", str(tmp_path / "exported")],
        check=True, capture_output=True,
    )  # fmt: skip
    vcf_to_bed(tmp_path / "exported.vcf.gz", tmp_path / "back")
    orig, back = read_bed(tmp_path / "orig"), read_bed(tmp_path / "back")
    np.testing.assert_array_equal(
        decode_genotypes(back.packed, back.n_samples), decode_genotypes(orig.packed, orig.n_samples)
    )
    assert back.variants["id"].tolist() == orig.variants["id"].tolist()
    assert back.variants["a1"].tolist() == orig.variants["a1"].tolist()
