"""BCF2 (v2.1, v2.2) reader in Python + NumPy: the GT calls of bi-allelic SNPs.

Layout (VCF v4.3 spec, section 6): BGZF (or uncompressed) stream of the magic
``BCF\\x02\\x0{1,2}``, a uint32 header length, the VCF header text, then records of
``l_shared, l_indiv`` (uint32) and those many bytes: CHROM (contig index), POS
(0-based), rlen, QUAL, ``n_allele << 16 | n_info``, ``n_fmt << 24 | n_sample``,
then ID and the alleles as typed strings, FILTER, INFO key/value pairs, and per
FORMAT field a typed key, one type descriptor and ``n_sample`` value vectors.

A typed value starts with a descriptor byte ``count << 4 | type`` (types 1, 2, 3:
int8/16/32, 5: float32, 7: char); count 15 means a typed integer with the real
count follows. Integers reserve the lowest values of their width: ``0x80..`` is
missing, ``0x80..01`` the end of a vector (a shorter vector than its field's
width, e.g. a haploid call among diploid ones). A GT allele is stored as
``(allele + 1) << 1 | phased``, so 0 or 1 is a missing allele.

:func:`bcf_records` yields what :func:`warpbio.genotype.vcf.vcf_to_bed` writes:
the same sites kept and skipped, the same dosages, as the VCF reader gives for the
same data. GT vectors are decoded per record with NumPy, never per sample.
"""

from __future__ import annotations

import functools
import gzip
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from warpbio.genotype.plink import MISSING
from warpbio.genotype.vcf import Variant, VcfFormatError, multiallelic_error, site_kind

MAGIC = b"BCF\x02"
MINOR_VERSIONS = (1, 2)
INT8, INT16, INT32, FLOAT, CHAR = 1, 2, 3, 5, 7
DTYPES = {
    INT8: np.dtype("<i1"),
    INT16: np.dtype("<i2"),
    INT32: np.dtype("<i4"),
    FLOAT: np.dtype("<f4"),
    CHAR: np.dtype("u1"),
}
INT_FORMATS = {INT8: "<b", INT16: "<h", INT32: "<i"}
INT_MISSING = {INT8: -(2**7), INT16: -(2**15), INT32: -(2**31)}
INT_END_OF_VECTOR = {kind: value + 1 for kind, value in INT_MISSING.items()}
# The fixed part of a record: CHROM, POS, rlen, QUAL, n_allele_info, n_fmt_sample
SITE = struct.Struct("<iiifII")
# The empty BGZF block that ends every BGZF file (SAM spec, section 4.1.2)
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
HEADER_FIELD = re.compile(r'\s*([^=,<>]+)=("(?:[^"\\]|\\.)*"|[^,>]*)\s*(?:,|>?$)')
CALLABLE_ALLELES = 2  # REF (0) and one ALT (1)


class BcfFormatError(VcfFormatError):
    """A BCF that cannot be imported; the message names file, record and problem."""


class _CorruptError(Exception):
    """A record's bytes do not parse; re-raised as BcfFormatError with context."""


@dataclass(frozen=True)
class BcfHeader:
    samples: list[str]
    contigs: dict[int, str]  # CHROM index -> name
    dictionary: dict[int, str]  # FILTER/INFO/FORMAT key index -> ID

    def key(self, name: str) -> int | None:
        return next((index for index, value in self.dictionary.items() if value == name), None)


def _header_fields(line: str) -> dict[str, str]:
    """``##TAG=<ID=x,Description="a, b",IDX=3>`` -> {"ID": "x", ..., "IDX": "3"}."""
    body = line.split("=", 1)[1].strip()
    if not (body.startswith("<") and body.endswith(">")):
        return {}
    return {key.strip(): value for key, value in HEADER_FIELD.findall(body[1:])}


def _add_entry(table: dict[int, str], seen: dict[str, int], name: str, idx: str | None) -> None:
    """The spec's dictionary: an explicit IDX, else the next free index; an ID that
    is already there (INFO and FORMAT DP, a second PASS) keeps its first index."""
    if name in seen:
        return
    index = int(idx) if idx is not None else max(table, default=-1) + 1
    table[index] = name
    seen[name] = index


