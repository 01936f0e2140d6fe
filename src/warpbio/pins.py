"""Pinned package lists of the workflow's environments, from an installed environment.

``warpbio pin-envs`` writes ``workflow/envs/<env>.pip.pin.txt`` for every env
file whose packages are all installed here: each package the env names (conda
names mapped to their pip distributions) and everything they require, at the
versions installed, as a pip requirements file. A publication rerun installs
exactly those versions with ``pip install -r``.

These are pip pins, not conda pins: where they were made, conda channels could
not be reached. Snakemake's conda integration uses a different file,
``<env>.linux-64.pin.txt`` (``conda list --explicit --md5``), when it exists;
the header of each pip pin file says how to make that one. Env files with a
package that is not installed here (the GPU envs on a CPU machine) are skipped
with the reason; run the command on a machine that has them.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import yaml

ENVS = Path(__file__).resolve().parents[2] / "workflow" / "envs"
# conda package -> pip distributions that provide it (the first installed one wins);
# an empty tuple: conda-only (CUDA toolkit pins, the RAPIDS meta-package, Python itself)
CONDA_TO_PIP: dict[str, tuple[str, ...]] = {
    "python": (),
    "cuda-version": (),
    "rapids": (),
    "pytorch-gpu": ("torch",),
    "pytorch-cpu": ("torch",),
    "pytorch": ("torch",),
    "dask-core": ("dask",),
    "cupy": ("cupy-cuda13x", "cupy-cuda12x", "cupy"),
    "coin-or-cbc": (),  # a conda binary; pip's pulp bundles its own CBC
}


class PinError(RuntimeError):
    """An env file that cannot be pinned from this environment."""


def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def conda_package_names(env_file: Path) -> list[str]:
    """Package names of an env file's dependencies (version specs stripped)."""
    env = yaml.safe_load(env_file.read_text())
    names = []
    for spec in env.get("dependencies", []):
        if isinstance(spec, str):
            names.append(spec.split("::")[-1].split()[0].split("=")[0].split(">")[0].split("<")[0])
    return names


def installed(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def pip_roots(env_file: Path) -> list[metadata.Distribution]:
    """Installed distributions for the env file's packages; PinError names the absent."""
    roots, absent = [], []
    for name in conda_package_names(env_file):
        candidates = CONDA_TO_PIP.get(name, (name,))
        if not candidates:
            continue
        found = next((d for d in map(installed, candidates) if d is not None), None)
        if found is None:
            absent.append(name)
        else:
            roots.append(found)
    if absent:
        raise PinError(
            f"{env_file.name}: {', '.join(absent)} not installed here; run "
            "`warpbio pin-envs` where they are (the GPU machine for gpu.yaml)"
        )
    return roots


def requirement_closure(roots: list[metadata.Distribution]) -> dict[str, str]:
    """Every installed distribution the roots need (no extras), name -> version."""
    from packaging.requirements import Requirement

    pinned: dict[str, str] = {}
    names: dict[str, str] = {}
    pending = list(roots)
    while pending:
        dist = pending.pop()
        key = _canonical(dist.metadata["Name"])
        if key in pinned:
            continue
        pinned[key] = dist.version
        names[key] = dist.metadata["Name"]
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            needed = installed(requirement.name)
            if needed is not None:
                pending.append(needed)
    return {names[key]: pinned[key] for key in sorted(pinned)}


def pin_text(env_file: Path, versions: dict[str, str]) -> str:
    stem = env_file.stem
    header = [
        f"# Pins for workflow/envs/{env_file.name}, from the resolved pip environment",
        f"# (`warpbio pin-envs`, {time.strftime('%Y-%m-%d')}, Python "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}).",
        "# Conda channels were not reachable where this was made, so these are pip pins:",
        f"#   pip install -r workflow/envs/{stem}.pip.pin.txt",
        "# True conda pins, which snakemake --sdm conda then uses by itself:",
        f"#   conda env create -n warpbio-{stem} -f workflow/envs/{env_file.name}",
        f"#   conda list -n warpbio-{stem} --explicit --md5 > "
        f"workflow/envs/{stem}.linux-64.pin.txt",
    ]
    return "\n".join(header + [f"{name}=={version}" for name, version in versions.items()]) + "\n"


def pin_env(env_file: Path) -> Path:
    versions = requirement_closure(pip_roots(env_file))
    target = env_file.with_name(f"{env_file.stem}.pip.pin.txt")
    target.write_text(pin_text(env_file, versions))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warpbio pin-envs", description=__doc__.splitlines()[0])
    parser.add_argument("envs", nargs="*", help="env names (default: every workflow/envs/*.yaml)")
    parser.add_argument("--dir", type=Path, default=ENVS, help="folder of the env files")
    args = parser.parse_args(argv)
    files = [args.dir / f"{name}.yaml" for name in args.envs] or sorted(args.dir.glob("*.yaml"))
    skipped = 0
    for env_file in files:
        try:
            print(f"wrote {pin_env(env_file)}")
        except PinError as error:
            skipped += 1
            print(f"skipped {error}", file=sys.stderr)
    return 1 if args.envs and skipped else 0
