import itertools

import numpy as np
import pytest

from warpbio.genotype.pca import PackedStandardizedMatrix, randomized_pca, standardization_table
from warpbio.genotype.plink import read_bed
from warpbio.genotype.simulate import BaldingNicholsSpec, simulate_to_bed
from warpbio.genotype.stats import count_genotypes
from warpbio.genotype.store import StoreFormatError, read_store, write_store


@pytest.fixture
def fileset(tmp_path):
    spec = BaldingNicholsSpec(n_samples=150, n_snps=2300, missing_rate=0.02)
    simulate_to_bed(tmp_path / "data", spec, seed=4)
    return tmp_path, read_bed(tmp_path / "data")


def test_store_holds_the_bed_records_unchanged(fileset):
    folder, bed = fileset
    write_store(bed, folder / "g.zarr", chunk_snps=500)
    store = read_store(folder / "g.zarr")
    np.testing.assert_array_equal(store.packed[:], np.asarray(bed.packed))
    assert store.packed.chunks == (500, 38)
    assert store.n_snps == bed.n_snps and callable(store._variants)  # not read yet
    assert store.variants.equals(bed.variants) and store.samples.equals(bed.samples)
    assert store.variants is store.variants  # read once


def test_pca_from_store_equals_pca_from_bed(fileset):
    folder, bed = fileset
    write_store(bed, folder / "g.zarr", chunk_snps=700)
    results = []
    for source in (bed, read_store(folder / "g.zarr")):
        table = standardization_table(count_genotypes(source, block_snps=333).alt_frequency)
        matrix = PackedStandardizedMatrix(source.packed, table, source.n_samples, block_snps=512)
        results.append(randomized_pca(matrix, 5, seed=1))
    np.testing.assert_array_equal(results[0].eigenvalues, results[1].eigenvalues)


def test_not_a_store_is_named(tmp_path):
    with pytest.raises(StoreFormatError, match=r"nothing\.zarr: not a Zarr group"):
        read_store(tmp_path / "nothing.zarr")
    import zarr

    zarr.open_group(tmp_path / "other.zarr", mode="w").attrs["format"] = "something"
    with pytest.raises(StoreFormatError, match="expected 'warpbio-2bit/1'"):
        read_store(tmp_path / "other.zarr")


@pytest.mark.parametrize(("block_rows", "chunk_rows"), [(512, 700), (700, 512), (300, 300)])
def test_blocks_read_each_chunk_once(block_rows, chunk_rows):
    from warpbio.genotype.plink import packed_blocks

    class Chunked:
        """A chunked array that records the row ranges read from it."""

        def __init__(self, array):
            self.array, self.shape, self.chunks, self.reads = (
                array,
                array.shape,
                (chunk_rows, 9),
                [],
            )

        def __getitem__(self, rows):
            self.reads.append((rows.start, rows.stop))
            return self.array[rows]

    array = np.random.default_rng(0).integers(0, 256, (2300, 9), dtype=np.uint8)
    source = Chunked(array)
    blocks = list(packed_blocks(source, block_rows))
    assert [start for start, _ in blocks] == list(range(0, 2300, block_rows))
    np.testing.assert_array_equal(np.concatenate([rows for _, rows in blocks]), array)
    covered = sorted(source.reads)
    assert covered[0][0] == 0 and covered[-1][1] == 2300
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))  # no re-reads
    assert all(start % chunk_rows == 0 for start, _ in covered)
