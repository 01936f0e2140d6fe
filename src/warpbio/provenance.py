"""Per-output provenance records: what made this file, with what, from what."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from warpbio.io import atomic_write

# Packages whose versions can change a result; absent ones are simply skipped.
TRACKED_PACKAGES = (
    "warpbio",
    "snakemake",
    "numpy",
    "scipy",
    "pandas",
    "anndata",
    "h5py",
    "zarr",
    "matplotlib",
    "numba",
    "cupy",
    "cupy-cuda12x",
    "cupy-cuda13x",
    "torch",
    "scanpy",
    "scikit-learn",
    "pynndescent",
    "igraph",
)

# Files at or under this size get a full SHA-256; larger ones a size+edges digest
# so that provenance of a 50 GB genotype store does not reread it.
FULL_HASH_LIMIT = 1 << 30
EDGE_BYTES = 1 << 24


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _hash_file(path: Path) -> tuple[str, str]:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
            return "sha256", digest.hexdigest()
        digest.update(str(size).encode())
        digest.update(handle.read(EDGE_BYTES))
        handle.seek(size - EDGE_BYTES)
        digest.update(handle.read(EDGE_BYTES))
    return "sha256-size-edges", digest.hexdigest()


def describe_path(path: str | os.PathLike) -> dict[str, Any]:
    """Size and checksum of a file, or of every file under a directory."""
    root = Path(path)
    if not root.exists():
        return {"path": str(path), "exists": False}
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    total = 0
    method = "sha256"
    for file in files:
        kind, value = _hash_file(file)
        if kind != "sha256":
            method = kind
        total += file.stat().st_size
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        digest.update(value.encode())
    checksum = _hash_file(root)[1] if root.is_file() else digest.hexdigest()
    return {
        "path": str(path),
        "bytes": total,
        "files": len(files),
        "checksum": f"{method}:{checksum}",
    }


def _module_file(name: str, package_root: Path) -> Path | None:
    parts = name.split(".")[1:]
    base = package_root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _warpbio_imports(source: str, module: str) -> set[str]:
    """Every ``warpbio.*`` module a source imports, at the top or inside functions."""
    found = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("warpbio"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("warpbio"):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)  # submodules
    return found


def source_digest(*modules: str, package_root: str | os.PathLike | None = None) -> str:
    """SHA-256 over the source of ``modules`` and every warpbio module they import.

    Snakemake's between-workflow cache and its code trigger hash a rule's
    script, but warpbio's scripts are two lines that call into the package: the
    numerical code lives here.  Passing this digest as a param puts the code
    that makes an output into the cache key.  The imports are read with
    ``ast``, so nothing is imported (the Snakefile calls this at parse time).
    """
    root = Path(package_root) if package_root else Path(__file__).resolve().parent
    pending = list(modules)
    files: dict[str, Path] = {}
    while pending:
        name = pending.pop()
        if name in files:
            continue
        path = _module_file(name, root)
        if path is None:
            continue  # a name imported from a module, not a module
        files[name] = path
        pending.extend(_warpbio_imports(path.read_text(), name) - files.keys())
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode())
        digest.update(files[name].read_bytes())
    return digest.hexdigest()[:16]


def peak_host_memory_bytes() -> int:
    """Peak resident set of this process (Linux reports ru_maxrss in KiB)."""
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024
    return max(usage, children) * scale


def gpu_memory_peaks() -> dict[str, int]:
    """Peak GPU memory of libraries this process actually imported.

    CuPy's pool keeps freed blocks for reuse, so what it has reserved at the end
    of a job is its high-water mark unless the step released blocks itself.
    """
    peaks: dict[str, int] = {}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        peaks["torch_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        with contextlib.suppress(Exception):
            peaks["cupy_pool_reserved_bytes"] = int(cupy.get_default_memory_pool().total_bytes())
    return peaks


def cuda_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {}
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        try:
            facts["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
            facts["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        except Exception:
            pass
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch.version, "cuda", None):
        facts["torch_cuda"] = torch.version.cuda
    return facts


def gpu_record() -> dict[str, Any]:
    from warpbio.device import gpu_facts

    return {"devices": gpu_facts(), **cuda_facts(), **gpu_memory_peaks()}


def build_record(
    *,
    rule: str,
    outputs: Iterable[str],
    inputs: Iterable[str] = (),
    params: Mapping[str, Any] | None = None,
    seed: int | None = None,
    backend: str = "cpu",
    gpu_ids: Iterable[str] = (),
    started: float,
    extra: Mapping[str, Any] | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    ids = list(gpu_ids)
    record: dict[str, Any] = {
        "rule": rule,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": round(time.time() - started, 3),
        "backend": backend,
        "seed": seed,
        "attempt": attempt,
        "params": _jsonable(dict(params or {})),
        "inputs": [describe_path(p) for p in inputs],
        "outputs": [describe_path(p) for p in outputs],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "packages": package_versions(),
        "peak_host_memory_bytes": peak_host_memory_bytes(),
        # GPU facts only for jobs that leased GPUs: a CPU job may still have
        # CuPy imported (anndata probes for it) without using a device.
        "gpu": {"ids": ids, **gpu_record()} if ids else {"ids": []},
    }
    if extra:
        record["extra"] = _jsonable(dict(extra))
    return record


def write_record(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    item = getattr(value, "item", None)  # NumPy scalars
    if callable(item):
        return item()
    return str(value)
