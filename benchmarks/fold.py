"""Fold benchmark: the official AlphaFold2 JAX model vs ours, memory vs length, and
throughput of a mixed-length target set through the scheduler (GPUs, CPU cores).

Run on the GPU machine from the repository root:

    PYTHONPATH=src python3 benchmarks/fold.py --out fold-bench.json

The JAX reference needs alphafold-colabfold 2.3.18, dm-haiku 0.0.17, jmp, dm-tree,
immutabledict, ml-collections and biopython, which the GPU image lacks: carry them
as wheels (``pip download --no-deps`` them here, then ``pip install --no-deps`` the
carried files there; jax/jaxlib, torch and triton come with the image). Without
them the JAX columns are skipped with a message. Smoke test on a CPU (tiny model):
see benchmarks/README.md.

Sections (``--sections``, each prints as it goes; the summary table comes last):

1. ``jax``: the JAX reference (``RunModel`` as ColabFold runs it, model_3_ptm, no
   templates; random parameters from its own initialisation, constants perturbed as
   in tests/fold/af2_reference.py; ``stop_at_score`` and the recycle early stop
   disabled so every recycle runs) and ours with the *same* parameters (flattened to
   the npz layout, loaded by ``warpbio.fold.params.load_params``) on the same
   synthetic features (``--msa`` clusters, ``--extra-msa`` rows, same features every
   recycle) for ``--recycles`` recycles at each ``--lengths`` N. JAX compile time
   (first call minus warm call) is reported apart from the warm prediction. Ours runs
   the unoptimized float32 path and ``InferenceOptions.fast()``; a float32 run out of
   memory is repeated with ``--oom-chunk`` rows and says so. Accuracy: mean pLDDT
   difference and CA RMSD of fast vs float32 (and of JAX vs our float32).
2. ``memory``: peak GPU memory (``torch.cuda.max_memory_allocated``; on a CPU the
   peak RSS above the interpreter's) vs length up to ``--max-length``, fast options
   with and without chunking (``--memory-chunk``; ``--memory-variants`` adds the
   engine's auto chunk), each point in a fresh process; beside it the cost model's
   prediction. It runs first, on our own random parameters: JAX preallocates 75% of
   the GPU in the process that starts it, which the points' processes would lack.
3. ``mixed``: ``--mixed-count`` targets of seeded lengths in [``--mixed-min``,
   ``--mixed-max``] through the scheduler on the visible GPUs (``--gpus`` limits
   them; ``--instances-per-gpu``), sequences per GPU-hour, vs the JAX reference run
   one after another on one GPU. JAX runs a seeded subset (``--jax-subset``) of the
   lengths and the rest is extrapolated with the cost model fitted to those runs
   (the table says so); with and without its per-length compile.
4. ``cpu``: the same on CPU cores: ``--cpu-count`` targets over ``--cpu-instances``
   pinned core sets vs JAX on all cores (``--cpu-jax-subset``).

``--calibrate PATH`` fits the cost model's device constants to section 1's fast runs
(time) and section 2's points (memory) and writes them as JSON for
``fold.schedule.calibration``; section 3 plans with them when they exist.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(1, str(ROOT / "tests"))  # the JAX reference helper: tests/fold/af2_reference.py

from warpbio.fold import features as features_module  # noqa: E402
from warpbio.fold.config import InferenceOptions  # noqa: E402
from warpbio.fold.cost import (  # noqa: E402
    GIB,
    Calibration,
    Measurement,
    Workload,
    calibrate,
    calibrate_memory,
    default_calibration,
    load_calibration,
    save_calibration,
)

MODEL = "model_3_ptm"  # the reference helper's config: no templates, pTM head
log = logging.getLogger("fold-bench")


# --------------------------------------------------------------------------
# Synthetic features (the same arrays for JAX and ours)
# --------------------------------------------------------------------------


def synthetic_features(n: int, clusters: int, extra: int, seed: int) -> dict[str, np.ndarray]:
    """Random features of the monomer model's shapes (one recycle's worth)."""
    rng = np.random.default_rng(seed)
    aatype = rng.integers(0, 20, n).astype(np.int32)
    target_feat = np.zeros((n, 22), np.float32)
    target_feat[np.arange(n), aatype + 1] = 1
    msa_feat = np.zeros((clusters, n, 49), np.float32)
    rows = rng.integers(0, 23, (clusters, n))
    msa_feat[np.arange(clusters)[:, None], np.arange(n)[None], rows] = 1
    msa_feat[..., 23] = rng.random((clusters, n)) > 0.9  # has deletion
    msa_feat[..., 24] = msa_feat[..., 23] * rng.random((clusters, n))
    profile = rng.dirichlet(np.ones(23), n).astype(np.float32)
    msa_feat[..., 25:48] = profile[None]
    msa_feat[..., 48] = rng.random((clusters, n)) * 0.1
    msa_mask = np.ones((clusters, n), np.float32)
    return {
        "aatype": aatype,
        "target_feat": target_feat,
        "msa_feat": msa_feat,
        "msa_mask": msa_mask,
        "seq_mask": np.ones(n, np.float32),
        "residue_index": np.arange(n, dtype=np.int32),
        "extra_msa": rng.integers(0, 22, (extra, n)).astype(np.int32),
        "extra_has_deletion": (rng.random((extra, n)) > 0.9).astype(np.float32),
        "extra_deletion_value": (rng.random((extra, n)) * 0.2).astype(np.float32),
        "extra_msa_mask": np.ones((extra, n), np.float32),
    }


# the engine's per-recycle features, less the two only the MSA-masking head's loss reads
PER_RECYCLE = tuple(k for k in features_module.PER_RECYCLE if k not in ("bert_mask", "true_msa"))


def ours_features(base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The engine's layout: per-recycle arrays stacked (one stack: same every recycle)."""
    out = {k: v for k, v in base.items() if k not in PER_RECYCLE}
    for key in PER_RECYCLE:
        out[key] = base[key][None]
    out["bert_mask"] = np.zeros_like(base["msa_mask"])[None]
    out["true_msa"] = np.zeros(base["msa_mask"].shape, np.int32)[None]
    return out


