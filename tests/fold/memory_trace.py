"""Live activation bytes of a model run on the CPU, extrapolated in the length.

:class:`LiveBytes` is a dispatch mode that counts every storage an op creates
until it dies (weak references on the storages), keeps the peak and the
largest storages with the op and module that made them. Each storage's size is
also kept as ``factor * N**power`` (the creating tensor's dims equal to N, N*N
or a multiple of N count as N), so :meth:`LiveBytes.peak_at` gives the peak of
the same op sequence at another length: the peak of a long target from a short
CPU run (chunk-sized dims stay constant when the chunk does).

The CPU twins of the GPU kernels (flash attention, the gating epilogues) are
counted by their outputs only: their float32 temporaries do not exist on the
GPU. Run as a script for the benchmark's memory options::

    python tests/fold/memory_trace.py --lengths 320 448 --chunk 64
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from warpbio.fold.model import attention_kernel, kernels

GIB = 2**30
TWINS = (
    (attention_kernel, "gated_attention_torch"),
    (kernels, "sigmoid_gate_torch"),
    (kernels, "gated_projections_torch"),
    (kernels, "center_layer_norm_torch"),
)


@dataclass(frozen=True)
class Alloc:
    nbytes: int
    factor: float  # bytes = factor * N ** power
    power: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    op: str
    module: str

    def at(self, n: int) -> float:
        return self.factor * n**self.power


def scaling(shape: tuple[int, ...], itemsize: int, n: int) -> tuple[float, int]:
    """(factor, power) of a tensor's bytes in the length ``n``."""
    factor, power = float(itemsize), 0
    for dim in shape:
        if dim == n * n:
            power += 2
        elif dim >= n and dim % n == 0:
            factor, power = factor * (dim // n), power + 1
        else:
            factor *= dim
    return factor, power


class LiveBytes(TorchDispatchMode):
    """Bytes of the live storages made inside the mode, their peak at this length
    and at the ``targets`` lengths (same op sequence, sizes scaled)."""

    def __init__(self, num_res: int, targets: tuple[int, ...] = ()):
        super().__init__()
        self.num_res, self.targets = num_res, targets
        self.live: dict[int, Alloc] = {}
        self.peak, self.peak_allocs = 0, []
        self.peaks = {n: (0.0, []) for n in targets}
        self.module_peaks: dict[int, dict[str, float]] = {n: {} for n in targets}
        self.modules: list[str] = ["(top)"]
        self.paused = 0
        self._refs: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused:
            for tensor in tree_leaves(out):
                if isinstance(tensor, torch.Tensor):
                    self._track(tensor, str(func.overloadpacket.__name__))
        return out

    def _track(self, tensor: torch.Tensor, op: str) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._refs or storage.nbytes() == 0 or tensor.device.type == "meta":
            return
        shape = tuple(tensor.shape)
        factor, power = scaling(shape, tensor.element_size(), self.num_res)
        if abs(factor * self.num_res**power - storage.nbytes()) > 1:  # a view's storage
            factor, power = float(storage.nbytes()), 0
        alloc = Alloc(storage.nbytes(), factor, power, shape, tensor.dtype, op, self.modules[-1])
        self.live[key] = alloc
        self._refs[key] = weakref.ref(storage, functools.partial(self._free, key))
        self._update()

    def _free(self, key: int, _ref) -> None:
        self.live.pop(key, None)
        self._refs.pop(key, None)

    def _update(self) -> None:
        now = sum(a.nbytes for a in self.live.values())
        if now > self.peak:
            self.peak, self.peak_allocs = now, list(self.live.values())
        module = re.sub(r"\.\d+", "", self.modules[-1])  # blocks alike
        for n in self.targets:
            total = sum(a.at(n) for a in self.live.values())
            if total > self.peaks[n][0]:
                self.peaks[n] = (total, list(self.live.values()))
            peaks = self.module_peaks[n]
            peaks[module] = max(peaks.get(module, 0.0), total)

    def peak_at(self, n: int) -> float:
        return self.peaks[n][0]

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1

    @contextlib.contextmanager
    def module_names(self, model: torch.nn.Module) -> Iterator[None]:
        """Attribute allocations to the innermost module running."""
        names = {id(m): name for name, m in model.named_modules()}

        def enter(module, _inputs):
            self.modules.append(names.get(id(module), type(module).__name__))

        def leave(_module, _inputs, _output):
            self.modules.pop()

        hooks = [
            torch.nn.modules.module.register_module_forward_pre_hook(enter),
            torch.nn.modules.module.register_module_forward_hook(leave),
        ]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    @contextlib.contextmanager
    def twins_by_output(self) -> Iterator[None]:
        """The CPU twins of GPU kernels counted by their outputs only."""
        originals = [(owner, name, getattr(owner, name)) for owner, name in TWINS]

        def wrap(fn):
            def outputs_only(*args, **kwargs):
                with self.pause():
                    out = fn(*args, **kwargs)
                for tensor in tree_leaves(out):
                    if isinstance(tensor, torch.Tensor):
                        self._track(tensor, fn.__name__)
                return out

            return outputs_only

        for owner, name, fn in originals:
            setattr(owner, name, wrap(fn))
        try:
            yield
        finally:
            for owner, name, fn in originals:
                setattr(owner, name, fn)


def largest(allocs: list[Alloc], n: int, count: int = 12) -> list[str]:
    rows = sorted(allocs, key=lambda a: -a.at(n))[:count]
    return [
        f"{a.at(n) / GIB:8.2f} GiB  N^{a.power} {list(a.shape)} {str(a.dtype)[6:]} "
        f"{a.op} in {a.module}"
        for a in rows
    ]


def trace(model, features, options, num_res: int, targets=()) -> LiveBytes:
    """One ``inference.predict`` of ``features`` (NumPy) under :class:`LiveBytes`."""
    from warpbio.fold.inference import predict

    tracker = LiveBytes(num_res, tuple(targets))
    with tracker.twins_by_output(), tracker.module_names(model), tracker:
        predict(model, features, options, torch.device("cpu"))
    return tracker


def main() -> None:
    import importlib.util
    from pathlib import Path

    from warpbio.fold.config import InferenceOptions, model_config
    from warpbio.fold.model.alphafold import AlphaFold

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[320, 448])
    p.add_argument("--targets", type=int, nargs="+", default=[2048, 3000, 4000])
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--msa", type=int, default=512)
    p.add_argument("--extra-msa", type=int, default=1024)
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--recycles", type=int, default=0)
    p.add_argument("--show", type=int, default=12)
    args = p.parse_args()
    path = Path(__file__).parents[2] / "benchmarks" / "fold.py"
    spec = importlib.util.spec_from_file_location("fold_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    config = model_config(bench.MODEL).with_depth(args.blocks)
    options = InferenceOptions.fast(
        num_recycle=args.recycles, auto_chunk=False, chunk_size=args.chunk or None
    )
    torch.manual_seed(0)
    model = AlphaFold(config).eval()
    for n in args.lengths:
        features = bench.ours_features(bench.synthetic_features(n, args.msa, args.extra_msa, n))
        tracker = trace(model, features, options, n, args.targets)
        print(f"N={n}: peak {tracker.peak / GIB:.3f} GiB of activations")
        print("\n".join(largest(tracker.peak_allocs, n, args.show)))
        for target in args.targets:
            print(f"  -> N={target}: peak {tracker.peak_at(target) / GIB:.2f} GiB, live then:")
            print("\n".join(largest(tracker.peaks[target][1], target, args.show)))
        target = max(args.targets)
        print(f"  peak by module at N={target}:")
        ranked = sorted(tracker.module_peaks[target].items(), key=lambda kv: -kv[1])
        for module, total in ranked[: args.show * 2]:
            print(f"{total / GIB:8.2f} GiB  {module}")


if __name__ == "__main__":
    main()
