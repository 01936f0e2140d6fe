# Single-cell RNA-seq: simulate or ingest counts; QC metrics; preprocessing through PCA.


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