def jax_features(base: dict[str, np.ndarray], recycles: int) -> dict[str, np.ndarray]:
    """RunModel's layout: every array with a leading recycle axis (noE slices one)."""
    from fold.af2_reference import atom_masks

    arrays = {**base, **atom_masks(base["aatype"])}
    return {k: np.broadcast_to(v, (recycles + 1, *v.shape)) for k, v in arrays.items()}


# --------------------------------------------------------------------------
# The JAX reference
# --------------------------------------------------------------------------


def jax_available() -> str:
    """'' when the official modules import, else why not."""
    try:
        import fold.af2_reference  # noqa: F401
    except ImportError as error:
        return f"JAX reference not importable ({error}); carry the wheels (module docstring)"
    import jax

    # af2_reference pins JAX to the CPU for the tests; the benchmark wants the GPU
    jax.config.update("jax_platforms", os.environ.get("JAX_PLATFORMS") or None)
    return ""


class JaxReference:
    """RunModel of model_3_ptm with random parameters, one per precision."""

    def __init__(self, blocks: int, recycles: int, seed: int = 0):
        import haiku as hk
        from fold.af2_reference import flatten, perturb_constants

        self.blocks, self.recycles = blocks, recycles
        self.runners, self.placed = {}, {}
        started = time.perf_counter()
        runner = self.runner("float32")
        runner.init_params(jax_features(synthetic_features(16, 4, 4, seed), recycles), seed)
        params = perturb_constants(hk.data_structures.to_mutable_dict(runner.params), seed)
        self.params = params
        runner.params = params
        self.flat = flatten(params)
        self.init_seconds = time.perf_counter() - started
        log.info("JAX random init (%d blocks): %.1f s", blocks, self.init_seconds)

    def runner(self, precision: str):
        if precision not in self.runners:
            from alphafold.model import model as af_model
            from fold.af2_reference import reference_config

            cfg = reference_config(num_blocks=self.blocks, ptm=True)
            cfg.model.global_config.bfloat16 = precision == "bfloat16"
            cfg.model.num_recycle = self.recycles
            cfg.model.stop_at_score = 1e9  # never stop on confidence
            cfg.model.recycle_early_stop_tolerance = -1.0  # never stop on convergence
            cfg.data.eval.num_ensemble = 1
            runner = af_model.RunModel(cfg, params=getattr(self, "params", None))
            self.runners[precision] = runner
        return self.runners[precision]

    def params_on(self, device):
        """The parameters on ``device`` (default: JAX's default device), put once:
        host NumPy parameters would be copied to the device at every call."""
        import jax

        key = str(device)
        if key not in self.placed:
            target = device if device is not None else jax.devices()[0]
            self.placed[key] = jax.device_put(self.params, target)
        return self.placed[key]

    def predict(self, features, precision: str, device=None) -> tuple[dict, float, int]:
        import jax

        runner = self.runner(precision)
        runner.params = self.params_on(device)
        context = jax.default_device(device) if device is not None else contextlib.nullcontext()
        with context:
            started = time.perf_counter()
            result, last = runner.predict(features, random_seed=0)
            seconds = time.perf_counter() - started
        if last != self.recycles:
            raise RuntimeError(f"JAX stopped after recycle {last} of {self.recycles}")
        return result, seconds, last

    def timed(self, n, clusters, extra, precision, device=None, seed=0) -> dict:
        """Cold (compile + run) and warm prediction of one synthetic target."""
        features = jax_features(synthetic_features(n, clusters, extra, seed), self.recycles)
        _, cold, _ = self.predict(features, precision, device)
        result, warm, _ = self.predict(features, precision, device)
        return {
            "warm_s": warm,
            "compile_s": max(cold - warm, 0.0),
            "ca": np.asarray(result["structure_module"]["final_atom_positions"][:, 1], float),
            "plddt": np.asarray(result["plddt"], float),
        }


def is_oom(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}"
    return "OutOfMemory" in text or "out of memory" in text.lower() or "RESOURCE_EXHAUSTED" in text


