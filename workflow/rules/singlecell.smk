# Single-cell RNA-seq: simulate or ingest counts; QC metrics; preprocessing through PCA
# (singlecell_preprocess); then the kNN graph, UMAP, Leiden/Louvain, markers, plots
# and the final annotated AnnData.


rule singlecell_simulate:
    output:
        h5ad=out("singlecell", "simulated.h5ad"),
        provenance=out("singlecell", "provenance/simulate.provenance.json"),
    log:
        log_path("singlecell", "simulate"),
    # Between-workflow cache (snakemake --cache); Snakemake allows no benchmark:
    # on cached rules, the provenance record keeps the wall time and memory.
    cache: "omit-software"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=30,
    params:
        simulation=config["singlecell"]["simulate"],
        seed=seed("singlecell"),
        backend="cpu",
        code=code("warpbio.singlecell.simulate"),
    script:
        "../scripts/singlecell_simulate.py"


rule singlecell_ingest:
    input:
        samples=list(config["singlecell"]["samples"].values()),
    output:
        h5ad=out("singlecell", "ingested.h5ad"),
        provenance=out("singlecell", "provenance/ingest.provenance.json"),
    log:
        log_path("singlecell", "ingest"),
    cache: "omit-software"  # keyed on the input files' content
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
    params:
        samples=config["singlecell"]["samples"],
        backend="cpu",
        code=code("warpbio.singlecell.ingest"),
    script:
        "../scripts/singlecell_ingest.py"


rule singlecell_qc:
    input:
        h5ad=singlecell_raw,
    output:
        cells=out("singlecell", "qc/cells.tsv"),
        genes=out("singlecell", "qc/genes.tsv"),
        violins=report(
            out("singlecell", "qc/violins.png"),
            caption="../report/singlecell_qc.rst",
            category="Single-cell RNA-seq",
            labels={"dataset": "{dataset}", "figure": "QC violins"},
        ),
        provenance=out("singlecell", "provenance/qc.provenance.json"),
    log:
        log_path("singlecell", "qc"),
    benchmark:
        benchmark_path("singlecell", "qc")
    conda:
        conda_env("singlecell")
    threads: 1
    resources:
        gpu=gpus("singlecell"),
        mem_mb=mem_mb(4000),
        runtime=30,
    params:
        backend=backend("singlecell"),
    script:
        "../scripts/singlecell_qc.py"


# gpus > 1 (gpu backend) or dask_workers > 0 (cpu backend): the Dask path, with a
# thread per CPU worker or two per GPU worker (its file reads).
SINGLECELL_PREPROCESS = config["singlecell"]["preprocess"]
SINGLECELL_PREPROCESS_THREADS = max(
    2,
    SINGLECELL_PREPROCESS["dask_workers"],
    gpus("singlecell", 2 * SINGLECELL_PREPROCESS["gpus"]),
)


rule singlecell_preprocess:
    input:
        h5ad=singlecell_raw,
    output:
        h5ad=out("singlecell", "preprocessed.h5ad"),
        filtering=out("singlecell", "qc/filtering.tsv"),
        plot=report(
            out("singlecell", "preprocess/hvg_pca.png"),
            caption="../report/singlecell_preprocess.rst",
            category="Single-cell RNA-seq",
            labels={"dataset": "{dataset}", "figure": "HVGs and PCA"},
        ),
        provenance=out("singlecell", "provenance/preprocess.provenance.json"),
    log:
        log_path("singlecell", "preprocess"),
    benchmark:
        benchmark_path("singlecell", "preprocess")
    conda:
        conda_env("singlecell")
    threads: SINGLECELL_PREPROCESS_THREADS
    resources:
        gpu=gpus("singlecell", SINGLECELL_PREPROCESS["gpus"]),
        mem_mb=mem_mb(8000),
        runtime=60,
    params:
        preprocess=SINGLECELL_PREPROCESS,
        backend=backend("singlecell"),
    script:
        "../scripts/singlecell_preprocess.py"