def parse_header(text: str) -> BcfHeader:
    """Contigs, the FILTER/INFO/FORMAT dictionary (PASS is always 0) and samples."""
    dictionary, contigs = {0: "PASS"}, {}
    seen_keys, seen_contigs = {"PASS": 0}, {}
    samples = None
    for line in text.splitlines():
        if line.startswith("#CHROM"):
            columns = line.split("\t")
            samples = columns[9:] if len(columns) > 9 and columns[8] == "FORMAT" else []
            break
        tag = line[2:].split("=", 1)[0]
        if tag not in ("FILTER", "INFO", "FORMAT", "contig"):
            continue
        fields = _header_fields(line)
        if "ID" not in fields:
            raise ValueError(f"header line without ID: {line[:80]}")
        if tag == "contig":
            _add_entry(contigs, seen_contigs, fields["ID"], fields.get("IDX"))
        else:
            _add_entry(dictionary, seen_keys, fields["ID"], fields.get("IDX"))
    if samples is None:
        raise ValueError("no '#CHROM' line in the header text")
    return BcfHeader(samples, contigs, dictionary)


def _read_exactly(handle: BinaryIO, size: int, what: str) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise _CorruptError(f"the file ends inside {what} ({len(data)} of {size} bytes)")
    return data


def _descriptor(buffer: bytes, offset: int) -> tuple[int, int, int]:
    """(count, type, offset after it) of the typed value at ``offset``."""
    if offset >= len(buffer):
        raise _CorruptError("a typed value runs past the end of its record")
    byte = buffer[offset]
    count, kind = byte >> 4, byte & 0x0F
    offset += 1
    if kind not in DTYPES and not (kind == 0 and count == 0):
        raise _CorruptError(f"unknown value type {kind} (descriptor byte 0x{byte:02x})")
    if count == 15:
        count, offset = _typed_int(buffer, offset)
        if count < 0:
            raise _CorruptError(f"negative vector length {count}")
    return count, kind, offset


def _typed_int(buffer: bytes, offset: int) -> tuple[int, int]:
    count, kind, offset = _descriptor(buffer, offset)
    if kind not in INT_FORMATS or count != 1:
        raise _CorruptError(f"expected one typed integer, found {count} of type {kind}")
    end = offset + DTYPES[kind].itemsize
    if end > len(buffer):
        raise _CorruptError("a typed integer runs past the end of its record")
    (value,) = struct.unpack_from(INT_FORMATS[kind], buffer, offset)
    return value, end


def _skip_typed(buffer: bytes, offset: int) -> int:
    count, kind, offset = _descriptor(buffer, offset)
    return offset + count * (DTYPES[kind].itemsize if kind else 0)


def _typed_string(buffer: bytes, offset: int) -> tuple[str, int]:
    count, kind, offset = _descriptor(buffer, offset)
    if kind not in (CHAR, 0):
        raise _CorruptError(f"expected a string, found type {kind}")
    text = buffer[offset : offset + count]
    if len(text) != count:
        raise _CorruptError("a string runs past the end of its record")
    return text.rstrip(b"\0").decode("ascii", errors="replace"), offset + count


def _render_gt(values: np.ndarray, kind: int) -> str:
    """One sample's GT vector as VCF text, for error messages."""
    parts = []
    for position, value in enumerate(int(v) for v in values):
        if value == INT_END_OF_VECTOR[kind]:
            break
        allele = "." if value == INT_MISSING[kind] or value >> 1 == 0 else str((value >> 1) - 1)
        separator = "" if position == 0 else "|" if value & 1 else "/"
        parts.append(separator + allele)
    return "".join(parts) or "."