# --------------------------------------------------------------------------
# Ours
# --------------------------------------------------------------------------


def torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def write_params(flat: dict[str, np.ndarray], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"params_{MODEL}.npz", **flat)
    return folder


def random_params(args) -> dict[str, np.ndarray]:
    """Ours alone: seeded random parameters in the npz layout."""
    import torch

    from warpbio.fold.config import ModelConfig
    from warpbio.fold.model.alphafold import AlphaFold
    from warpbio.fold.params import export_params

    torch.manual_seed(args.seed)
    return export_params(AlphaFold(ModelConfig().with_depth(args.blocks)))


def ours_run(model, features, options, device) -> dict:
    """One prediction through warpbio.fold.inference.predict; seconds and peak."""
    import torch

    from warpbio.fold.inference import predict

    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = predict(model, features, options, device)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_mb": result["peak_memory"].get("gpu_peak_allocated"),
        "ca": result["atom_positions"][:, 1].astype(float),
        "plddt": result["plddt"].astype(float),
        "auto_chunk": result["timings"].get("auto_chunk_size"),  # 0.0: whole tensors
    }


def ours_timed(model, features, options, device, repeats: int, warm: bool = True) -> dict:
    if not warm:  # one cold run (a reference for accuracy, its time flagged)
        return {**ours_run(model, features, options, device), "note": "cold run"}
    ours_run(model, features, options, device)  # warm-up: kernels, allocator, autotune
    runs = [ours_run(model, features, options, device) for _ in range(repeats)]
    return min(runs, key=lambda r: r["seconds"])


def save_results(results: dict, path) -> Path:
    """The results JSON, replaced whole (a reader never sees half a file)."""
    from warpbio.io import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(results, indent=1, default=float) + "\n")
    return Path(path)


def accuracy(ca, plddt, ref_ca, ref_plddt) -> dict:
    from warpbio.fold.compare import superposed_rmsd

    return {
        "ca_rmsd_a": float(superposed_rmsd(np.asarray(ca), np.asarray(ref_ca))),
        "mean_plddt_diff": float(abs(np.mean(plddt) - np.mean(ref_plddt))),
    }


def free_memory():
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------
# Section 1: JAX vs ours
# --------------------------------------------------------------------------


def section_jax(args, reference, params_dir, rows, results) -> list[Measurement]:
    from warpbio.fold.inference import WeightsSpec, build_model

    device = torch_device()
    started = time.perf_counter()
    model, _ = build_model(MODEL, WeightsSpec(folder=str(params_dir)))
    load_s = time.perf_counter() - started
    precisions = ["bfloat16", "float32"] if args.jax_precision == "both" else [args.jax_precision]
    fast = fast_options(args, num_recycle=args.recycles)
    plain = InferenceOptions(num_recycle=args.recycles)
    points = []
    for n in args.lengths:
        base = synthetic_features(n, args.msa, args.extra_msa, seed=n)
        features = ours_features(base)
        entry = {"num_res": n}
        paths = (("fast", fast),) if args.skip_float32 else (("float32", plain), ("fast", fast))
        for name, options in paths:
            warm = name == "fast" or not args.float32_cold
            try:
                run = ours_timed(model, features, options, device, args.repeats, warm)
            except Exception as error:  # an OOM of a GPU library, by name
                if not (is_oom(error) and name == "float32"):
                    raise
                free_memory()
                options = replace(plain, chunk_size=args.oom_chunk)
                run = ours_timed(model, features, options, device, args.repeats)
                run["note"] = f"OOM unchunked; chunk {args.oom_chunk}"
            entry[name] = run
            print(f"[jax] N={n} ours {name}: {run['seconds']:.2f} s, peak {run['peak_mb']} MB")
            if name == "fast":
                workload = Workload.from_options(n, args.msa, args.extra_msa, args.blocks, options)
                peak = None if run["peak_mb"] is None else run["peak_mb"] * 2**20
                points.append(Measurement(workload, run["seconds"] + load_s, peak))
            free_memory()
        for precision in precisions if reference is not None else []:
            try:
                jax_run = reference.timed(n, args.msa, args.extra_msa, precision, seed=n)
            except Exception as error:
                if not is_oom(error):
                    raise
                jax_run = {"oom": True}
            entry[f"jax_{precision}"] = jax_run
            if "warm_s" in jax_run:
                print(
                    f"[jax] N={n} JAX {precision}: warm {jax_run['warm_s']:.2f} s, "
                    f"compile {jax_run['compile_s']:.1f} s"
                )
        if "float32" in entry:
            entry["fast_vs_float32"] = accuracy(
                entry["fast"]["ca"],
                entry["fast"]["plddt"],
                entry["float32"]["ca"],
                entry["float32"]["plddt"],
            )
        for precision in precisions:
            jax_run = entry.get(f"jax_{precision}", {})
            if "ca" in jax_run and "float32" in entry:
                entry[f"jax_{precision}_vs_ours_float32"] = accuracy(
                    jax_run["ca"],
                    jax_run["plddt"],
                    entry["float32"]["ca"],
                    entry["float32"]["plddt"],
                )
        results.setdefault("jax_vs_ours", []).append(_strip(entry))
        add_jax_rows(rows, entry, precisions, args)
        agreement = entry.get("fast_vs_float32")
        if agreement:
            print(f"[jax] N={n} fast vs float32: CA RMSD {agreement['ca_rmsd_a']:.3f} A, "
                  f"mean pLDDT diff {agreement['mean_plddt_diff']:.3f}")  # fmt: skip
        # a run cut off at a later length keeps what it measured
        save_results(results, args.out)
    del model
    free_memory()
    return points


