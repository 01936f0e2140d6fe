# Genotype PCA: simulate (Balding-Nichols or msprime) or read a PLINK fileset;
# allele frequencies and call rates in plink2's formats; QC; randomized-SVD PCA.


rule genotype_simulate:
    output:
        bed=out("genotype", "simulated.bed"),
        bim=out("genotype", "simulated.bim"),
        fam=out("genotype", "simulated.fam"),
        populations=out("genotype", "simulated.populations.tsv"),
        provenance=out("genotype", "provenance/simulate.provenance.json"),
    log:
        log_path("genotype", "simulate"),
    cache: "omit-software"  # seeded; cached rules may have no benchmark:
    conda:
        conda_env("genotype")
    threads: 1
    resources:
        gpu=gpus("genotype"),
        mem_mb=mem_mb(2000),
        runtime=30,
    params:
        simulation=config["genotype"]["simulate"],
        seed=seed("genotype"),
        backend=backend("genotype"),
        code=code("warpbio.genotype.simulate"),
    script:
        "../scripts/genotype_simulate.py"


rule genotype_simulate_msprime:
    output:
        bed=out("genotype", "msprime.bed"),
        bim=out("genotype", "msprime.bim"),
        fam=out("genotype", "msprime.fam"),
        populations=out("genotype", "msprime.populations.tsv"),
        provenance=out("genotype", "provenance/simulate_msprime.provenance.json"),
    log:
        log_path("genotype", "simulate_msprime"),
    cache: "omit-software"  # the slowest simulator; seeded
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
        runtime=60,
    params:
        simulation=config["genotype"]["msprime"],
        seed=seed("genotype"),
        backend="cpu",
        code=code("warpbio.genotype.coalescent"),
    script:
        "../scripts/genotype_simulate_msprime.py"


rule genotype_import_vcf:
    input:
        vcf=lambda wildcards: config["genotype"]["vcf"],
    output:
        bed=out("genotype", "imported.bed"),
        bim=out("genotype", "imported.bim"),
        fam=out("genotype", "imported.fam"),
        provenance=out("genotype", "provenance/import_vcf.provenance.json"),
    log:
        log_path("genotype", "import_vcf"),
    cache: "omit-software"  # keyed on the VCF content
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=120,
    params:
        backend="cpu",
        code=code("warpbio.genotype.vcf"),
    script:
        "../scripts/genotype_import_vcf.py"


rule genotype_stats:
    input:
        unpack(genotype_fileset),
    output:
        afreq=out("genotype", "stats/genotypes.afreq"),
        vmiss=out("genotype", "stats/genotypes.vmiss"),
        smiss=out("genotype", "stats/genotypes.smiss"),
        plot=report(
            out("genotype", "stats/genotypes.png"),
            caption="../report/genotype_stats.rst",
            category="Genotype PCA",
            labels={
                "dataset": "{dataset}",
                "figure": "allele frequencies and call rates",
            },
        ),
        provenance=out("genotype", "provenance/stats.provenance.json"),
    log:
        log_path("genotype", "stats"),
    benchmark:
        benchmark_path("genotype", "stats")
    conda:
        conda_env("genotype")
    threads: 1
    resources:
        gpu=gpus("genotype"),
        mem_mb=mem_mb(4000),
        runtime=30,
    params:
        backend=backend("genotype"),
    script:
        "../scripts/genotype_stats.py"


rule genotype_qc:
    input:
        unpack(genotype_fileset),
    output:
        bed=out("genotype", "qc/genotypes.bed"),
        bim=out("genotype", "qc/genotypes.bim"),
        fam=out("genotype", "qc/genotypes.fam"),
        summary=out("genotype", "qc/summary.tsv"),
        provenance=out("genotype", "provenance/qc.provenance.json"),
    log:
        log_path("genotype", "qc"),
    benchmark:
        benchmark_path("genotype", "qc")
    conda:
        conda_env("genotype")
    threads: 1
    resources:
        gpu=gpus("genotype"),
        mem_mb=mem_mb(4000),
        runtime=60,
    params:
        thresholds=config["genotype"]["qc"],
        backend=backend("genotype"),
    script:
        "../scripts/genotype_qc.py"


rule genotype_store:
    input:
        bed=out("genotype", "qc/genotypes.bed"),
        bim=out("genotype", "qc/genotypes.bim"),
        fam=out("genotype", "qc/genotypes.fam"),
    output:
        store=directory(out("genotype", "qc/genotypes.zarr")),
        provenance=out("genotype", "provenance/store.provenance.json"),
    log:
        log_path("genotype", "store"),
    benchmark:
        benchmark_path("genotype", "store")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=60,
    params:
        chunk_snps=65536,
        backend="cpu",
    script:
        "../scripts/genotype_store.py"


