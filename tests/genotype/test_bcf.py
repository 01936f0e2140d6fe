"""BCF import: files written by htslib (pysam) and by plink2, never by our code,
must import exactly as the VCF reader imports the same records; corrupt or
truncated BCF and non-bi-allelic data stop with a named error and no output."""

import gzip
import re
import shutil
import struct
import subprocess

import numpy as np
import pandas as pd
import pytest

from warpbio.genotype.bcf import BcfFormatError, decode_gt, gt_dosages, parse_header
from warpbio.genotype.plink import decode_genotypes, read_bed
from warpbio.genotype.simulate import BaldingNicholsSpec, simulate_to_bed
from warpbio.genotype.vcf import VcfFormatError, vcf_to_bed

PLINK2 = shutil.which("plink2")
N_SAMPLES = 300  # > 255: sample counts and GT vectors past one byte of count
LONG_ID = "rs" + "7" * 198  # 200 characters: its typed length is an int16
HEADER = """##fileformat=VCFv4.2
##FILTER=<ID=q10,Description="Quality below 10">
##FILTER=<ID=s50,Description="Fewer than 50% of samples, have data">
##contig=<ID=1,length=100000>
##contig=<ID=X,length=100000>
##INFO=<ID=DP,Number=1,Type=Integer,Description="Total depth">
##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency">
##INFO=<ID=DB,Number=0,Type=Flag,Description="dbSNP membership">
##INFO=<ID=NOTE,Number=1,Type=String,Description="A long free-text note">
##INFO=<ID=ARR,Number=.,Type=Integer,Description="Many values (overflow count)">
##ALT=<ID=DEL,Description="Deletion">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth, up to int32">
##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">
##FORMAT=<ID=GL,Number=G,Type=Float,Description="Genotype likelihoods">
##FORMAT=<ID=FT,Number=1,Type=String,Description="Sample filter">
##FORMAT=<ID=LONG,Number=.,Type=Integer,Description="16 values per sample">
"""
DIPLOID = ["0/0", "0/1", "1/0", "1/1", "0|0", "0|1", "1|0", "1|1", "./.", ".|.", "./1", "0|."]
HAPLOID = ["0", "1", "."]


def pysam_module():
    return pytest.importorskip("pysam")


def vcf_text(records, samples):
    columns = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT"]
    lines = [HEADER + "\t".join(columns + samples)]
    lines += ["\t".join(record) for record in records]
    return "\n".join(lines) + "\n"


def write_bcf(vcf_path, bcf_path):
    """The VCF rewritten as BCF by htslib (pysam): an encoder independent of ours."""
    pysam = pysam_module()
    with (
        pysam.VariantFile(str(vcf_path)) as source,
        pysam.VariantFile(str(bcf_path), "wb", header=source.header) as sink,
    ):
        for record in source:
            sink.write(record)


def sample_fields(calls, rng, many_values=False):
    """GT plus FORMAT fields of every width after it (the reader must step over them)."""
    depth = rng.integers(0, 70_000 if many_values else 100, size=len(calls))
    fields = []
    for call, dp in zip(calls, depth, strict=True):
        long = ",".join(str(v) for v in rng.integers(-5, 300, size=16))
        fields.append(f"{call}:{dp}:{dp // 2},{dp - dp // 2}:-0.1,-1.5,-9:PASS:{long}")
    return fields


def record(chrom, pos, ref, alt, calls, rng, ident=".", filt="PASS", info=".", **kw):
    return [chrom, str(pos), ident, ref, alt, "30.5", filt, info, "GT:DP:AD:GL:FT:LONG",
            *sample_fields(calls, rng, **kw)]  # fmt: skip