def add_jax_rows(rows, entry, precisions, args) -> None:
    n = entry["num_res"]
    shape = (
        f"N={n}, {args.msa}+{args.extra_msa} MSA, {args.blocks} blocks, {args.recycles} recycles"
    )
    for precision in precisions:
        jax_run = entry.get(f"jax_{precision}")
        peer = (
            "skipped" if jax_run is None else ("OOM" if jax_run.get("oom") else jax_run["warm_s"])
        )
        for name in ("float32", "fast"):
            if name not in entry:
                continue
            ours = entry[name]
            ratio = peer / ours["seconds"] if isinstance(peer, float) else None
            note = ours.get("note", "")
            if isinstance(peer, float):
                note = f"JAX compile {jax_run['compile_s']:.0f} s apart; {note}".strip("; ")
            rows.append(
                (
                    "jax vs ours",
                    f"{shape}: ours {name} vs JAX {precision}",
                    ours["seconds"],
                    peer,
                    ratio,
                    note,
                )
            )
    accuracy_note = entry.get("fast_vs_float32")
    if accuracy_note is None:
        return
    rows.append(
        (
            "accuracy",
            f"N={n}: fast vs float32",
            None,
            None,
            None,
            f"CA RMSD {accuracy_note['ca_rmsd_a']:.3f} A, mean pLDDT diff "
            f"{accuracy_note['mean_plddt_diff']:.3f}",
        )
    )
    for precision in precisions:
        other = entry.get(f"jax_{precision}_vs_ours_float32")
        if other:
            rows.append(
                (
                    "accuracy",
                    f"N={n}: JAX {precision} vs ours float32",
                    None,
                    None,
                    None,
                    f"CA RMSD {other['ca_rmsd_a']:.3f} A, mean pLDDT diff "
                    f"{other['mean_plddt_diff']:.3f}",
                )
            )


def _strip(entry):
    """JSON-able copy without the coordinate arrays."""
    if isinstance(entry, dict):
        return {k: _strip(v) for k, v in entry.items() if k not in ("ca", "plddt")}
    return entry


# --------------------------------------------------------------------------
# Section 2: memory vs length (fresh process per point)
# --------------------------------------------------------------------------


def _status_bytes(field: str) -> float:
    """A /proc/self/status memory line (kB) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return float(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak_rss() -> None:
    """Reset VmHWM (Linux >= 4.0); ru_maxrss would carry the parent's peak over exec."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _memory_point(params_dir, n, clusters, extra, options, snapshot=False, limit_gib=None) -> dict:
    """Child process: one prediction; the GPU peak or the peak RSS above the start.
    ``snapshot``: record allocation stacks and, on an OOM, list the live blocks;
    ``limit_gib``: cap the allocator there (an 80 GB card's limit on an H200)."""
    import torch

    from warpbio.fold.inference import WeightsSpec, build_model

    device = torch_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    _reset_peak_rss()
    baseline = _status_bytes("VmRSS")
    model, _ = build_model(MODEL, WeightsSpec(folder=str(params_dir)))
    features = ours_features(synthetic_features(n, clusters, extra, seed=n))
    if limit_gib and device.type == "cuda":  # a smaller card's memory on a larger one
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit_gib * GIB / total))
    recording = snapshot and device.type == "cuda"
    if recording:  # allocation stacks, so an OOM names the live tensors
        torch.cuda.memory._record_memory_history(max_entries=100_000, stacks="python")
    try:
        run = ours_run(model, features, options, device)
    except Exception as error:  # an OOM of a GPU library, by name
        if is_oom(error):
            live = _live_blocks(torch.cuda.memory._snapshot()) if recording else None
            return {"oom": True, **_oom_facts(error, device), "live_at_oom": live}
        raise
    facts = {"seconds": run["seconds"], "auto_chunk": run["auto_chunk"]}
    if device.type == "cuda":
        return {"peak_bytes": run["peak_mb"] * 2**20, "kind": "gpu", **facts}
    peak = _status_bytes("VmHWM") - baseline
    return {"peak_bytes": peak, "kind": "host RSS", **facts}


def _oom_facts(error: BaseException, device) -> dict:
    """Where an OOM struck: the message's first line, our innermost frame and the
    peak allocated by then, so a failed point says which tensor did not fit."""
    import traceback

    import torch

    frames = [f for f in traceback.extract_tb(error.__traceback__) if "warpbio" in f.filename]
    last = frames[-1] if frames else None
    where = f"{Path(last.filename).name}:{last.lineno} {last.line}" if last else ""
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return {"error": str(error).splitlines()[0][:400], "where": where, "peak_bytes_at_oom": peak}


