# Protein structure inference, AlphaFold2 monomer in PyTorch: FASTA (many
# targets) -> MSA per target -> features -> model(s) -> ranking and report.
# Templates and Amber relaxation are not part of this release (see README).

from warpbio.fold.validate import FoldInputs

FOLD = FoldInputs.from_config(config["fold"]) if enabled("fold") else None
if FOLD is not None:
    try:
        FOLD.check()
    except ValueError as error:
        fail(str(error))
FOLD_TARGETS = FOLD.target_names if FOLD is not None else []
FOLD_MODELS = list(config["fold"]["models"])
FOLD_MSA = config["fold"]["msa"]
# fold.schedule.mode batch: one job predicts every target and model
# (fold_predict_batch, defined only then); per_target: one fold_predict job each.
FOLD_SCHEDULE = config["fold"]["schedule"]
FOLD_BATCH = FOLD_SCHEDULE["mode"] == "batch"


rule fold_msa:
    input:
        unpack(fold_msa_inputs),
    output:
        a3m=out("fold", "{target}/msa.a3m"),
        provenance=out("fold", "provenance/msa.{target}.provenance.json"),
    log:
        log_path("fold", "msa", "{dataset}/{target}"),
    benchmark:
        benchmark_path("fold", "msa", "{dataset}/{target}")
    conda:
        "../envs/cpu.yaml"
    threads: 4
    resources:
        mem_mb=mem_mb(4000),
        runtime=240,
    params:
        msa=FOLD_MSA,
        backend="cpu",
    script:
        "../scripts/fold_msa.py"


rule fold_features:
    input:
        fasta=config["fold"]["fasta"],
        a3m=out("fold", "{target}/msa.a3m"),
    output:
        features=out("fold", "{target}/features.npz"),
        provenance=out("fold", "provenance/features.{target}.provenance.json"),
    log:
        log_path("fold", "features", "{dataset}/{target}"),
    benchmark:
        benchmark_path("fold", "features", "{dataset}/{target}")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
        runtime=30,
    params:
        features={
            "max_msa_clusters": FOLD_MSA["max_msa_clusters"],
            "max_extra_msa": FOLD_MSA["max_extra_msa"],
            "num_recycle": config["fold"]["num_recycle"],
        },
        seed=seed("fold"),
        backend="cpu",
    script:
        "../scripts/fold_features.py"


rule fold_predict:
    input:
        fasta=config["fold"]["fasta"],
        features=out("fold", "{target}/features.npz"),
    output:
        pdb=out("fold", "{target}/{model}/unrelaxed.pdb"),
        cif=out("fold", "{target}/{model}/unrelaxed.cif"),
        json=out("fold", "{target}/{model}/scores.json"),
        timings=out("fold", "{target}/{model}/timings.json"),
        provenance=out("fold", "provenance/predict.{target}.{model}.provenance.json"),
    log:
        log_path("fold", "predict", "{dataset}/{target}.{model}"),
    benchmark:
        benchmark_path("fold", "predict", "{dataset}/{target}.{model}")
    # --group-components fold_predict=N submits N of these as one cluster job
    group:
        "fold_predict"
    conda:
        conda_env("fold")
    threads: 2
    resources:
        gpu=gpus("fold"),
        mem_mb=mem_mb(16000),
        runtime=240,
    params:
        inference=fold_inference_params(),
        weights=config["fold"]["weights"],
        seed=seed("fold"),
        backend=backend("fold"),
    script:
        "../scripts/fold_predict.py"


if FOLD_BATCH:

    # the batch job makes fold_predict's files; ruleorder keeps the DAG unambiguous
    ruleorder: fold_predict_batch > fold_predict

    rule fold_predict_batch:
        input:
            fasta=config["fold"]["fasta"],
            features=fold_per_target("features.npz"),
        output:
            pdb=fold_per_model("unrelaxed.pdb"),
            cif=fold_per_model("unrelaxed.cif"),
            json=fold_per_model("scores.json"),
            timings=fold_per_model("timings.json"),
            records=[
                out("fold", f"provenance/predict.{target}.{model}.provenance.json")
                for target in FOLD_TARGETS
                for model in FOLD_MODELS
            ],
            provenance=out("fold", "provenance/predict_batch.provenance.json"),
        log:
            log_path("fold", "predict_batch"),
        benchmark:
            benchmark_path("fold", "predict_batch")
        conda:
            conda_env("fold")
        threads: FOLD_SCHEDULE["threads"]
        resources:
            gpu=gpus("fold", FOLD_SCHEDULE["gpus"]),
            mem_mb=mem_mb(16000),
            runtime=1440,
        params:
            inference=fold_inference_params(),
            weights=config["fold"]["weights"],
            schedule=FOLD_SCHEDULE,
            targets=FOLD_TARGETS,
            models=FOLD_MODELS,
            seed=seed("fold"),
            backend=backend("fold"),
        script:
            "../scripts/fold_predict_batch.py"