TARGETS["singlecell"] += [
    (done("singlecell", "qc/cells.tsv"), "Per-cell QC metrics (scanpy names)."),
    (done("singlecell", "qc/genes.tsv"), "Per-gene QC metrics."),
    (done("singlecell", "qc/violins.png"), "QC violins per sample."),
    (done("singlecell", "provenance/qc.provenance.json"), "Provenance of the QC step."),
    (
        done("singlecell", "preprocessed.h5ad"),
        "Filtered cells and genes: log1p-normalized X, HVGs, X_pca (scanpy layout).",
    ),
    (done("singlecell", "qc/filtering.tsv"), "Cells and genes each filter removed."),
    (done("singlecell", "preprocess/hvg_pca.png"), "HVG selection and PCA."),
    (
        done("singlecell", "provenance/preprocess.provenance.json"),
        "Provenance of the preprocessing.",
    ),
    (
        done("singlecell", f"provenance/{SINGLECELL_SOURCE_RULE}.provenance.json"),
        "Provenance of the count matrix.",
    ),
]


# ---- neighbours -> UMAP -> clusters -> markers -> annotated AnnData, plots ----
# Small files between the stages; the big AnnData is read by markers and
# annotate only, and written once (annotated.h5ad).

SINGLECELL_PREPROCESSED = out("singlecell", "preprocessed.h5ad")
SINGLECELL_MARKER_METHODS = list(config["singlecell"]["markers"]["methods"])


rule singlecell_neighbors:
    input:
        h5ad=SINGLECELL_PREPROCESSED,
    output:
        graph=out("singlecell", "neighbors/graph.h5ad"),
        provenance=out("singlecell", "provenance/neighbors.provenance.json"),
    log:
        log_path("singlecell", "neighbors"),
    benchmark:
        benchmark_path("singlecell", "neighbors")
    conda:
        conda_env("singlecell")
    threads: 4  # BLAS-bound on the CPU
    resources:
        gpu=gpus("singlecell"),
        mem_mb=mem_mb(4000),
        runtime=60,
    params:
        neighbors=config["singlecell"]["neighbors"],
        seed=seed("singlecell"),
        backend=backend("singlecell"),
    script:
        "../scripts/singlecell_neighbors.py"


rule singlecell_umap:
    input:
        graph=out("singlecell", "neighbors/graph.h5ad"),
        h5ad=SINGLECELL_PREPROCESSED,
    output:
        umap=out("singlecell", "umap/umap.tsv"),
        provenance=out("singlecell", "provenance/umap.provenance.json"),
    log:
        log_path("singlecell", "umap"),
    benchmark:
        benchmark_path("singlecell", "umap")
    conda:
        conda_env("singlecell")
    threads: 4  # Numba, parallel over cells
    resources:
        gpu=gpus("singlecell"),
        mem_mb=mem_mb(4000),
        runtime=60,
    params:
        umap=config["singlecell"]["umap"],
        seed=seed("singlecell"),
        backend=backend("singlecell"),
    script:
        "../scripts/singlecell_umap.py"


rule singlecell_cluster:
    input:
        graph=out("singlecell", "neighbors/graph.h5ad"),
        h5ad=SINGLECELL_PREPROCESSED,
    output:
        clusters=out("singlecell", "clusters/clusters.tsv"),
        scores=out("singlecell", "clusters/scores.tsv"),
        sizes=out("singlecell", "clusters/sizes.tsv"),
        provenance=out("singlecell", "provenance/cluster.provenance.json"),
    log:
        log_path("singlecell", "cluster"),
    benchmark:
        benchmark_path("singlecell", "cluster")
    conda:
        conda_env("singlecell")
    threads: 4  # sequential engine: Leiden's refinement in threads, Louvain beside it
    resources:
        gpu=gpus("singlecell"),
        mem_mb=mem_mb(4000),
        runtime=60,
    params:
        cluster=config["singlecell"]["cluster"],
        seed=seed("singlecell"),
        backend=backend("singlecell"),
    script:
        "../scripts/singlecell_cluster.py"


