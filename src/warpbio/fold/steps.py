"""Snakemake steps of the fold workflow (see workflow/rules/fold.smk).

Each step reads its files, calls the library and writes its outputs
atomically; the runner (warpbio.runner.run_step) adds logging, GPU leases and
provenance.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from warpbio.fold.msa import (
    Target,
    deduplicate,
    read_msa,
    read_targets,
    single_sequence_msa,
)
from warpbio.io import atomic_write

log = logging.getLogger(__name__)


def _target(ctx) -> Target:
    name = ctx.wildcards.target
    for target in read_targets(ctx.input.fasta):
        if target.name == name:
            return target
    raise ValueError(f"{ctx.input.fasta}: no target named {name!r}")


def msa_step(ctx) -> dict:
    """Given A3M/Stockholm, mmseqs2 or jackhmmer search, or single sequence -> A3M."""
    from warpbio.fold.search import jackhmmer_msa, mmseqs2_msa, write_a3m

    target = _target(ctx)
    settings = dict(ctx.params.msa)
    mode = settings["mode"]
    if mode == "files":
        msa = read_msa(ctx.input.msa, target.sequence)
    elif mode == "single_sequence":
        msa = single_sequence_msa(target.sequence)
    else:
        search = jackhmmer_msa if mode == "jackhmmer" else mmseqs2_msa
        with tempfile.TemporaryDirectory() as work:
            query = Path(work) / "query.fasta"
            query.write_text(f">{target.name}\n{target.sequence}\n")
            msa = deduplicate(search(str(query), ctx.input.database, threads=ctx.threads))
    with atomic_write(ctx.output.a3m) as tmp:
        write_a3m(msa, str(tmp))
    log.info("%s: %d sequences in the MSA (%s)", target.name, len(msa), mode)
    return {"target": target.name, "msa_mode": mode, "msa_sequences": len(msa)}


def features_step(ctx) -> dict:
    from warpbio.fold.features import FeatureConfig, build_features, save_features

    target = _target(ctx)
    msa = read_msa(ctx.input.a3m, target.sequence)
    settings = dict(ctx.params.features)
    config = FeatureConfig(
        max_msa_clusters=int(settings["max_msa_clusters"]),
        max_extra_msa=int(settings["max_extra_msa"]),
        num_recycle=int(settings["num_recycle"]),
    )
    features = build_features(target.sequence, msa, config, seed=int(ctx.seed))
    save_features(ctx.output.features, features)
    return {
        "target": target.name,
        "num_residues": len(target.sequence),
        "msa_sequences": len(msa),
        "msa_clusters": int(features["msa_feat"].shape[1]),
        "extra_msa": int(features["extra_msa"].shape[1]),
    }


def predict_step(ctx) -> dict:
    """Features -> one model's structure: PDB, mmCIF and JSON scores."""
    import torch

    from warpbio.fold.features import load_features
    from warpbio.fold.inference import WeightsSpec, run_model
    from warpbio.fold.outputs import to_json, to_mmcif, to_pdb, to_timings_json

    target = _target(ctx)
    settings = dict(ctx.params.inference)
    weights = dict(ctx.params.weights)
    spec = WeightsSpec(
        folder=weights["folder"], random_depth=int(weights["random_depth"]), seed=int(ctx.seed)
    )
    options = inference_options(settings)
    if ctx.backend == "gpu":
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, int(ctx.threads)))
    features = load_features(ctx.input.features)
    prediction = run_model(
        target.name, target.sequence, features, ctx.wildcards.model, spec, options, device
    )
    for path, text in (
        (ctx.output.pdb, to_pdb(prediction)),
        (ctx.output.cif, to_mmcif(prediction)),
        (ctx.output.json, to_json(prediction)),
        (ctx.output.timings, to_timings_json(prediction)),
    ):
        with atomic_write(path) as tmp:
            tmp.write_text(text)
    log.info(
        "%s %s: mean pLDDT %.2f, pTM %s, %.1f s",
        target.name,
        ctx.wildcards.model,
        prediction.mean_plddt,
        prediction.ptm,
        prediction.timings.get("inference", 0.0),
    )
    return {
        "target": target.name,
        "model": ctx.wildcards.model,
        "real_prediction": prediction.real_prediction,
        "mean_plddt": prediction.mean_plddt,
        "ptm": prediction.ptm,
        "timings_s": prediction.timings,
        "peak_memory_mb": prediction.peak_memory,
        "inference": {
            **{name: getattr(options, name) for name in INFERENCE_SWITCHES},
            "recycles_run": prediction.extra["recycles_run"],
        },
    }


INFERENCE_SWITCHES = (
    "num_recycle",
    "chunk_size",
    "auto_chunk",
    "precision",
    "attention",
    "fused",
    "inplace",
    "early_stop_tolerance",
    "offload",
    "length_multiple",
    "retain_host_memory",
)