rule genotype_pca:
    input:
        unpack(genotype_pca_inputs),
    output:
        eigenvec=out("genotype", "pca/genotypes.eigenvec"),
        eigenval=out("genotype", "pca/genotypes.eigenval"),
        variance=out("genotype", "pca/variance.tsv"),
        plot=report(
            out("genotype", "pca/pca.png"),
            caption="../report/genotype_pca.rst",
            category="Genotype PCA",
            labels={"dataset": "{dataset}", "figure": "PCA by population, scree"},
        ),
        provenance=out("genotype", "provenance/pca.provenance.json"),
    log:
        log_path("genotype", "pca"),
    benchmark:
        benchmark_path("genotype", "pca")
    conda:
        conda_env("genotype")
    threads: 16  # BLAS-bound on the CPU; Snakemake lowers it to --cores
    resources:
        gpu=gpus("genotype", config["genotype"]["pca"]["gpus"]),
        mem_mb=mem_mb(8000),
        runtime=120,
        attempt=attempt_number,  # a retry decodes half as many SNPs per block
    params:
        pca=config["genotype"]["pca"],
        seed=seed("genotype"),
        backend=backend("genotype"),
    script:
        "../scripts/genotype_pca.py"


rule genotype_loadings:
    input:
        store=out("genotype", "qc/genotypes.zarr"),
        eigenvec=out("genotype", "pca/genotypes.eigenvec"),
        eigenval=out("genotype", "pca/genotypes.eigenval"),
    output:
        loadings=out("genotype", "pca/genotypes.eigenvec.var"),
        provenance=out("genotype", "provenance/loadings.provenance.json"),
    log:
        log_path("genotype", "loadings"),
    benchmark:
        benchmark_path("genotype", "loadings")
    conda:
        conda_env("genotype")
    threads: 4
    resources:
        gpu=gpus("genotype"),
        mem_mb=mem_mb(4000),
        runtime=60,
        attempt=attempt_number,
    params:
        block_snps=config["genotype"]["pca"]["block_snps"],
        backend=backend("genotype"),
    script:
        "../scripts/genotype_loadings.py"


TARGETS["genotype"] += [
    (done("genotype", "stats/genotypes.afreq"), "Allele frequencies (plink2 .afreq)."),
    (done("genotype", "stats/genotypes.vmiss"), "Variant missingness (plink2 .vmiss)."),
    (done("genotype", "stats/genotypes.smiss"), "Sample missingness (plink2 .smiss)."),
    (done("genotype", "stats/genotypes.png"), "MAF and missing-rate histograms."),
    (
        done("genotype", "provenance/stats.provenance.json"),
        "Provenance of the stats step.",
    ),
    (done("genotype", "qc/summary.tsv"), "Samples and variants removed by QC."),
    (done("genotype", "provenance/qc.provenance.json"), "Provenance of the QC step."),
    (done("genotype", "qc/genotypes.zarr"), "QC'd genotypes, 2-bit Zarr store."),
    (done("genotype", "provenance/store.provenance.json"), "Provenance of the store."),
    (done("genotype", "pca/genotypes.eigenvec"), "PCs per sample (plink2 .eigenvec)."),
    (done("genotype", "pca/genotypes.eigenval"), "Eigenvalues (plink2 .eigenval)."),
    (done("genotype", "pca/variance.tsv"), "Explained variance per PC."),
    (done("genotype", "pca/pca.png"), "PC1/PC2, PC3/PC4 by population; scree."),
    (done("genotype", "provenance/pca.provenance.json"), "Provenance of the PCA."),
]
if config["genotype"]["source"] != "bed":
    MAKER = {
        "simulate": "simulate",
        "msprime": "simulate_msprime",
        "vcf": "import_vcf",
    }[config["genotype"]["source"]]
    TARGETS["genotype"].append(
        (
            done("genotype", f"provenance/{MAKER}.provenance.json"),
            "Provenance of the genotypes (simulated or imported).",
        )
    )
if config["genotype"]["pca"]["loadings"]:
    TARGETS["genotype"] += [
        (done("genotype", "pca/genotypes.eigenvec.var"), "SNP loadings per PC."),
        (
            done("genotype", "provenance/loadings.provenance.json"),
            "Provenance of the loadings.",
        ),
    ]