def gt_dosages(values: np.ndarray, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_samples, ploidy) GT integers -> (ALT dosages int8 with -1 missing, bad-sample
    mask). Like the VCF reader: a diploid call counts ALT alleles, a haploid ALT
    counts 2, a call with any missing allele is missing; a third allele, an allele
    index above 1 or a reserved negative value is not a bi-allelic call (bad)."""
    n_samples = values.shape[0]
    if values.shape[1] == 0:  # GT present but zero-length: every call missing
        return np.full(n_samples, MISSING, dtype=np.int8), np.zeros(n_samples, dtype=bool)
    codes = values.astype(np.int32)
    ended = codes == INT_END_OF_VECTOR[kind]
    missing = (codes == INT_MISSING[kind]) | ((codes >= 0) & (codes >> 1 == 0))
    alleles = (codes >> 1) - 1
    bad = ((codes < 0) & ~ended & ~missing) | (~ended & ~missing & (alleles > 1))
    bad = bad.any(axis=1)
    # end-of-vector may only be followed by end-of-vector; no allele after the second
    bad |= (ended[:, :-1] & ~ended[:, 1:]).any(axis=1)
    bad |= (~ended[:, 2:]).any(axis=1)
    first_absent, first_missing = ended[:, 0], missing[:, 0]
    if codes.shape[1] >= 2:
        haploid, second_missing = ended[:, 1], missing[:, 1]
        second = np.where(haploid | second_missing, 0, alleles[:, 1])
    else:
        haploid, second_missing = np.ones(n_samples, dtype=bool), np.zeros(n_samples, bool)
        second = np.zeros(n_samples, dtype=np.int32)
    first = np.where(first_absent | first_missing, 0, alleles[:, 0])
    dosage = np.where(haploid, 2 * first, first + second)
    unknown = first_absent | first_missing | (~haploid & second_missing)
    return np.where(unknown | bad, MISSING, dosage).astype(np.int8), bad


@functools.cache
def _int8_table(ploidy: int) -> tuple[np.ndarray, np.ndarray]:
    """Dosage and bad flag of every int8 GT vector of 1 or 2 bytes (256 or 65,536),
    from gt_dosages itself: one lookup per sample decodes the common case."""
    every = np.arange(256**ploidy, dtype=np.uint8 if ploidy == 1 else "<u2")
    return gt_dosages(every.view(np.int8).reshape(-1, ploidy), INT8)


def decode_gt(values: np.ndarray, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """gt_dosages, through a lookup table for int8 haploid or diploid vectors."""
    if kind != INT8 or values.shape[1] not in (1, 2) or not values.flags.c_contiguous:
        return gt_dosages(values, kind)
    ploidy = values.shape[1]
    # a sample's bytes read as one little-endian integer: first allele in the low byte
    index = values.view(np.uint8 if ploidy == 1 else "<u2")[:, 0]
    dosage, bad = _int8_table(ploidy)
    return dosage[index], bad[index]


class _BcfStream:
    """One opened BCF: the header on construction, then records() of its SNPs."""

    def __init__(self, path: Path, handle: BinaryIO):
        self.path, self.handle = path, handle
        magic = _read_exactly(handle, 5, "the BCF magic")
        if magic[:4] != MAGIC or magic[4] not in MINOR_VERSIONS:
            version = f"{magic[3]}.{magic[4]}" if magic[3] == 2 else "1"  # BCF1: 'BCF\4'
            raise BcfFormatError(
                f"{path}: BCF version {version} is not supported (BCF 2.1 or 2.2 is); "
                "rewrite it with 'bcftools view -Ob'"
            )
        (length,) = struct.unpack("<I", _read_exactly(handle, 4, "the header length"))
        text = _read_exactly(handle, length, "the header text").split(b"\0", 1)[0]
        try:
            self.header = parse_header(text.decode("utf-8", errors="replace"))
        except ValueError as error:
            raise BcfFormatError(f"{path}: malformed BCF header: {error}") from None
        if not self.header.samples:
            raise BcfFormatError(f"{path}: header has no FORMAT/sample columns")
        self.gt_key = self.header.key("GT")

    def records(self, skipped: dict[str, int]) -> Iterator[tuple[Variant, np.ndarray]]:
        number = 0
        while True:
            head = self.handle.read(8)
            if not head:
                return
            number += 1
            try:
                if len(head) != 8:
                    raise _CorruptError(f"the file ends inside a record header ({len(head)} bytes)")
                l_shared, l_indiv = struct.unpack("<II", head)
                if l_shared < SITE.size:
                    raise _CorruptError(
                        f"site block of {l_shared} bytes, at least {SITE.size} needed"
                    )
                body = _read_exactly(self.handle, l_shared + l_indiv, "a record")
                parsed = self._record(body, l_shared, number, skipped)
            except _CorruptError as problem:
                raise BcfFormatError(
                    f"{self.path}: record {number}: {problem}; the file is truncated or corrupt"
                ) from None
            if parsed is not None:
                yield parsed

    def _record(
        self, body: bytes, l_shared: int, number: int, skipped: dict[str, int]
    ) -> tuple[Variant, np.ndarray] | None:
        chrom_index, pos0, _rlen, _qual, allele_info, fmt_sample = SITE.unpack_from(body)
        n_allele, n_info = allele_info >> 16, allele_info & 0xFFFF
        n_fmt, n_sample = fmt_sample >> 24, fmt_sample & 0xFFFFFF
        if chrom_index not in self.header.contigs:
            raise _CorruptError(f"CHROM index {chrom_index} is not a ##contig of the header")
        chrom, pos = self.header.contigs[chrom_index], str(pos0 + 1)
        site = body[:l_shared]
        ident, offset = _typed_string(site, SITE.size)
        alleles = []
        for _ in range(n_allele):
            allele, offset = _typed_string(site, offset)
            alleles.append(allele)
        offset = _skip_typed(site, offset)  # FILTER
        for _ in range(n_info):
            _key, offset = _typed_int(site, offset)
            offset = _skip_typed(site, offset)
        if offset != l_shared:
            raise _CorruptError(f"site fields take {offset} bytes, the record says {l_shared}")
        where = f"{self.path}: record {number}"
        if n_allele > CALLABLE_ALLELES:
            raise multiallelic_error(where, chrom, pos, ",".join(alleles[1:]))
        if n_allele == 0:
            raise _CorruptError("no REF allele")
        alt = (alleles[1] or ".") if n_allele == CALLABLE_ALLELES else "."  # "": missing ALT
        kind = site_kind(alleles[0], alt)
        if kind is not None:
            skipped[kind] += 1
            return None
        if n_sample != len(self.header.samples):
            raise _CorruptError(f"{n_sample} samples, the header has {len(self.header.samples)}")
        values, gt_kind = self._gt_values(body, l_shared, n_fmt, n_sample, where, chrom, pos)
        dosages, bad = decode_gt(values, gt_kind)
        if bad.any():
            sample = int(np.flatnonzero(bad)[0])
            raise BcfFormatError(
                f"{where}: genotype {_render_gt(values[sample], gt_kind)!r} of sample "
                f"{self.header.samples[sample]} at {chrom}:{pos} is not a bi-allelic call "
                "(0, 1 or .)"
            )
        variant = (chrom, ident if ident not in ("", ".") else f"{chrom}:{pos}", pos)
        return (*variant, alt, alleles[0]), dosages

    def _gt_values(
        self, body: bytes, offset: int, n_fmt: int, n_sample: int, where: str, chrom: str, pos: str
    ) -> tuple[np.ndarray, int]:
        """The GT field's (n_sample, ploidy) integers; the other fields are stepped over."""
        found = None
        for _ in range(n_fmt):
            key, offset = _typed_int(body, offset)
            count, kind, offset = _descriptor(body, offset)
            size = n_sample * count * (DTYPES[kind].itemsize if kind else 0)
            if offset + size > len(body):
                raise _CorruptError("a FORMAT field runs past the end of its record")
            if key == self.gt_key:
                found = (count, kind, offset)
            offset += size
        if offset != len(body):
            raise _CorruptError(f"FORMAT fields take {offset} bytes, the record has {len(body)}")
        if found is None:
            raise BcfFormatError(f"{where}: no GT field at {chrom}:{pos}")
        count, kind, start = found
        if kind not in INT_FORMATS:
            raise _CorruptError(f"GT stored as value type {kind}, not as integers")
        values = np.frombuffer(body, dtype=DTYPES[kind], count=n_sample * count, offset=start)
        return values.reshape(n_sample, count), kind


