"""Preprocessed AnnData made with scanpy, standing in for singlecell_preprocess.

The file follows part A's contract (cells and genes that passed filtering; X =
log1p-normalised CSR float32 of all genes; obs total_counts, n_genes_by_counts,
pct_counts_mt, sample/true_cell_type when known; var highly_variable;
obsm['X_pca'] float32 n x 50) and is made the way scanpy's tutorial does it:
normalize_total, log1p, highly_variable_genes (cell_ranger), regress_out,
scale (max 10), pca 50 on the highly variable genes.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np


def scanpy_preprocess(adata, n_top_genes: int, regress=("total_counts", "pct_counts_mt")):
    import scanpy as sc

    adata = adata.copy()
    adata.var["mt"] = adata.var_names.str.startswith(("mt-", "MT-"))
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], inplace=True, percent_top=None)
    sc.pp.filter_cells(adata, min_genes=1)
    if adata.var["mt"].any():
        adata = adata[adata.obs["pct_counts_mt"] < 20].copy()
    sc.pp.filter_genes(adata, min_cells=3)
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, flavor="cell_ranger", n_top_genes=n_top_genes)
    variable = adata[:, adata.var["highly_variable"]].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.regress_out(variable, list(regress))
    sc.pp.scale(variable, max_value=10)
    sc.pp.pca(variable, n_comps=50)
    adata.obsm["X_pca"] = variable.obsm["X_pca"].astype(np.float32)
    adata.varm["PCs"] = np.zeros((adata.n_vars, 50), dtype=np.float32)
    adata.varm["PCs"][adata.var["highly_variable"].to_numpy()] = variable.varm["PCs"]
    adata.uns["pca"] = variable.uns["pca"]
    adata.X = adata.X.astype(np.float32)
    return adata


class Named(list):
    """Snakemake's named lists in miniature: iterate the paths, get them by name."""

    def __init__(self, **items):
        super().__init__()
        self._names = dict(items)
        for name, value in items.items():
            setattr(self, name, value)
            self.extend(value if isinstance(value, list) else [value])

    def items(self):
        return self._names.items()


def fake_job(rule: str, inputs: dict, outputs: dict, params: dict, log_path):
    """A stand-in for the ``snakemake`` object a script receives (for run_step)."""
    text = {k: [str(p) for p in v] if isinstance(v, list) else str(v) for k, v in outputs.items()}
    return SimpleNamespace(
        rule=rule,
        input=Named(**{k: str(v) for k, v in inputs.items()}),
        output=Named(**text),
        params=Named(**params),
        wildcards=Named(dataset="test"),
        threads=2,
        resources=SimpleNamespace(gpu=0),
        log=[str(log_path)],
        config={},
    )


def step_context(tmp_path, inputs: dict, outputs: dict, params: dict, seed=0, xp=np):
    """What run_step hands a step, with plain namespaces (no Snakemake job)."""
    return SimpleNamespace(
        input=SimpleNamespace(**{k: str(v) for k, v in inputs.items()}),
        output=SimpleNamespace(
            **{
                k: [str(p) for p in v] if isinstance(v, list) else str(v)
                for k, v in outputs.items()
            }
        ),
        params=SimpleNamespace(**params),
        seed=seed,
        xp=xp,
        threads=2,
        backend="cpu" if xp is np else "gpu",
        extra_provenance={},
    )


def default_settings() -> dict:
    """The schema's defaults of the singlecell neighbours..plots sections."""
    from pathlib import Path

    import yaml

    schema = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml").read_text()
    )
    sections = schema["properties"]["singlecell"]["properties"]
    return {
        name: {key: spec.get("default") for key, spec in sections[name]["properties"].items()}
        for name in ("neighbors", "umap", "cluster", "markers", "plots")
    }