def _live_blocks(snapshot: dict, top: int = 25) -> dict:
    """The allocator's state at an OOM: live bytes grouped by the innermost warpbio
    frame that allocated them (and the innermost frame of all), largest first."""
    groups: dict[str, list[int]] = {}
    totals = {"active": 0, "inactive_split": 0, "reserved": 0}
    for segment in snapshot.get("segments", []):
        totals["reserved"] += segment.get("total_size", 0)
        for block in segment.get("blocks", []):
            size = block.get("size", 0)
            if block.get("state") == "inactive":
                totals["inactive_split"] += size
                continue
            if block.get("state") != "active_allocated":
                continue
            totals["active"] += size
            frames = block.get("frames") or []
            ours = [f for f in frames if "warpbio" in f.get("filename", "")]
            first = frames[0] if frames else {}
            where = (
                f"{Path(ours[0]['filename']).name}:{ours[0]['line']} {ours[0]['name']}"
                if ours
                else "?"
            )
            where += f" <- {Path(first.get('filename', '?')).name}:{first.get('line', '?')}"
            entry = groups.setdefault(where, [0, 0, 0])
            entry[0] += size
            entry[1] += 1
            entry[2] = max(entry[2], size)
    ranked = sorted(groups.items(), key=lambda item: -item[1][0])[:top]
    return {
        **{k: v / GIB for k, v in totals.items()},
        "largest": [
            {"where": w, "gib": b / GIB, "blocks": c, "largest_gib": m / GIB}
            for w, (b, c, m) in ranked
        ],
    }


def section_memory(args, params_dir, calibration, rows, results) -> list[Measurement]:
    lengths = [n for n in args.memory_lengths if n <= args.max_length]
    context = multiprocessing.get_context("spawn")
    recycles = args.memory_recycles
    every = {
        "none": ("fast, no chunking", fast_options(args, num_recycle=recycles, auto_chunk=False)),
        "chunk": (
            f"fast, chunk {args.memory_chunk}",
            fast_options(
                args, num_recycle=recycles, auto_chunk=False, chunk_size=args.memory_chunk
            ),
        ),
        # the engine's own choice from the child's free memory (the cost model's)
        "auto": ("fast, auto chunk", fast_options(args, num_recycle=recycles, auto_chunk=True)),
    }
    unknown = set(args.memory_variants) - set(every)
    if unknown:
        raise SystemExit(f"--memory-variants: unknown {sorted(unknown)}; use {sorted(every)}")
    variants = dict(every[key] for key in args.memory_variants)
    points, table = [], []
    for n in lengths:
        for name, options in variants.items():
            workload = Workload.from_options(n, args.msa, args.extra_msa, args.blocks, options)
            predicted = calibration.peak_bytes(workload)
            with context.Pool(1, maxtasksperchild=1) as pool:
                point = pool.apply(
                    _memory_point,
                    (
                        params_dir,
                        n,
                        args.msa,
                        args.extra_msa,
                        options,
                        args.memory_snapshot,
                        args.memory_limit_gib,
                    ),
                )
            measured = None if point.get("oom") else point["peak_bytes"]
            if measured is not None:
                points.append(Measurement(workload, point["seconds"], measured))
            shown = "OOM" if measured is None else f"{measured / GIB:.3f}"
            took = f", {point['seconds']:.1f} s" if measured is not None else ""
            if point.get("auto_chunk") is not None:
                took += f", auto chunk {int(point['auto_chunk']) or 'none (whole tensors)'}"
            if point.get("oom"):
                at_oom = point.get("peak_bytes_at_oom")
                peak_text = f"; {at_oom / GIB:.1f} GiB allocated at peak" if at_oom else ""
                took = f"; at {point.get('where')}: {point.get('error')}{peak_text}"
                if point.get("live_at_oom"):
                    live = point["live_at_oom"]
                    took += (
                        f"\n  live {live['active']:.2f} GiB, free in split blocks "
                        f"{live['inactive_split']:.2f} GiB, reserved {live['reserved']:.2f} GiB"
                    )
                    for item in live["largest"]:
                        took += (
                            f"\n  {item['gib']:8.3f} GiB in {item['blocks']:4d} blocks "
                            f"(largest {item['largest_gib']:.3f}) {item['where']}"
                        )
            print(
                f"[memory] N={n} {name}: {shown} GiB (predicted {predicted / GIB:.3f} GiB){took}",
                flush=True,
            )
            table.append(
                {
                    "num_res": n,
                    "options": name,
                    "measured_gib": None if measured is None else measured / GIB,
                    "predicted_gib": predicted / GIB,
                    "seconds": point.get("seconds"),
                    "auto_chunk": point.get("auto_chunk"),
                    "kind": point.get("kind", "gpu"),
                    "oom": {
                        k: point[k]
                        for k in ("error", "where", "peak_bytes_at_oom", "live_at_oom")
                        if k in point
                    }
                    or None,
                }
            )
            rows.append(
                (
                    "memory",
                    f"N={n}, {name}",
                    None if measured is None else measured / GIB,
                    predicted / GIB,
                    None,
                    f"GiB peak ({point.get('kind', 'gpu')}) vs cost model",
                )
            )
    results["memory_vs_length"] = table
    return points