def _check_bgzf_end(path: Path) -> None:
    """A BGZF file cut at a block boundary decompresses cleanly; only its missing
    end-of-file block tells, so demand it (htslib writes it on close)."""
    with open(path, "rb") as handle:
        head = handle.read(18)
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(size - len(BGZF_EOF), 0))
        tail = handle.read()
    is_bgzf = len(head) == 18 and head[3] & 4 and head[12:14] == b"BC"
    if is_bgzf and tail != BGZF_EOF:
        raise BcfFormatError(
            f"{path}: no BGZF end-of-file block; the file is truncated (if it is complete, "
            "rewrite it with 'bcftools view -Ob')"
        )


@contextmanager
def bcf_records(
    path: str | Path, skipped: dict[str, int]
) -> Iterator[tuple[list[str], Iterator[tuple[Variant, np.ndarray]]]]:
    """Open a BCF: (sample names, iterator of (variant, ALT dosages) of its bi-allelic
    SNPs). Skipped sites are counted into ``skipped`` ("no_alt", "not_snp");
    multi-allelic sites and corrupt or truncated data raise BcfFormatError."""
    path = Path(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    if compressed:
        _check_bgzf_end(path)
    # gzip reads the concatenated BGZF blocks as one stream, buffered
    with gzip.open(path, "rb") if compressed else open(path, "rb") as handle:
        try:
            stream = _BcfStream(path, handle)
        except _CorruptError as problem:
            raise BcfFormatError(f"{path}: {problem}; the file is truncated or corrupt") from None
        except (OSError, EOFError, zlib.error) as error:
            raise BcfFormatError(
                f"{path}: cannot be decompressed ({error}); the file is truncated or corrupt"
            ) from None
        # outside the try: errors of the consumer (the .bed writer) are not ours to rename
        yield stream.header.samples, _decompressing(stream, skipped)


def _decompressing(stream: _BcfStream, skipped: dict[str, int]):
    """The records, with decompression errors named as BCF errors."""
    try:
        yield from stream.records(skipped)
    except (OSError, EOFError, zlib.error) as error:
        raise BcfFormatError(
            f"{stream.path}: cannot be decompressed ({error}); the file is truncated or corrupt"
        ) from None