def inference_options(settings: dict):
    """InferenceOptions from the rule's ``params.inference`` (schema-filled)."""
    from warpbio.fold.config import InferenceOptions

    return InferenceOptions(
        num_recycle=int(settings["num_recycle"]),
        chunk_size=int(settings.get("chunk_size", 0)) or None,
        auto_chunk=bool(settings.get("auto_chunk", False)),
        precision=str(settings.get("precision", "float32")),
        bf16_streams=bool(settings.get("bf16_streams", False)),
        attention=str(settings.get("attention", "reference")),
        fused=bool(settings.get("fused", False)),
        inplace=bool(settings.get("inplace", False)),
        early_stop_tolerance=float(settings.get("early_stop_tolerance", 0.0)),
        offload=bool(settings.get("offload", False)),
        compile=bool(settings.get("compile", False)),
        length_buckets=tuple(sorted(int(n) for n in settings.get("length_buckets", ()))),
        length_multiple=int(settings.get("length_multiple", 1)),
        retain_host_memory=bool(settings.get("retain_host_memory", False)),
    )


def relax_step(ctx) -> dict:
    """Amber relaxation (OpenMM) of one model's unrelaxed PDB."""
    from warpbio.fold.relax import relax_pdb

    text, info = relax_pdb(Path(ctx.input.pdb).read_text())
    with atomic_write(ctx.output.pdb) as tmp:
        tmp.write_text(text)
    with atomic_write(ctx.output.json) as tmp:
        tmp.write_text(json.dumps(info, indent=1) + "\n")
    log.info(
        "relaxed %s: energy %.1f -> %.1f kcal/mol, heavy-atom RMSD %.3f A",
        ctx.input.pdb,
        info["energy_before_kcal_mol"],
        info["energy_after_kcal_mol"],
        info["heavy_atom_rmsd_to_unrelaxed"],
    )
    return info


def rank_step(ctx) -> dict:
    """Rank a target's models by pLDDT (or pTM), plot pLDDT and PAE, compare
    with a reference structure when one is configured."""
    import pandas as pd

    from warpbio.fold.compare import compare_structures

    rank_by = ctx.params.rank_by
    records = [json.loads(Path(p).read_text()) for p in ctx.input.json]
    pdbs = dict(zip([r["model"] for r in records], ctx.input.pdb, strict=True))
    key = "ptm" if rank_by == "ptm" else "mean_plddt"
    if key == "ptm" and any(r["ptm"] is None for r in records):
        raise ValueError("fold.rank_by is 'ptm' but a model has no pTM head; use a _ptm model")
    records.sort(key=lambda r: -float(r[key]))
    reference = ctx.params.reference
    rows = []
    for rank, record in enumerate(records, start=1):
        row = {
            "rank": rank,
            "model": record["model"],
            "mean_plddt": record["mean_plddt"],
            "ptm": record["ptm"],
            "real_prediction": record["real_prediction"],
        }
        if reference:
            row.update(compare_structures(pdbs[record["model"]], reference).as_dict())
        rows.append(row)
    table = pd.DataFrame(rows)
    with atomic_write(ctx.output.ranking) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    with atomic_write(ctx.output.best) as tmp:
        shutil.copyfile(pdbs[records[0]["model"]], tmp)
    with atomic_write(ctx.output.plddt_plot) as tmp:
        plot_plddt(records, ctx.wildcards.target, tmp)
    with atomic_write(ctx.output.pae_plot) as tmp:
        plot_pae(records[0], ctx.wildcards.target, tmp)
    return {"ranked_by": rank_by, "best_model": records[0]["model"]}


def _title(records, text: str) -> str:
    if not all(r["real_prediction"] for r in records):
        return f"NOT A REAL PREDICTION (random parameters)\n{text}"
    return text


def plot_plddt(records, target: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 3.5))
    for record in records:
        axis.plot(
            np.arange(1, len(record["plddt"]) + 1),
            record["plddt"],
            label=f"{record['model']} (mean {record['mean_plddt']:.1f})",
        )
    axis.set_ylim(0, 100)
    axis.set_xlabel("residue")
    axis.set_ylabel("pLDDT")
    axis.legend(fontsize=8)
    axis.set_title(_title(records, f"{target}: per-residue pLDDT"), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)


def plot_pae(record, target: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.8, 4.2))
    if record["pae"] is None:
        axis.text(0.5, 0.5, "no PAE (non-pTM model)", ha="center", va="center")
        axis.set_axis_off()
    else:
        image = axis.imshow(
            np.array(record["pae"]), cmap="Greens_r", vmin=0, vmax=record["max_pae"] or 31.75
        )
        figure.colorbar(image, ax=axis, label="expected position error (A)")
        axis.set_xlabel("scored residue")
        axis.set_ylabel("aligned residue")
    ptm = "" if record["ptm"] is None else f", pTM {record['ptm']:.3f}"
    axis.set_title(_title([record], f"{target} {record['model']}: PAE{ptm}"), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)
