# ECG: simulate a recording or read those of a sample sheet; per recording, R peaks
# and beat vectors (parse -> filter -> peaks -> beats in one job, data on the device);
# a VAE on the pooled beats; per-beat anomaly scores; report figures.


wildcard_constraints:
    recording="|".join(map(re.escape, ECG_RECORDINGS)) or "no-recording",


rule ecg_simulate:
    output:
        csv=out("ecg", "simulated/synthetic.csv"),
        annotations=out("ecg", "simulated/synthetic.annotations.tsv"),
        provenance=out("ecg", "provenance/simulate.provenance.json"),
    log:
        log_path("ecg", "simulate"),
    benchmark:
        benchmark_path("ecg", "simulate")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=30,
    params:
        simulation=config["ecg"]["simulate"],
        seed=seed("ecg"),
        backend="cpu",
    script:
        "../scripts/ecg_simulate.py"


rule ecg_segment:
    input:
        ecg_recording_files,
    output:
        peaks=out("ecg", "peaks/{recording}.tsv"),
        beats=out("ecg", "beats/{recording}.npy"),
        table=out("ecg", "beats/{recording}.tsv"),
        excerpt=out("ecg", "beats/{recording}.excerpt.npz"),
        provenance=out("ecg", "provenance/segment_{recording}.provenance.json"),
    log:
        log_path("ecg", "segment", "{dataset}/{recording}"),
    benchmark:
        benchmark_path("ecg", "segment", "{dataset}/{recording}")
    conda:
        conda_env("ecg")
    threads: 2
    resources:
        gpu=gpus("ecg"),
        mem_mb=mem_mb(4000),
        runtime=30,
    params:
        recording=lambda wildcards: ECG_ROWS[wildcards.recording],
        settings=ECG_SETTINGS,
        backend=backend("ecg"),
    script:
        "../scripts/ecg_segment.py"


rule ecg_train:
    input:
        beats=ecg_per_recording("beats/{recording}.npy"),
        tables=ecg_per_recording("beats/{recording}.tsv"),
    output:
        model=out("ecg", "model/vae.pt"),
        config=out("ecg", "model/vae.json"),
        split=out("ecg", "model/split.tsv"),
        provenance=out("ecg", "provenance/train.provenance.json"),
    log:
        log_path("ecg", "train"),
    benchmark:
        benchmark_path("ecg", "train")
    conda:
        conda_env("ecg")
    threads: 1  # small convolutions: more threads cost more than they give on 2-core nodes
    resources:
        gpu=gpus("ecg"),
        mem_mb=mem_mb(4000),
        runtime=60,
    params:
        vae=config["ecg"]["vae"],
        seed=seed("ecg"),
        backend=backend("ecg"),
    script:
        "../scripts/ecg_train.py"


rule ecg_score:
    input:
        model=out("ecg", "model/vae.pt"),
        split=out("ecg", "model/split.tsv"),
        beats=ecg_per_recording("beats/{recording}.npy"),
        tables=ecg_per_recording("beats/{recording}.tsv"),
    output:
        scores=out("ecg", "scores/beats.tsv"),
        auroc=out("ecg", "scores/auroc.json"),
        provenance=out("ecg", "provenance/score.provenance.json"),
    log:
        log_path("ecg", "score"),
    benchmark:
        benchmark_path("ecg", "score")
    conda:
        conda_env("ecg")
    threads: 1
    resources:
        gpu=gpus("ecg"),
        mem_mb=mem_mb(4000),
        runtime=30,
    params:
        backend=backend("ecg"),
    script:
        "../scripts/ecg_score.py"


rule ecg_plots:
    input:
        scores=out("ecg", "scores/beats.tsv"),
        auroc=out("ecg", "scores/auroc.json"),
        beats=ecg_per_recording("beats/{recording}.npy"),
        excerpts=ecg_per_recording("beats/{recording}.excerpt.npz"),
    output:
        signal=report(
            out("ecg", "plots/signal.png"),
            caption="../report/ecg_signal.rst",
            category="ECG",
            labels={"dataset": "{dataset}", "figure": "signal with R peaks"},
        ),
        beats=report(
            out("ecg", "plots/beats.png"),
            caption="../report/ecg_beats.rst",
            category="ECG",
            labels={"dataset": "{dataset}", "figure": "beat overlays"},
        ),
        latent=report(
            out("ecg", "plots/latent.png"),
            caption="../report/ecg_latent.rst",
            category="ECG",
            labels={"dataset": "{dataset}", "figure": "latent space"},
        ),
        scores=report(
            out("ecg", "plots/scores.png"),
            caption="../report/ecg_scores.rst",
            category="ECG",
            labels={"dataset": "{dataset}", "figure": "scores and ROC"},
        ),
        provenance=out("ecg", "provenance/plots.provenance.json"),
    log:
        log_path("ecg", "plots"),
    benchmark:
        benchmark_path("ecg", "plots")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=30,
    params:
        beats=config["ecg"]["beats"],
        backend="cpu",
    script:
        "../scripts/ecg_plots.py"


for _recording in ECG_RECORDINGS:
    TARGETS["ecg"] += [
        (
            done("ecg", f"peaks/{_recording}.tsv"),
            f"R peaks of {_recording}: sample index and time (s).",
        ),
        (
            done("ecg", f"beats/{_recording}.npy"),
            f"Beats of {_recording}: (beats x length) float32, normalized.",
        ),
        (
            done("ecg", f"beats/{_recording}.tsv"),
            f"Beat table of {_recording}: sample, time, RR intervals, reference symbol.",
        ),
        (
            done("ecg", f"provenance/segment_{_recording}.provenance.json"),
            f"Provenance of the segmentation of {_recording}.",
        ),
    ]
TARGETS["ecg"] += [
    (done("ecg", "model/vae.pt"), "Trained beat VAE (PyTorch state dict)."),
    (done("ecg", "model/vae.json"), "VAE config and training record (losses, split)."),
    (done("ecg", "model/split.tsv"), "Training / held-out split of the beats."),
    (done("ecg", "provenance/train.provenance.json"), "Provenance of the training."),
    (done("ecg", "scores/beats.tsv"), "Per-beat anomaly scores and 2-D latent."),
    (
        done("ecg", "scores/auroc.json"),
        "AUROC of the scores on labelled held-out beats.",
    ),
    (done("ecg", "provenance/score.provenance.json"), "Provenance of the scores."),
    (done("ecg", "plots/signal.png"), "Signal excerpt with detected R peaks."),
    (done("ecg", "plots/beats.png"), "Normal and anomalous beat overlays."),
    (done("ecg", "plots/latent.png"), "Latent space by score and by label."),
    (done("ecg", "plots/scores.png"), "Score histogram and ROC."),
    (done("ecg", "provenance/plots.provenance.json"), "Provenance of the figures."),
]
if config["ecg"]["source"] == "simulate":
    TARGETS["ecg"].append(
        (
            done("ecg", "provenance/simulate.provenance.json"),
            "Provenance of the simulated recording.",
        )
    )
