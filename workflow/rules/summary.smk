# The report's summary page: every enabled workflow's outputs, with captions.


rule summary:
    input:
        provenance=provenance_files(),
    output:
        html=report(
            f"{RESULTS}/summary/outputs.html",
            caption="../report/summary.rst",
            category="Summary",
        ),
        tsv=f"{RESULTS}/summary/outputs.tsv",
        # not named provenance: the runner writes the rule's own record there
        gathered=report(
            f"{RESULTS}/summary/provenance.json",
            caption="../report/provenance.rst",
            category="Summary",
        ),
    log:
        "logs/platform/summary/all.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(1000),
        runtime=10,
    params:
        targets={name: TARGETS[name] for name in WORKFLOWS if config[name]["enabled"]},
        backend="cpu",
    script:
        "../scripts/summary.py"
