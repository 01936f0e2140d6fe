"""Backend choice, GPU leases and device facts.

Snakemake's ``gpu`` resource only *counts* GPUs; it never says which ones a job
may use.  :func:`lease_gpus` turns a granted count into concrete device ids by
taking exclusive ``flock`` locks on one file per id in a run-wide directory.  The
kernel drops an ``flock`` when the last descriptor of its holder closes, so a job
that crashes or is killed with SIGKILL releases its lease with no clean-up code;
the pid written into each file only serves logs and diagnostics.

Nothing here imports CuPy, PyTorch or Numba at module load: lint, dry runs and
CPU jobs never need CUDA.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Literal

log = logging.getLogger(__name__)

Backend = Literal["cpu", "gpu"]
BACKEND_CHOICES = ("auto", "cpu", "gpu")


class DeviceError(RuntimeError):
    """A backend or GPU request that cannot be met on this machine."""


# --------------------------------------------------------------------------
# Backend resolution
# --------------------------------------------------------------------------


def _driver_sees_gpus() -> bool:
    """Cheap check, no CUDA import: an NVIDIA driver with at least one GPU."""
    if Path("/proc/driver/nvidia/gpus").is_dir():
        return any(Path("/proc/driver/nvidia/gpus").iterdir())
    return shutil.which("nvidia-smi") is not None and bool(_nvidia_smi_indices())


def _visible_devices_blank() -> bool:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return value is not None and value.strip() in ("", "-1", "none", "NoDevFiles")


@lru_cache(maxsize=1)
def cupy_device_count() -> int:
    """Number of CUDA devices CuPy can use, probed in a child process.

    A child process keeps CUDA initialisation out of the caller (the Snakemake
    scheduler, or a job that has not exported its lease yet).
    """
    probe = "import cupy; print(cupy.cuda.runtime.getDeviceCount())"
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if done.returncode != 0:
        return 0
    try:
        return int(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def gpu_available() -> bool:
    """True when a CUDA device is visible and CuPy imports and sees it."""
    if _visible_devices_blank() or not _driver_sees_gpus():
        return False
    return cupy_device_count() > 0


def resolve_backend(requested: str) -> Backend:
    """Map ``auto|cpu|gpu`` to the backend that will run.

    ``auto`` becomes ``gpu`` only if a CUDA device is visible and CuPy imports;
    an explicit ``gpu`` on a machine without one is an error, not a silent CPU
    run, so a benchmark or a publication run never measures the wrong device.
    """
    if requested not in BACKEND_CHOICES:
        raise DeviceError(f"backend {requested!r} is not one of {', '.join(BACKEND_CHOICES)}")
    if requested == "cpu":
        return "cpu"
    if gpu_available():
        return "gpu"
    if requested == "gpu":
        raise DeviceError(
            "backend 'gpu' was requested but no CUDA device is usable here "
            "(no NVIDIA driver/GPU visible, or CuPy does not import); "
            "install the gpu extra (pip install 'warpbio[gpu]') or set backend: cpu"
        )
    return "cpu"


def array_module(backend: Backend) -> ModuleType:
    """NumPy for ``cpu``, CuPy for ``gpu`` (imported only here, lazily)."""
    if backend == "cpu":
        import numpy

        return numpy
    import cupy

    return cupy


def module_of(array) -> ModuleType:
    """NumPy or CuPy, whichever owns ``array`` (no CuPy import for NumPy arrays)."""
    import numpy

    if isinstance(array, numpy.ndarray):
        return numpy
    import cupy

    return cupy.get_array_module(array)


def to_numpy(array):
    """Host copy of a NumPy or CuPy array (a no-op for NumPy)."""
    get = getattr(array, "get", None)
    return get() if callable(get) else array


def numba_cuda() -> ModuleType:
    """``numba.cuda``, imported after restoring ``np.row_stack`` (NumPy 2.5 removed it;
    numba-cuda 0.30 still calls it while it loads)."""
    import numpy

    if not hasattr(numpy, "row_stack"):
        numpy.row_stack = numpy.vstack
    from numba import cuda

    return cuda


# --------------------------------------------------------------------------
# GPU pool discovery
# --------------------------------------------------------------------------


def query_nvidia_smi(fields: list[str]) -> list[dict[str, str]]:
    """One dict per GPU of ``nvidia-smi --query-gpu``; empty without a driver."""
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    rows = [[part.strip() for part in line.split(",")] for line in done.stdout.splitlines()]
    return [dict(zip(fields, row, strict=True)) for row in rows if len(row) == len(fields)]


def _nvidia_smi_indices() -> list[str]:
    return [row["index"] for row in query_nvidia_smi(["index"])]


def discover_gpu_pool() -> list[str]:
    """GPU ids this process may hand out when the config names none.

    A CUDA_VISIBLE_DEVICES already set by the caller bounds the pool (so a user
    can run Snakemake on a subset of a node's GPUs); otherwise nvidia-smi lists
    the node's GPUs.
    """
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    if inherited is not None and not _visible_devices_blank():
        return [item.strip() for item in inherited.split(",") if item.strip()]
    if _visible_devices_blank():
        return []
    return _nvidia_smi_indices()


def default_lease_dir() -> Path:
    """Node-wide lease directory, shared by every run of this user on the node.

    Node-wide rather than per-workdir so that two Snakemake runs started on the
    same GPU node never hand out the same GPU.  It must be on a local
    filesystem: ``flock`` over NFS is unreliable.
    """
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"warpbio-gpu-leases-{os.getuid()}"


# --------------------------------------------------------------------------
# Leases
# --------------------------------------------------------------------------


@dataclass
class GpuLease:
    """Concrete GPU ids held by this process; release() or process exit frees them."""

    ids: list[str]
    source: Literal["lease", "slurm", "none"]
    lock_dir: Path | None = None
    _handles: list = field(default_factory=list, repr=False)

    @property
    def count(self) -> int:
        return len(self.ids)

    def file_descriptors(self) -> list[int]:
        """Open lock descriptors; a child that inherits them keeps the lease."""
        return [handle.fileno() for handle in self._handles]

    def release(self) -> None:
        for handle in self._handles:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            finally:
                handle.close()
        self._handles.clear()

    def __enter__(self) -> GpuLease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _try_lock(lock_dir: Path, gpu_id: str):
    path = lock_dir / f"gpu-{gpu_id}.lock"
    handle = open(path, "a+")  # noqa: SIM115 - held open for the lease's lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    # Who holds it, for people reading the directory; the lock itself is the flock.
    handle.seek(0)
    handle.truncate()
    handle.write(f"{socket.gethostname()} {os.getpid()} {time.time():.3f}\n")
    handle.flush()
    return handle


def _holders(lock_dir: Path, pool: list[str]) -> str:
    notes = []
    for gpu_id in pool:
        path = lock_dir / f"gpu-{gpu_id}.lock"
        if path.exists():
            text = path.read_text().strip()
            if text:
                notes.append(f"{gpu_id}: {text}")
    return "; ".join(notes) or "none recorded"


def export_visible_devices(ids: list[str]) -> None:
    """Set CUDA_VISIBLE_DEVICES; must run before the first CUDA import."""
    for name in ("cupy", "torch", "numba.cuda", "jax"):
        if name in sys.modules:
            log.warning(
                "%s was imported before CUDA_VISIBLE_DEVICES was set; "
                "it may already have bound other GPUs",
                name,
            )
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    # Match nvidia-smi numbering so the ids mean the same GPUs in every tool.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def lease_gpus(
    count: int,
    pool: list[str] | None = None,
    lock_dir: str | Path | None = None,
    timeout: float = 3600.0,
    poll: float = 0.2,
    export: bool = True,
) -> GpuLease:
    """Lease ``count`` distinct GPU ids and export them as CUDA_VISIBLE_DEVICES.

    Under SLURM (``SLURM_JOB_ID`` set) the ids SLURM assigned are kept and no
    lock is taken.  Elsewhere the ids come from ``pool`` (the config's ``gpus``)
    or, when that is empty, from :func:`discover_gpu_pool`.  The lease is all or
    nothing, so two jobs waiting for two GPUs each can never deadlock holding
    one apiece.
    """
    if count <= 0:
        if export:
            export_visible_devices([])
        return GpuLease(ids=[], source="none")
    if os.environ.get("SLURM_JOB_ID"):
        return _slurm_lease(count)

    ids = [str(item) for item in (pool or discover_gpu_pool())]
    if len(set(ids)) != len(ids):
        raise DeviceError(f"GPU pool {ids} lists an id twice; list each GPU once")
    if count > len(ids):
        raise DeviceError(
            f"{count} GPU(s) requested but the pool has {len(ids)} ({ids or 'none'}); "
            "set config 'gpus' to the node's GPU ids or lower the rule's gpu resource"
        )
    directory = Path(lock_dir) if lock_dir else default_lease_dir()
    directory.mkdir(parents=True, exist_ok=True)

    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 30.0
    while True:
        handles, taken = [], []
        for gpu_id in ids:
            handle = _try_lock(directory, gpu_id)
            if handle is not None:
                handles.append(handle)
                taken.append(gpu_id)
                if len(taken) == count:
                    lease = GpuLease(taken, "lease", directory, handles)
                    if export:
                        export_visible_devices(taken)
                    log.info("leased GPU(s) %s from %s", ",".join(taken), directory)
                    return lease
        GpuLease(taken, "lease", directory, handles).release()
        now = time.monotonic()
        if now >= deadline:
            raise DeviceError(
                f"no {count} free GPU(s) in pool {ids} after {timeout:.0f} s "
                f"(holders: {_holders(directory, ids)}); "
                "another run on this node may hold them"
            )
        if now >= next_note:
            log.info("waiting for %d free GPU(s) in %s", count, directory)
            next_note = now + 30.0
        time.sleep(poll)


def _slurm_lease(count: int) -> GpuLease:
    assigned = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [item for item in assigned.split(",") if item.strip()]
    if len(ids) < count:
        raise DeviceError(
            f"SLURM job {os.environ['SLURM_JOB_ID']} was granted {len(ids)} GPU(s) "
            f"(CUDA_VISIBLE_DEVICES={assigned!r}) but the rule needs {count}; "
            "check the profile's gpu resource and the partition's GRES"
        )
    log.info("using SLURM-assigned GPU(s) %s", assigned)
    return GpuLease(ids=ids, source="slurm")


# --------------------------------------------------------------------------
# Device facts for provenance
# --------------------------------------------------------------------------


def gpu_facts() -> list[dict]:
    """Model, memory and driver of the visible GPUs (empty without nvidia-smi)."""
    facts = query_nvidia_smi(["index", "name", "memory.total", "driver_version", "uuid"])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        wanted = {item.strip() for item in visible.split(",")}
        facts = [f for f in facts if f["index"] in wanted or f["uuid"] in wanted]
    return facts
