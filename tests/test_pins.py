"""Pinned exports of workflow/envs (warpbio pin-envs)."""

import re
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from warpbio.pins import CONDA_TO_PIP, PinError, pin_env, requirement_closure

ENVS = Path(__file__).resolve().parents[1] / "workflow" / "envs"


def pins(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.+\-]+", line) for line in lines), lines
    return {canonicalize_name(name): version for name, version in (x.split("==") for x in lines)}


def test_cpu_pins_cover_the_env_file_within_its_version_ranges():
    pinned = pins(ENVS / "cpu.pip.pin.txt")
    for spec in yaml.safe_load((ENVS / "cpu.yaml").read_text())["dependencies"]:
        name, constraint = re.match(r"([\w\-]+)(.*)", spec).groups()
        if CONDA_TO_PIP.get(name) == ():
            continue  # python itself
        if re.fullmatch(r"=[^=].*", constraint):  # conda's "=V": V or V.anything
            constraint = f"={constraint}.*"
        pip_names = [canonicalize_name(n) for n in CONDA_TO_PIP.get(name, (name,))]
        version = next(pinned[n] for n in pip_names if n in pinned)
        assert version in SpecifierSet(constraint), (name, version, constraint)
    # the packages those need come pinned too, not only the ones named
    assert {"python-dateutil", "tskit", "numcodecs"} <= set(pinned)
    header = (ENVS / "cpu.pip.pin.txt").read_text()
    assert "pip pins" in header and "conda list" in header and "--explicit" in header


def test_closure_follows_requirements_of_installed_packages():
    from importlib import metadata

    closure = {canonicalize_name(n) for n in requirement_closure([metadata.distribution("pandas")])}
    assert {"pandas", "numpy", "python-dateutil", "pytz"} <= closure


def test_env_with_a_package_missing_here_is_refused_by_name(tmp_path):
    env = tmp_path / "gpu.yaml"
    env.write_text("dependencies:\n  - numpy>=1.26\n  - surely-not-installed-pkg>=1\n")
    with pytest.raises(PinError, match="surely-not-installed-pkg not installed here"):
        pin_env(env)
    assert not (tmp_path / "gpu.pip.pin.txt").exists()