# --------------------------------------------------------------------------
# Sections 3 and 4: a mixed-length set through the scheduler
# --------------------------------------------------------------------------


def mixed_lengths(count, low, high, seed) -> list[int]:
    return [int(v) for v in np.random.default_rng(seed).integers(low, high + 1, count)]


def write_mixed_set(folder: Path, lengths, clusters, extra):
    from warpbio.fold.schedule import TargetShape
    from warpbio.fold.throughput import OUTPUT_KINDS, PredictionJob

    letters = "ACDEFGHIKLMNPQRSTVWY"
    jobs, shapes = {}, []
    for index, n in enumerate(lengths):
        name = f"m{index:03d}_{n}"
        base = synthetic_features(n, clusters, extra, seed=1000 + index)
        path = folder / f"{name}.npz"
        np.savez(path, **ours_features(base))  # uncompressed: quick to write and read
        sequence = "".join(letters[a] for a in base["aatype"])
        outputs = {kind: str(folder / "out" / name / f"{kind}.out") for kind in OUTPUT_KINDS}
        jobs[name] = PredictionJob(name, name, MODEL, sequence, str(path), outputs)
        shapes.append(TargetShape(name, n, clusters, extra))
    return jobs, shapes


def jax_sequential(
    reference, lengths, subset, clusters, extra, blocks, device, precision, label
) -> dict:
    """JAX on ``subset`` lengths spread over the set (its quantiles), one after
    another; the rest from the cost model fitted to those runs."""
    if subset >= len(lengths):
        chosen = list(lengths)
    else:
        quantiles = np.quantile(lengths, np.linspace(0, 1, max(subset, 1)))
        chosen = sorted({int(v) for v in quantiles.round()})
    measured = []
    for n in chosen:
        run = reference.timed(n, clusters, extra, precision, device=device, seed=n)
        measured.append((n, run["warm_s"], run["compile_s"]))
        print(f"[{label}] JAX N={n}: warm {run['warm_s']:.2f} s, compile {run['compile_s']:.1f} s")
    template = Workload(1, clusters, extra, blocks, reference.recycles)
    if len(chosen) == len(lengths):
        warm = sum(m[1] for m in measured)
        note = "JAX measured on every target"
    elif len(measured) >= 2:
        fit = calibrate([(n, s, None) for n, s, _ in measured], template=template, device="jax")
        warm = sum(fit.seconds(replace(template, num_res=n)) for n in lengths)
        note = f"JAX measured on {len(measured)} lengths, the rest extrapolated by the cost model"
    else:
        warm = measured[0][1] * len(lengths)
        note = "JAX measured on 1 length, scaled by count"
    compile_mean = float(np.mean([m[2] for m in measured]))
    return {
        "warm_s": warm,
        "with_compile_s": warm + compile_mean * len(set(lengths)),
        "measured": measured,
        "note": note,
    }


def run_mixed(
    args,
    devices,
    params_dir,
    options,
    label,
    count,
    subset,
    reference,
    jax_device,
    jax_precision,
    rows,
    results,
) -> None:
    from warpbio.fold.inference import WeightsSpec
    from warpbio.fold.schedule import plan_targets
    from warpbio.fold.throughput import run_plan

    lengths = mixed_lengths(count, args.mixed_min, args.mixed_max, args.seed)
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        started = time.perf_counter()
        jobs, shapes = write_mixed_set(Path(work), lengths, args.msa, args.extra_msa)
        print(f"[{label}] {count} targets written in {time.perf_counter() - started:.0f} s")
        template = Workload.from_options(1, args.msa, args.extra_msa, args.blocks, options)
        plan = plan_targets(shapes, devices, template, time_limit=args.time_limit)
        print(plan.describe())
        started = time.perf_counter()
        done = run_plan(plan, jobs, WeightsSpec(folder=str(params_dir)), options)
        wall = time.perf_counter() - started
    units = len(devices) if devices[0].kind == "gpu" else 1
    # GPUs count one by one; the CPU path is the host's granted cores as one unit
    cores = sum(len(c) for c in devices[0].core_sets)
    unit_name = "GPU" if devices[0].kind == "gpu" else f"{cores}-core host"
    ours_rate = len(done) / (wall * units / 3600)
    print(
        f"[{label}] ours: {len(done)} in {wall:.1f} s on {units} {unit_name}(s): "
        f"{ours_rate:.1f} sequences per {unit_name}-hour"
    )
    entry = {
        "count": count,
        "lengths": lengths,
        "wall_s": wall,
        "devices": units,
        "plan": plan.to_dict(),
        "ours_sequences_per_unit_hour": ours_rate,
    }
    if reference is not None:
        peer = jax_sequential(
            reference,
            lengths,
            subset,
            args.msa,
            args.extra_msa,
            args.blocks,
            jax_device,
            jax_precision,
            label,
        )
        jax_rate = count / (peer["warm_s"] / 3600)
        entry["jax"] = {**peer, "sequences_per_hour_warm": jax_rate}
        rows.append(
            (
                label,
                f"{count} targets {args.mixed_min}-{args.mixed_max} aa: sequences per "
                f"{unit_name}-hour ({units} {unit_name}(s), plan {plan.method})",
                ours_rate,
                jax_rate,
                ours_rate / jax_rate,
                f"{peer['note']}; JAX warm only (with compile: "
                f"{count / (peer['with_compile_s'] / 3600):.1f}/h); predicted makespan "
                f"{plan.makespan_s:.0f} s vs {wall:.0f} s",
            )
        )
    else:
        rows.append(
            (
                label,
                f"{count} targets: sequences per {unit_name}-hour",
                ours_rate,
                None,
                None,
                "JAX reference not available",
            )
        )
    results[label] = entry


