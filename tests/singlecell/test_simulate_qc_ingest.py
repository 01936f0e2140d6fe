import anndata as ad
import numpy as np
import pytest

from warpbio.singlecell.ingest import InputFormatError, merge_samples, read_sample
from warpbio.singlecell.qc import mito_mask, qc_metrics
from warpbio.singlecell.simulate import (
    MOUSE_MITO_GENES,
    SimulationSpec,
    simulate_counts,
    to_anndata,
)

SPEC = SimulationSpec(n_cells=600, n_genes=300, n_cell_types=4, n_samples=2, chunk_cells=250)


def test_simulation_is_seeded():
    first, again = simulate_counts(SPEC, seed=1), simulate_counts(SPEC, seed=1)
    other = simulate_counts(SPEC, seed=2)
    assert (first.counts != again.counts).nnz == 0
    assert (first.counts != other.counts).nnz > 0
    np.testing.assert_array_equal(first.cell_type, again.cell_type)


def test_simulation_shape_and_truth():
    sim = simulate_counts(SPEC, seed=0)
    assert sim.counts.shape == (600, 300)
    assert sim.gene_names[-len(MOUSE_MITO_GENES) :] == list(MOUSE_MITO_GENES)
    assert set(np.unique(sim.cell_type)) == {0, 1, 2, 3}
    counts = sim.counts.toarray()
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    library = counts.sum(axis=1)
    assert 0.5 * SPEC.mean_library_size < np.median(library) < 1.5 * SPEC.mean_library_size
    # cell types differ: mean profiles of two types are far apart on marker genes
    profile = np.stack([counts[sim.cell_type == t].mean(0) for t in range(4)])
    log_fold = np.abs(np.log1p(profile[0]) - np.log1p(profile[1]))
    assert (log_fold > 1.0).sum() >= 5


def test_qc_metrics_match_dense_definitions():
    sim = simulate_counts(SPEC, seed=0)
    mito = mito_mask(sim.gene_names)
    assert mito.sum() == len(MOUSE_MITO_GENES)
    metrics = qc_metrics(sim.counts, mito, np)
    dense = sim.counts.toarray().astype(np.float64)
    np.testing.assert_allclose(metrics.total_counts, dense.sum(1))
    np.testing.assert_array_equal(metrics.n_genes_by_counts, (dense > 0).sum(1))
    np.testing.assert_allclose(metrics.pct_counts_mt, 100 * dense[:, mito].sum(1) / dense.sum(1))
    np.testing.assert_array_equal(metrics.gene_n_cells_by_counts, (dense > 0).sum(0))
    # damaged cells carry a much larger mitochondrial share
    assert np.median(metrics.pct_counts_mt[sim.damaged]) > 5 * np.median(
        metrics.pct_counts_mt[~sim.damaged]
    )


def test_ingest_merges_samples_with_a_sample_column(tmp_path):
    paths = {}
    for seed, name in enumerate(("ctrl", "treated")):
        path = tmp_path / f"{name}.h5ad"
        to_anndata(simulate_counts(SPEC, seed=seed)).write_h5ad(path)
        paths[name] = str(path)
    merged = merge_samples(paths)
    assert merged.n_obs == 1200 and merged.n_vars == 300
    assert merged.obs["sample"].value_counts().to_dict() == {"ctrl": 600, "treated": 600}
    assert merged.obs_names.is_unique


def test_ingest_rejects_bad_files_by_name(tmp_path):
    text = tmp_path / "counts.h5ad"
    text.write_text("not hdf5")
    with pytest.raises(InputFormatError, match=r"counts\.h5ad: not an HDF5 file"):
        read_sample(text)
    with pytest.raises(InputFormatError, match=r"counts\.loom: unsupported"):
        read_sample(tmp_path / "counts.loom")
    empty = tmp_path / "empty.h5ad"
    ad.AnnData(np.zeros((0, 3), dtype=np.float32)).write_h5ad(empty)
    with pytest.raises(InputFormatError, match="0 cells"):
        read_sample(empty)