def edge_case_records(samples, rng):
    """Fixed cases first (missing, haploid next to diploid, skipped sites, long typed
    values), then random calls; chrX mixes haploid and diploid samples."""
    n = len(samples)
    note = "NOTE=" + "x" * 300
    array = "ARR=" + ",".join(str(v) for v in range(1, 41))
    fixed = [
        record("1", 100, "A", "G", ["0/0", "0|1", "1/1"] * (n // 3), rng, ident="rs1",
               info=f"DP=5;AF=0.5;DB;{note};{array}"),
        record("1", 150, "AT", "A", ["0/1"] * n, rng),  # indel: skipped
        record("1", 160, "C", "<DEL>", ["0/1"] * n, rng),  # symbolic: skipped
        record("1", 170, "G", ".", ["0/0"] * n, rng),  # no ALT: skipped
        record("1", 180, "G", "*", ["0/1"] * n, rng),  # spanning deletion: skipped
        record("1", 200, "C", "T", ["./.", ".|.", "./1", "0|.", "1/0", "."] * (n // 6), rng,
               ident=LONG_ID, filt="q10;s50", many_values=True),
        record("X", 300, "T", "C", ["1", "0", ".", "0/1", "1/1", "./."] * (n // 6), rng),
        record("X", 310, "G", "A", ["1"] * n, rng),  # all haploid: a 1-wide GT vector
    ]  # fmt: skip
    random = []
    for i in range(120):
        chrom = "X" if i % 4 == 3 else "1"
        pool = HAPLOID + DIPLOID if chrom == "X" else DIPLOID
        calls = [pool[k] for k in rng.integers(0, len(pool), size=n)]
        ref, alt = rng.choice(list("ACGT"), size=2, replace=False)
        random.append(record(chrom, 1000 + 10 * i, ref, alt, calls, rng, info=f"DP={i}"))
    return fixed + random


def import_both(tmp_path, vcf_path, bcf_path, block=4096):
    from_vcf = vcf_to_bed(vcf_path, tmp_path / "from_vcf", block=block)
    from_bcf = vcf_to_bed(bcf_path, tmp_path / "from_bcf", block=block)
    return from_vcf, from_bcf


def assert_same_fileset(tmp_path, first="from_vcf", second="from_bcf"):
    for extension in (".bed", ".bim", ".fam"):
        one = (tmp_path / f"{first}{extension}").read_bytes()
        two = (tmp_path / f"{second}{extension}").read_bytes()
        assert one == two, extension


def nothing_written(folder):
    return not folder.exists() or not any(folder.rglob("*"))


@pytest.fixture(scope="module")
def cohort_files(tmp_path_factory):
    """The edge-case VCF and htslib's BCF of it (BGZF and uncompressed)."""
    folder = tmp_path_factory.mktemp("bcf")
    rng = np.random.default_rng(4)
    samples = [f"S{i}" for i in range(N_SAMPLES)]
    vcf = folder / "cohort.vcf"
    vcf.write_text(vcf_text(edge_case_records(samples, rng), samples))
    write_bcf(vcf, folder / "cohort.bcf")
    # uncompressed BCF (bcftools -Ou) is the same stream without BGZF
    (folder / "cohort.u.bcf").write_bytes(gzip.decompress((folder / "cohort.bcf").read_bytes()))
    return folder


@pytest.mark.parametrize("name", ["cohort.bcf", "cohort.u.bcf"])
def test_htslib_bcf_imports_as_the_vcf_does(tmp_path, cohort_files, name):
    from_vcf, from_bcf = import_both(tmp_path, cohort_files / "cohort.vcf", cohort_files / name)
    assert from_bcf == from_vcf == {
        "samples": N_SAMPLES, "snps": 124, "skipped_not_snp": 2, "skipped_no_alt": 2,
    }  # fmt: skip
    assert_same_fileset(tmp_path)
    bed = read_bed(tmp_path / "from_bcf")
    dosage = decode_genotypes(bed.packed, bed.n_samples)
    np.testing.assert_array_equal(dosage[0, :6], [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(dosage[1, :6], [-1, -1, -1, -1, 1, -1])  # any "." is missing
    np.testing.assert_array_equal(dosage[2, :6], [2, 0, -1, 1, 2, -1])  # haploid 1 counts 2
    np.testing.assert_array_equal(dosage[3], np.full(N_SAMPLES, 2))
    assert bed.variants["id"].tolist()[:4] == ["rs1", LONG_ID, "X:300", "X:310"]
    assert bed.variants[["chrom", "pos", "a1", "a2"]].values.tolist()[0] == ["1", 100, "G", "A"]
    assert bed.samples["iid"].tolist() == [f"S{i}" for i in range(N_SAMPLES)]


def test_small_blocks_give_the_same_bed(tmp_path, cohort_files):
    import_both(tmp_path, cohort_files / "cohort.vcf", cohort_files / "cohort.bcf", block=7)
    vcf_to_bed(cohort_files / "cohort.bcf", tmp_path / "one_block")
    assert_same_fileset(tmp_path)
    assert_same_fileset(tmp_path, "from_bcf", "one_block")


def bcf_parts(path):
    """(magic, header text, records) of a BCF, decompressed by the gzip module."""
    data = gzip.decompress(path.read_bytes())
    (length,) = struct.unpack_from("<I", data, 5)
    return data[:5], data[9 : 9 + length].rstrip(b"\0").decode(), data[9 + length :]


def with_header(magic, text, records):
    encoded = text.encode() + b"\0"
    return magic + struct.pack("<I", len(encoded)) + encoded + records


def test_header_without_idx_uses_the_implicit_dictionary(tmp_path, cohort_files):
    magic, text, records = bcf_parts(cohort_files / "cohort.bcf")
    assert ",IDX=" in text  # htslib writes explicit indices; drop them
    bare = tmp_path / "bare.bcf.gz"  # plain gzip, not BGZF: also a valid stream
    bare.write_bytes(gzip.compress(with_header(magic, re.sub(r",IDX=\d+", "", text), records)))
    vcf_to_bed(cohort_files / "cohort.vcf", tmp_path / "from_vcf")
    vcf_to_bed(bare, tmp_path / "from_bcf")
    assert_same_fileset(tmp_path)


def test_explicit_idx_survives_a_removed_header_line(tmp_path, cohort_files):
    # a tool that drops a header line keeps the others' IDX (the records are not
    # recoded): GT's key must come from IDX, not from its position in the header
    magic, text, records = bcf_parts(cohort_files / "cohort.bcf")
    lines = [line for line in text.splitlines() if not line.startswith("##INFO=<ID=NOTE")]
    assert len(lines) == len(text.splitlines()) - 1
    gap = tmp_path / "gap.bcf"
    gap.write_bytes(with_header(magic, "\n".join(lines) + "\n", records))
    vcf_to_bed(cohort_files / "cohort.vcf", tmp_path / "from_vcf")
    vcf_to_bed(gap, tmp_path / "from_bcf")
    assert_same_fileset(tmp_path)


def test_parse_header_follows_the_spec_dictionary():
    text = (
        "##fileformat=VCFv4.3\n"
        '##INFO=<ID=ASP,Number=0,Type=Flag,Description="X, with a comma">\n'
        '##INFO=<ID=RSPOS,Number=1,Type=Integer,Description="Y">\n'
        '##FILTER=<ID=PASS,Description="All filters passed">\n'  # PASS stays 0
        '##INFO=<ID=dbSNPBuildID,Number=1,Type=Integer,Description="Z">\n'
        "##contig=<ID=20,length=62435964>\n##contig=<ID=21>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="IDX=9 is not a field">\n'
        '##FORMAT=<ID=ASP,Number=1,Type=Integer,Description="shares the INFO entry">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ta\tb\n"
    )
    header = parse_header(text)  # the spec's example: ASP=1, RSPOS=2, dbSNPBuildID=3
    assert header.dictionary == {0: "PASS", 1: "ASP", 2: "RSPOS", 3: "dbSNPBuildID", 4: "GT"}
    assert header.contigs == {0: "20", 1: "21"}
    assert header.samples == ["a", "b"] and header.key("GT") == 4
    explicit = parse_header(text.replace('"Z">', '"Z",IDX=7>').replace('"Y">', '"Y",IDX=5>'))
    assert explicit.dictionary[5] == "RSPOS" and explicit.dictionary[7] == "dbSNPBuildID"


@pytest.mark.parametrize("kind, end", [(1, -127), (2, -32767), (3, -(2**31) + 1)])
def test_gt_decoding_at_every_integer_width(kind, end):
    # rows: 0/0 0|1 1/1 ./. .|1 haploid 0, haploid 1, haploid ., missing sentinel
    dtype = {1: np.int8, 2: np.int16, 3: np.int32}[kind]
    missing = end - 1
    values = np.array(
        [[2, 2], [2, 5], [4, 4], [0, 0], [1, 5], [2, end], [4, end], [0, end], [missing, 4]],
        dtype=dtype,
    )
    dosage, bad = gt_dosages(values, kind)
    np.testing.assert_array_equal(dosage, [0, 1, 2, -1, -1, 0, 2, -1, -1])
    assert not bad.any()
    _, bad = gt_dosages(np.array([[2, 6], [2, 2], [end, 2], [-3, 2]], dtype=dtype), kind)
    np.testing.assert_array_equal(bad, [True, False, True, True])  # allele 2, gap, reserved


@pytest.mark.parametrize("ploidy", [1, 2])
def test_int8_lookup_decodes_as_the_general_path(ploidy):
    # every int8 vector, in a shuffled order, through the table and the general path
    pairs = np.stack(np.meshgrid(*[np.arange(-128, 128)] * ploidy), axis=-1).reshape(-1, ploidy)
    values = np.ascontiguousarray(np.random.default_rng(1).permutation(pairs).astype(np.int8))
    fast, fast_bad = decode_gt(values, 1)
    general, general_bad = gt_dosages(values, 1)
    np.testing.assert_array_equal(fast_bad, general_bad)
    np.testing.assert_array_equal(fast, general)
    assert 0 < general_bad.sum() < len(values)
    assert set(np.unique(general)) == ({-1, 0, 2} if ploidy == 1 else {-1, 0, 1, 2})


def write_pair(tmp_path, records, samples=("A", "B", "C")):
    vcf = tmp_path / "x.vcf"
    vcf.write_text(vcf_text(records, list(samples)))
    write_bcf(vcf, tmp_path / "y.bcf")
    return vcf, tmp_path / "y.bcf"


def test_multiallelic_site_is_a_clear_error_and_leaves_nothing(tmp_path):
    rng = np.random.default_rng(0)
    _, bcf = write_pair(
        tmp_path,
        [record("1", 10, "A", "G", ["0/0", "0/1", "1/1"], rng),
         record("1", 11, "A", "C,T", ["0/0", "0/1", "1/2"], rng)],
    )  # fmt: skip
    with pytest.raises(VcfFormatError, match=r"y\.bcf: record 2: multi-allelic site 1:11 "
                       r"\(ALT=C,T\); split it with 'bcftools norm -m-'"):  # fmt: skip
        vcf_to_bed(bcf, tmp_path / "out" / "x")
    assert nothing_written(tmp_path / "out")


@pytest.mark.parametrize("call", ["0/0/1", "0/2"])
def test_a_call_that_is_not_biallelic_stops_both_readers(tmp_path, call):
    rng = np.random.default_rng(0)
    vcf, bcf = write_pair(tmp_path, [record("1", 10, "A", "G", ["0/0", "0/1", call], rng)])
    with pytest.raises(VcfFormatError, match=f"genotype '{call}' at 1:10 is not a bi-allelic"):
        vcf_to_bed(vcf, tmp_path / "out" / "v")
    with pytest.raises(BcfFormatError, match=f"record 1: genotype '{call}' of sample C at 1:10"):
        vcf_to_bed(bcf, tmp_path / "out" / "b")
    assert nothing_written(tmp_path / "out")


def test_sites_without_snps_are_an_error(tmp_path):
    rng = np.random.default_rng(0)
    _, bcf = write_pair(tmp_path, [record("1", 10, "AC", "G", ["0/0", "0/1", "1/1"], rng)])
    with pytest.raises(VcfFormatError, match=r"no bi-allelic SNP records.*'not_snp': 1"):
        vcf_to_bed(bcf, tmp_path / "out" / "x")
    assert nothing_written(tmp_path / "out")


def test_a_snp_without_gt_is_an_error(tmp_path):
    rng = np.random.default_rng(0)
    rows = [record("1", 10, "A", "G", ["0/0", "0/1", "1/1"], rng)]
    rows[0][8:] = ["DP", "3", "4", "5"]
    _, bcf = write_pair(tmp_path, rows)
    with pytest.raises(BcfFormatError, match=r"y\.bcf: record 1: no GT field at 1:10"):
        vcf_to_bed(bcf, tmp_path / "out" / "x")
    assert nothing_written(tmp_path / "out")


def corrupted(cohort_files, tmp_path):
    """name -> (bytes, expected message) of broken copies of the cohort BCF."""
    bgzf = (cohort_files / "cohort.bcf").read_bytes()
    plain = (cohort_files / "cohort.u.bcf").read_bytes()
    (l_text,) = struct.unpack_from("<I", plain, 5)
    first = 9 + l_text
    second = first + 8 + sum(struct.unpack_from("<II", plain, first))
    longer_site = bytearray(plain)
    struct.pack_into("<I", longer_site, second, struct.unpack_from("<I", plain, second)[0] + 3)
    flipped = bytearray(bgzf)
    flipped[len(bgzf) // 2] ^= 0xFF
    bad_type = bytearray(plain)
    bad_type[first + 8 + 24] = 0x1C  # the ID's descriptor: type 12 does not exist
    future = bytearray(plain)
    future[4] = 9
    return {
        "cut_inside_a_block.bcf": (bgzf[: len(bgzf) // 2], "no BGZF end-of-file block"),
        "flipped_byte.bcf": (bytes(flipped), "the file is truncated or corrupt"),
        "no_eof_block.bcf": (bgzf[:-28], "no BGZF end-of-file block; the file is truncated"),
        "cut_inside_a_record.bcf": (
            plain[: second + 40],
            r"record 2: the file ends inside a record",
        ),
        "cut_inside_the_header.bcf": (plain[:100], "the file ends inside the header text"),
        "wrong_lengths.bcf": (bytes(longer_site), r"record 2: .*bytes.*corrupt"),
        "unknown_type.bcf": (bytes(bad_type), r"record 1: unknown value type 12"),
        "bcf_2_9.bcf": (bytes(future), r"BCF version 2\.9 is not supported"),
    }


def test_truncated_and_corrupt_bcf_are_named_and_leave_nothing(tmp_path, cohort_files):
    for name, (data, message) in corrupted(cohort_files, tmp_path).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(BcfFormatError, match=re.escape(name) + ".*" + message):
            vcf_to_bed(path, tmp_path / "out" / name)
        assert nothing_written(tmp_path / "out"), name


def plink2(*args):
    subprocess.run([PLINK2, "--threads", "1", *args], check=True, capture_output=True)


@pytest.mark.skipif(PLINK2 is None, reason="plink2 is not installed")
def test_plink2_bcf_export_imports_as_its_vcf_export(tmp_path):
    spec = BaldingNicholsSpec(n_samples=N_SAMPLES, n_snps=1500, missing_rate=0.05)
    simulate_to_bed(tmp_path / "orig", spec, seed=3)
    # the last chromosome becomes X with males in the .fam: plink2 writes haploid calls
    bim = pd.read_csv(tmp_path / "orig.bim", sep="\t", header=None, dtype=str)
    bim.loc[bim[0] == bim[0].iloc[-1], 0] = "X"
    bim.to_csv(tmp_path / "orig.bim", sep="\t", header=False, index=False)
    fam = pd.read_csv(tmp_path / "orig.fam", sep=" ", header=None)
    fam[4] = 1 + np.arange(len(fam)) % 2
    fam.to_csv(tmp_path / "orig.fam", sep=" ", header=False, index=False)
    source = ("--bfile", str(tmp_path / "orig"))
    plink2(*source, "--export", "bcf", "--out", str(tmp_path / "exported"))
    plink2(*source, "--export", "vcf", "bgz", "--out", str(tmp_path / "exported"))
    with gzip.open(tmp_path / "exported.bcf") as handle:
        assert handle.read(5) == b"BCF\x02\x02"
    with gzip.open(tmp_path / "exported.vcf.gz", "rt") as handle:
        x_calls = {c for line in handle if line.startswith("X\t") for c in line.split()[9:]}
    assert {"0", "1"} <= x_calls  # haploid calls, next to diploid ones
    from_vcf, from_bcf = import_both(
        tmp_path, tmp_path / "exported.vcf.gz", tmp_path / "exported.bcf"
    )
    assert from_bcf == from_vcf and from_bcf["snps"] == spec.n_snps
    assert_same_fileset(tmp_path)
    orig, back = read_bed(tmp_path / "orig"), read_bed(tmp_path / "from_bcf")
    autosomes = (orig.variants["chrom"] != "X").to_numpy()
    np.testing.assert_array_equal(
        decode_genotypes(back.packed, back.n_samples)[autosomes],
        decode_genotypes(orig.packed, orig.n_samples)[autosomes],
    )
    assert back.variants["id"].tolist() == orig.variants["id"].tolist()