rule singlecell_markers:
    input:
        h5ad=SINGLECELL_PREPROCESSED,
        clusters=out("singlecell", "clusters/clusters.tsv"),
    output:
        tables=expand(
            out("singlecell", "markers/{method}.tsv"),
            method=SINGLECELL_MARKER_METHODS,
            allow_missing=True,
        ),
        rank_genes_groups=out("singlecell", "markers/rank_genes_groups.h5"),
        dotplot=out("singlecell", "markers/dotplot.tsv"),
        provenance=out("singlecell", "provenance/markers.provenance.json"),
    log:
        log_path("singlecell", "markers"),
    benchmark:
        benchmark_path("singlecell", "markers")
    conda:
        conda_env("singlecell")
    threads: 2
    resources:
        gpu=gpus("singlecell"),
        mem_mb=mem_mb(8000),
        runtime=60,
    params:
        markers=config["singlecell"]["markers"],
        backend=backend("singlecell"),
    script:
        "../scripts/singlecell_markers.py"


rule singlecell_annotate:
    input:
        h5ad=SINGLECELL_PREPROCESSED,
        graph=out("singlecell", "neighbors/graph.h5ad"),
        umap=out("singlecell", "umap/umap.tsv"),
        clusters=out("singlecell", "clusters/clusters.tsv"),
        scores=out("singlecell", "clusters/scores.tsv"),
        rank_genes_groups=out("singlecell", "markers/rank_genes_groups.h5"),
    output:
        h5ad=out("singlecell", "annotated.h5ad"),
        provenance=out("singlecell", "provenance/annotate.provenance.json"),
    log:
        log_path("singlecell", "annotate"),
    benchmark:
        benchmark_path("singlecell", "annotate")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
    params:
        umap=config["singlecell"]["umap"],
        cluster=config["singlecell"]["cluster"],
        seed=seed("singlecell"),
        backend="cpu",
    script:
        "../scripts/singlecell_annotate.py"


rule singlecell_plots:
    input:
        umap=out("singlecell", "umap/umap.tsv"),
        clusters=out("singlecell", "clusters/clusters.tsv"),
        dotplot=out("singlecell", "markers/dotplot.tsv"),
    output:
        umap=report(
            out("singlecell", "plots/umap.png"),
            caption="../report/singlecell_umap.rst",
            category="Single-cell RNA-seq",
            labels={"dataset": "{dataset}", "figure": "UMAP by cluster"},
        ),
        dotplot=report(
            out("singlecell", "plots/dotplot.png"),
            caption="../report/singlecell_dotplot.rst",
            category="Single-cell RNA-seq",
            labels={"dataset": "{dataset}", "figure": "marker dot plot"},
        ),
        provenance=out("singlecell", "provenance/plots.provenance.json"),
    log:
        log_path("singlecell", "plots"),
    benchmark:
        benchmark_path("singlecell", "plots")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
        runtime=30,
    params:
        plots=config["singlecell"]["plots"],
        markers=config["singlecell"]["markers"],
        seed=seed("singlecell"),
        backend="cpu",
    script:
        "../scripts/singlecell_plots.py"


TARGETS["singlecell"] += [
    (
        done("singlecell", "neighbors/graph.h5ad"),
        "kNN graph: scanpy's obsp and uns.",
    ),
    (done("singlecell", "umap/umap.tsv"), "UMAP coordinates per cell."),
    (
        done("singlecell", "clusters/clusters.tsv"),
        "Leiden and Louvain cluster per cell.",
    ),
    (
        done("singlecell", "clusters/scores.tsv"),
        "Clusters: count, modularity, ARI vs the truth when simulated.",
    ),
    (done("singlecell", "clusters/sizes.tsv"), "Cells per cluster."),
    *[
        (
            done("singlecell", f"markers/{method}.tsv"),
            f"Marker genes per cluster ({method}).",
        )
        for method in SINGLECELL_MARKER_METHODS
    ],
    (
        done("singlecell", "markers/dotplot.tsv"),
        "Dot plot data: top markers per cluster.",
    ),
    (
        done("singlecell", "annotated.h5ad"),
        "Final AnnData: X_pca, X_umap, graph, clusters, rank_genes_groups.",
    ),
    (done("singlecell", "plots/umap.png"), "UMAP by cluster, sample, truth."),
    (done("singlecell", "plots/dotplot.png"), "Marker dot plot."),
    *[
        (
            done("singlecell", f"provenance/{name}.provenance.json"),
            f"Provenance of the {name} step.",
        )
        for name in ("neighbors", "umap", "cluster", "markers", "annotate", "plots")
    ],
]
