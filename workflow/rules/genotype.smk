# Genotype PCA. This release: simulate or read a PLINK fileset, then allele
# frequencies and call rates in plink2's formats.


rule genotype_simulate:
    output:
        bed=out("genotype", "simulated.bed"),
        bim=out("genotype", "simulated.bim"),
        fam=out("genotype", "simulated.fam"),
        populations=out("genotype", "populations.tsv"),
        provenance=out("genotype", "provenance/simulate.provenance.json"),
    log:
        log_path("genotype", "simulate"),
    benchmark:
        benchmark_path("genotype", "simulate")
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
    script:
        "../scripts/genotype_simulate.py"


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


TARGETS["genotype"] += [
    (done("genotype", "stats/genotypes.afreq"), "Allele frequencies (plink2 .afreq)."),
    (done("genotype", "stats/genotypes.vmiss"), "Variant missingness (plink2 .vmiss)."),
    (done("genotype", "stats/genotypes.smiss"), "Sample missingness (plink2 .smiss)."),
    (done("genotype", "stats/genotypes.png"), "MAF and missing-rate histograms."),
    (
        done("genotype", "provenance/stats.provenance.json"),
        "Provenance of the stats step.",
    ),
]
if config["genotype"]["source"] == "simulate":
    TARGETS["genotype"].append(
        (
            done("genotype", "provenance/simulate.provenance.json"),
            "Provenance of the simulated genotypes.",
        )
    )
