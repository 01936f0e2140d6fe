"""Atomic output writing: a reader never sees half a file."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` only on success.

    The temporary name sits in the same directory, so the final ``os.replace``
    is a same-filesystem rename.  It keeps the target's suffix (``x.tmp-123.h5ad``)
    because writers such as AnnData or Zarr choose their format by suffix.
    On any exception the temporary is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix = _split_suffix(target)
    tmp = target.with_name(f".{stem}.tmp-{os.getpid()}{suffix}")
    _remove(tmp)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"writer produced nothing at {tmp} for {target}")
        if directory and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def _split_suffix(target: Path) -> tuple[str, str]:
    suffix = "".join(target.suffixes)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    return stem, suffix


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporaries of ``path`` left by writers that were killed (SIGKILL, node loss).

    A killed writer never reaches its clean-up, so its ``.stem.tmp-PID.suffix``
    stays beside the output.  Nothing reads it (the output itself was never
    renamed into place), but a rerun removes it so that no half-written file
    lingers in the results.
    """
    target = Path(path)
    if not target.parent.is_dir():
        return []
    stem, suffix = _split_suffix(target)
    prefix = f".{stem}.tmp-"
    found = []
    for candidate in target.parent.iterdir():
        name = candidate.name
        if name.startswith(prefix) and name.endswith(suffix):
            pid = name[len(prefix) : len(name) - len(suffix) if suffix else None]
            if pid.isdigit():
                found.append(candidate)
    return sorted(found)


def remove_stale_temporaries(paths: list[str | os.PathLike]) -> list[Path]:
    """Delete the killed writers' temporaries of every path; returns what was removed."""
    removed = []
    for path in paths:
        for stale in stale_temporaries(path):
            _remove(stale)
            removed.append(stale)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def remove_outputs(paths: list[str | os.PathLike]) -> None:
    """Delete whatever a failed job left at its declared outputs."""
    for path in paths:
        _remove(Path(path))