# --------------------------------------------------------------------------
# Table and main
# --------------------------------------------------------------------------


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def render(rows) -> str:
    header = "| section | case | ours | peer / predicted | ratio | note |\n" + "| --- " * 6 + "|"
    lines = [header] + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def device_facts() -> dict:
    import torch

    facts = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    facts["cores"] = len(os.sched_getaffinity(0))
    return facts


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="jax,memory,mixed,cpu")
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--msa", type=int, default=512, help="MSA clusters")
    p.add_argument("--extra-msa", type=int, default=1024)
    p.add_argument("--blocks", type=int, default=48)
    p.add_argument("--recycles", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1, help="warm runs of ours (min taken)")
    p.add_argument(
        "--fast-options",
        default="",
        help="changes to InferenceOptions.fast(), e.g. compile=true,attention=flash",
    )
    p.add_argument(
        "--float32-cold",
        action="store_true",
        help="run the float32 path once without a warm-up (accuracy reference; time flagged)",
    )
    p.add_argument(
        "--skip-float32",
        action="store_true",
        help="time only the fast path (its accuracy against float32 measured apart)",
    )
    p.add_argument("--jax-precision", choices=["bfloat16", "float32", "both"], default="bfloat16")
    p.add_argument("--oom-chunk", type=int, default=64)
    p.add_argument("--max-length", type=int, default=4000)
    p.add_argument(
        "--memory-lengths", type=int, nargs="+", default=[256, 512, 1024, 1536, 2048, 3000, 4000]
    )
    p.add_argument("--memory-chunk", type=int, default=64)
    p.add_argument("--memory-recycles", type=int, default=0)
    p.add_argument(
        "--memory-variants",
        nargs="+",
        default=["none", "chunk"],
        help="none (whole tensors), chunk (--memory-chunk rows), auto (the engine's auto chunk)",
    )
    p.add_argument(
        "--memory-limit-gib",
        type=float,
        help="cap PyTorch's allocator at this many GiB (79.2: an H100 80GB's on an H200)",
    )
    p.add_argument(
        "--memory-snapshot",
        action="store_true",
        help="record allocation stacks; an OOM point lists the live tensors by origin",
    )
    p.add_argument("--mixed-count", type=int, default=200)
    p.add_argument("--mixed-min", type=int, default=50)
    p.add_argument("--mixed-max", type=int, default=800)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpus", type=int, default=0, help="use the first N visible GPUs (0: all)")
    p.add_argument("--instances-per-gpu", type=int, default=2)
    p.add_argument("--mixed-options", choices=["fast", "float32"], default="fast")
    p.add_argument("--jax-subset", type=int, default=8)
    p.add_argument("--cpu-count", type=int, default=16)
    p.add_argument("--cpu-instances", type=int, default=4)
    p.add_argument(
        "--cpu-options",
        choices=["fast_cpu", "fast_cpu_bf16", "fast", "float32"],
        default="fast_cpu",
        help="fast_cpu_bf16: fast_cpu() under bfloat16 autocast (AMX/AVX512-BF16 CPUs)",
    )
    p.add_argument("--cpu-jax-subset", type=int, default=3)
    p.add_argument("--time-limit", type=float, default=30.0, help="ILP time limit (s)")
    p.add_argument("--calibration", help="cost-model JSON to plan with")
    p.add_argument("--calibrate", help="write the fitted cost-model constants here")
    p.add_argument("--workdir", default=None, help="folder for the mixed set's files")
    p.add_argument("--out", default="fold-bench.json")
    return p.parse_args(argv)


def fit_calibration(time_points, memory_points, start, kind, facts) -> Calibration | None:
    """Cost-model constants from section 1 (time) and 2 (memory); None when the
    points do not determine them (said why)."""
    import torch

    # on a CPU ours ran with every core: the constants are for that many
    cores = 0 if kind == "gpu" else torch.get_num_threads()
    device = f"{kind}: {facts.get('gpus', ['cpu'])[0]}"
    fitted = None
    try:
        if len(time_points) >= 2:
            fitted = calibrate(time_points, device=device, cores=cores, start=start)
        if len(memory_points) >= 2:
            fitted = calibrate_memory(memory_points, fitted or replace(start, device=device))
    except ValueError as error:
        print(f"calibration skipped: {error}")
        return None
    return fitted


