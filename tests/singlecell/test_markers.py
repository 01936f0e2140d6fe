"""rank_genes_groups: scanpy's t-test and Wilcoxon, ties, chunking, layout."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from warpbio.singlecell import markers as rank


def scanpy_frame(uns, group):
    keys = ("names", "scores", "pvals", "pvals_adj", "logfoldchanges")
    return pd.DataFrame({k: uns[k][group] for k in keys}).set_index("names")


@pytest.fixture(scope="module")
def brain_markers(brain):
    codes = brain.obs["leiden_igraph"].cat.codes.to_numpy()
    groups = list(brain.obs["leiden_igraph"].cat.categories)
    matrix = rank.DeviceCsr.from_scipy(brain.X, np)
    stats, results = rank.rank_genes(matrix, codes, len(groups), ["t-test", "wilcoxon"], np)
    return groups, stats, {r.method: r for r in results}


@pytest.mark.parametrize(
    ("method", "key", "atol"), [("t-test", "ttest", 1e-4), ("wilcoxon", "wilcoxon", 1e-6)]
)
def test_scores_match_scanpy(brain, brain_markers, method, key, atol):
    groups, stats, results = brain_markers
    uns = rank.rank_genes_groups_uns(
        results[method], groups, brain.var_names, "leiden_igraph", stats
    )
    for group in groups:
        ours = scanpy_frame(uns, group)
        theirs = scanpy_frame(brain.uns[key], group).loc[ours.index]
        np.testing.assert_allclose(ours["scores"], theirs["scores"], atol=atol)
        np.testing.assert_allclose(ours["logfoldchanges"], theirs["logfoldchanges"], atol=1e-4)
        np.testing.assert_allclose(ours["pvals"], theirs["pvals"], rtol=1e-3, atol=1e-12)
        np.testing.assert_allclose(ours["pvals_adj"], theirs["pvals_adj"], rtol=1e-3, atol=1e-12)
        # ranked the same way: the score column in rank order is scanpy's
        np.testing.assert_allclose(uns["scores"][group], brain.uns[key]["scores"][group], atol=atol)


def test_scanpy_reads_our_rank_genes_groups(brain, brain_markers):
    import scanpy as sc

    groups, stats, results = brain_markers
    adata = brain.copy()
    adata.uns["rank_genes_groups"] = rank.rank_genes_groups_uns(
        results["t-test"], groups, brain.var_names, "leiden_igraph", stats
    )
    table = sc.get.rank_genes_groups_df(adata, group=groups[0])
    assert list(table.columns[:6]) == [
        "names",
        "scores",
        "logfoldchanges",
        "pvals",
        "pvals_adj",
        "pct_nz_group",
    ]
    assert len(table) == brain.n_vars and table["scores"].is_monotonic_decreasing


def test_tie_correction_matches_scanpy(brain, brain_markers):
    import scanpy as sc

    groups, _, _ = brain_markers
    adata = brain.copy()
    sc.tl.rank_genes_groups(adata, "leiden_igraph", method="wilcoxon", tie_correct=True)
    codes = brain.obs["leiden_igraph"].cat.codes.to_numpy()
    ours = rank.wilcoxon_rank_sums(
        rank.DeviceCsr.from_scipy(brain.X, np), codes, len(groups), np, True
    )
    for g, group in enumerate(groups[:3]):
        theirs = scanpy_frame(adata.uns["rank_genes_groups"], group)["scores"]
        np.testing.assert_allclose(
            ours[g][brain.var_names.get_indexer(theirs.index)], theirs, atol=1e-5
        )


def test_wilcoxon_ranks_equal_scipys_with_negatives_ties_and_chunks():
    from scipy.stats import rankdata

    rng = np.random.default_rng(0)
    dense = rng.choice([-1.0, 0.0, 0.0, 0.0, 0.5, 1.0, 2.0], size=(300, 17)).astype(np.float32)
    dense[:, 3] = 0.0  # a gene nobody expresses
    codes = rng.integers(0, 4, 300)
    matrix = rank.DeviceCsr.from_scipy(sp.csr_matrix(dense), np)
    for chunk in (1, 5, 17):
        z = rank.wilcoxon_rank_sums(matrix, codes, 4, np, tie_correct=False, genes_per_chunk=chunk)
        ranks = rankdata(dense, axis=0)
        for g in range(4):
            n = (codes == g).sum()
            expected = (ranks[codes == g].sum(0) - n * 301 / 2) / np.sqrt(n * (300 - n) * 301 / 12)
            np.testing.assert_allclose(z[g], expected, atol=1e-10)
    assert np.all(z[:, 3] == 0)


def test_group_stats_are_chunk_independent(monkeypatch, brain):
    codes = brain.obs["leiden_igraph"].cat.codes.to_numpy()
    matrix = rank.DeviceCsr.from_scipy(brain.X, np)
    whole = rank.group_stats(matrix, codes, int(codes.max()) + 1, np)
    monkeypatch.setattr(rank, "CHUNK_NONZEROS", 1000)
    pieces = rank.group_stats(matrix, codes, int(codes.max()) + 1, np)
    np.testing.assert_allclose(pieces.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(pieces.var, whole.var, rtol=1e-9, atol=1e-15)
    dense = brain.X.toarray()
    np.testing.assert_allclose(whole.frac[0], (dense[codes == 0] != 0).mean(0))


def test_benjamini_hochberg_equals_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(1).uniform(size=500) ** 3
    p[[3, 8]] = np.nan
    expected = multipletests(np.where(np.isnan(p), 1, p), method="fdr_bh")[1]
    np.testing.assert_allclose(rank.benjamini_hochberg(p), expected)


def test_logreg_scores_like_scanpy(brain):
    import scanpy as sc

    adata = brain[brain.obs["leiden_igraph"].isin(["0", "1", "2"])].copy()
    adata.obs["group"] = adata.obs["leiden_igraph"].cat.remove_unused_categories()
    sc.tl.rank_genes_groups(adata, "group", method="logreg", max_iter=200)
    codes = adata.obs["group"].cat.codes.to_numpy()
    ours = rank.logreg_scores(adata.X, codes, 3, max_iter=200)
    theirs = scanpy_frame_scores(adata.uns["rank_genes_groups"], "0")
    np.testing.assert_allclose(
        ours[0][adata.var_names.get_indexer(theirs.index)], theirs, atol=1e-4
    )


def scanpy_frame_scores(uns, group):
    return pd.Series(uns["scores"][group], index=uns["names"][group])


def test_singleton_groups_are_refused():
    matrix = rank.DeviceCsr.from_scipy(sp.csr_matrix(np.eye(4, dtype=np.float32)), np)
    with pytest.raises(ValueError, match=r"groups \[1\] have fewer than 2 cells"):
        rank.rank_genes(matrix, np.array([0, 1, 0, 0]), 2, ["t-test"], np)
