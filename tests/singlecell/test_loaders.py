"""Every real Cell Ranger output in ../shared/data/singlecell/10x_formats reads to the
matrices scanpy reads. Skipped where the shared data or scanpy are absent."""

import gzip

import numpy as np
import pytest
from conftest import SHARED_DATA

from warpbio.singlecell.ingest import InputFormatError, read_10x_h5, read_sample

FORMATS = SHARED_DATA / "singlecell" / "10x_formats"
pytestmark = pytest.mark.skipif(not FORMATS.exists(), reason="shared data is absent")
sc = pytest.importorskip("scanpy")


def assert_same(ours, theirs):
    assert ours.shape == theirs.shape
    assert (ours.obs_names == theirs.obs_names).all()
    assert (ours.var_names == theirs.var_names).all()
    # compared as text: scanpy 1.11 turns integer-looking ids (int-ids/) into int64,
    # warpbio keeps identifiers as strings
    ours_ids, their_ids = (a.var["gene_ids"].astype(str).to_numpy() for a in (ours, theirs))
    assert (ours_ids == their_ids).all()
    assert ours.X.dtype == np.float32
    assert (ours.X != theirs.X).nnz == 0


@pytest.mark.parametrize(
    "relative",
    [
        "3.0.0/filtered_feature_bc_matrix.h5",
        "1.2.0/filtered_gene_bc_matrices_h5.h5",
    ],
)
def test_h5_matches_scanpy(relative):
    assert_same(read_sample(FORMATS / relative), sc.read_10x_h5(FORMATS / relative))


@pytest.mark.parametrize(
    "relative",
    ["3.0.0/filtered_feature_bc_matrix", "1.2.0/filtered_gene_bc_matrices/hg19_chr21", "int-ids"],
)
def test_mtx_folder_matches_scanpy(relative, tmp_path):
    folder = FORMATS / relative
    if (folder / "features.tsv").exists():  # scanpy reads v3 folders only gzipped
        for source in folder.iterdir():
            with gzip.open(tmp_path / f"{source.name}.gz", "wb") as handle:
                handle.write(source.read_bytes())
        theirs = sc.read_10x_mtx(tmp_path)
    else:
        theirs = sc.read_10x_mtx(folder)
    assert_same(read_sample(folder), theirs)


@pytest.mark.parametrize("genome", ["hg19_chr21", "another_genome"])
def test_multiple_genomes(genome):
    path = FORMATS / "1.2.0/multiple_genomes.h5"
    assert_same(read_10x_h5(path, genome=genome), sc.read_10x_h5(path, genome=genome))
    with pytest.raises(InputFormatError, match="several genomes"):
        read_sample(path)


def test_brain_subset_zarr():
    import zarr

    path = SHARED_DATA / "singlecell" / "brain1m_first10k_cells_1000genes.zarr"
    adata = read_sample(path)
    raw = zarr.open_group(path, mode="r")
    assert adata.shape == (10_000, 1_000)
    np.testing.assert_array_equal(adata.X.toarray(), raw["X"][:])
    assert adata.obs_names[0] == str(raw["obs"][0])


def test_truncated_and_mismatched_inputs_are_named(tmp_path):
    source = (FORMATS / "3.0.0/filtered_feature_bc_matrix.h5").read_bytes()
    truncated = tmp_path / "cut.h5"
    truncated.write_bytes(source[: len(source) // 2])
    with pytest.raises(InputFormatError, match=r"cut\.h5: not a readable Cell Ranger HDF5"):
        read_sample(truncated)
    folder = tmp_path / "mtx"
    folder.mkdir()
    for name in ("matrix.mtx", "barcodes.tsv"):
        (folder / name).write_bytes((FORMATS / "int-ids" / name).read_bytes())
    lines = (FORMATS / "int-ids" / "features.tsv").read_text().splitlines()
    (folder / "features.tsv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(InputFormatError, match=r"features\.tsv lists"):
        read_sample(folder)