def options_named(name: str, recycles: int, args=None) -> InferenceOptions:
    if name == "fast":
        return fast_options(args, num_recycle=recycles)
    if name == "fast_cpu":
        return InferenceOptions.fast_cpu(num_recycle=recycles)
    if name == "fast_cpu_bf16":
        return InferenceOptions.fast_cpu(num_recycle=recycles, precision="bfloat16")
    return InferenceOptions(num_recycle=recycles)


def fast_options(args, **changes) -> InferenceOptions:
    """``InferenceOptions.fast()`` with ``--fast-options`` (key=value, ...) applied."""
    overrides = {}
    for item in filter(None, (getattr(args, "fast_options", "") or "").split(",")):
        key, _, value = item.partition("=")
        default = getattr(InferenceOptions(), key)
        if isinstance(default, bool):
            overrides[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(default, tuple):
            overrides[key] = tuple(int(v) for v in value.split(":") if v)
        else:
            overrides[key] = type(default)(value) if default is not None else int(value)
    return InferenceOptions.fast(**{**overrides, **changes})


def main(argv=None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    sections = set(args.sections.split(","))
    unknown = sections - {"jax", "memory", "mixed", "cpu"}
    if unknown:
        raise SystemExit(f"unknown section(s) {sorted(unknown)}")
    import torch

    cuda = torch.cuda.is_available()
    facts = device_facts()
    print(f"device: {facts}")
    results: dict = {"command": " ".join(sys.argv), "device": facts, "args": vars(args)}
    rows: list[tuple] = []
    kind = "gpu" if cuda else "cpu"
    jax_gpu_precision = "bfloat16" if args.jax_precision == "both" else args.jax_precision
    calibration: Calibration = (
        load_calibration(args.calibration) if args.calibration else default_calibration(kind)
    )
    started = time.perf_counter()
    time_points, memory_points = [], []
    if "memory" in sections:
        # before JAX starts: it takes 75% of the GPU when it starts, which the memory
        # points' child processes would lack (4,000 residues went OOM that way)
        with tempfile.TemporaryDirectory(dir=args.workdir) as work:
            params_dir = write_params(random_params(args), Path(work) / "params")
            memory_points = section_memory(args, params_dir, calibration, rows, results)
    others = sections - {"memory"}  # the sections that compare with the reference
    why = jax_available() if others else ""
    reference, flat = None, None
    if why:
        print(why)
        flat = random_params(args)
    elif others:
        reference = JaxReference(args.blocks, args.recycles, args.seed)
        flat = reference.flat
        results["jax_init_s"] = reference.init_seconds
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        params_dir = write_params(flat, Path(work) / "params") if others else None
        if "jax" in sections:
            time_points = section_jax(args, reference, params_dir, rows, results)
        fitted = fit_calibration(time_points, memory_points, calibration, kind, facts)
        if fitted is not None:
            calibration = fitted
            results["calibration"] = fitted.to_dict()
            if args.calibrate:
                save_calibration(fitted, args.calibrate)
                print(f"calibration written to {args.calibrate}: {fitted}")
        if "mixed" in sections:
            if not cuda:
                print("[mixed] skipped: no CUDA GPU (section cpu runs the same on CPU cores)")
            else:
                from warpbio.fold.schedule import gpu_devices

                count = torch.cuda.device_count() if args.gpus == 0 else args.gpus
                ids = [str(i) for i in range(count)]
                memory = {i: float(torch.cuda.mem_get_info(int(i))[0]) for i in ids}
                free_memory()
                devices = gpu_devices(ids, args.instances_per_gpu, memory, calibration)
                run_mixed(
                    args,
                    devices,
                    params_dir,
                    options_named(args.mixed_options, args.recycles, args),
                    "mixed",
                    args.mixed_count,
                    args.jax_subset,
                    reference,
                    None,
                    jax_gpu_precision,
                    rows,
                    results,
                )
        if "cpu" in sections:
            from warpbio.fold.schedule import cpu_device

            cpu_cal = default_calibration("cpu") if kind == "gpu" else calibration
            devices = [cpu_device(args.cpu_instances, calibration=cpu_cal)]
            jax_cpu = None
            if reference is not None:
                import jax

                jax_cpu = jax.devices("cpu")[0]
            # JAX's float32 on the CPU: its bfloat16 there is emulated and slower
            run_mixed(
                args,
                devices,
                params_dir,
                options_named(args.cpu_options, args.recycles, args),
                "cpu",
                args.cpu_count,
                args.cpu_jax_subset,
                reference,
                jax_cpu,
                "float32",
                rows,
                results,
            )
    results["total_s"] = time.perf_counter() - started
    table = render(rows)
    out = save_results(results, args.out)
    markdown = out.with_suffix(".md")
    markdown.write_text(
        f"# Fold benchmark\n\nCommand: `{results['command']}`\n\nDevice: {facts}\n\n{table}\n"
    )
    print(f"\nresults: {out}, {markdown}\n")
    print(table)


if __name__ == "__main__":
    main()