rule fold_relax:
    input:
        pdb=out("fold", "{target}/{model}/unrelaxed.pdb"),
    output:
        pdb=out("fold", "{target}/{model}/relaxed.pdb"),
        json=out("fold", "{target}/{model}/relax.json"),
        provenance=out("fold", "provenance/relax.{target}.{model}.provenance.json"),
    log:
        log_path("fold", "relax", "{dataset}/{target}.{model}"),
    benchmark:
        benchmark_path("fold", "relax", "{dataset}/{target}.{model}")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
        runtime=60,
    params:
        backend="cpu",
    script:
        "../scripts/fold_relax.py"


rule fold_rank:
    input:
        pdb=lambda wildcards: fold_model_outputs(wildcards, "pdb"),
        json=lambda wildcards: fold_model_outputs(wildcards, "json"),
    output:
        ranking=out("fold", "{target}/ranking.tsv"),
        best=out("fold", "{target}/best.pdb"),
        plddt_plot=report(
            out("fold", "{target}/plddt.png"),
            caption="../report/fold_plddt.rst",
            category="Protein structure",
            labels={"target": "{target}", "figure": "pLDDT per residue"},
        ),
        pae_plot=report(
            out("fold", "{target}/pae.png"),
            caption="../report/fold_pae.rst",
            category="Protein structure",
            labels={"target": "{target}", "figure": "PAE of the best model"},
        ),
        provenance=out("fold", "provenance/rank.{target}.provenance.json"),
    log:
        log_path("fold", "rank", "{dataset}/{target}"),
    benchmark:
        benchmark_path("fold", "rank", "{dataset}/{target}")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=10,
    params:
        rank_by=config["fold"]["rank_by"],
        reference=lambda wildcards: config["fold"]["references"].get(
            wildcards.target, ""
        ),
        backend="cpu",
    script:
        "../scripts/fold_rank.py"


for _target in FOLD_TARGETS:
    TARGETS["fold"] += [
        (done("fold", f"{_target}/ranking.tsv"), f"{_target}: models ranked."),
        (done("fold", f"{_target}/best.pdb"), f"{_target}: best model (pLDDT in B)."),
        (done("fold", f"{_target}/plddt.png"), f"{_target}: pLDDT per residue."),
        (done("fold", f"{_target}/pae.png"), f"{_target}: PAE of the best model."),
        (
            done("fold", f"provenance/rank.{_target}.provenance.json"),
            f"{_target}: provenance of the ranking.",
        ),
    ]
    for _model in FOLD_MODELS:
        if config["fold"]["relax"]:
            TARGETS["fold"] += [
                (
                    done("fold", f"{_target}/{_model}/relaxed.pdb"),
                    f"{_target} {_model}: Amber-relaxed PDB, pLDDT in B.",
                ),
                (
                    done(
                        "fold", f"provenance/relax.{_target}.{_model}.provenance.json"
                    ),
                    f"{_target} {_model}: provenance of the relaxation.",
                ),
            ]
        TARGETS["fold"] += [
            (
                done("fold", f"{_target}/{_model}/unrelaxed.pdb"),
                f"{_target} {_model}: PDB, pLDDT in B.",
            ),
            (
                done("fold", f"{_target}/{_model}/unrelaxed.cif"),
                f"{_target} {_model}: mmCIF.",
            ),
            (
                done("fold", f"{_target}/{_model}/scores.json"),
                f"{_target} {_model}: pLDDT, pTM, PAE, timings.",
            ),
            (
                done("fold", f"provenance/predict.{_target}.{_model}.provenance.json"),
                f"{_target} {_model}: provenance of the inference.",
            ),
        ]
