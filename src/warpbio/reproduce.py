"""Rerun a finished workflow from scratch and compare every output's checksum.

``warpbio reproduce`` (``make reproduce``) is the check a reader of a paper can
run: it links the inputs of a finished working directory (everything but its
results, logs, benchmarks and Snakemake metadata) into an empty temporary
folder, runs the same Snakefile with the same config file there, and compares
the SHA-256 of every output file with the finished run's.

CPU outputs must be identical. GPU outputs are reported but do not fail the
check unless ``--strict-gpu``: cuBLAS and atomics may sum in another order from
run to run (the README says which steps). Provenance records and the summary
built from them hold times, hosts and memory peaks, so they are left out.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# Differ between runs by design: wall times, dates, hosts, memory peaks.
VOLATILE = ("*.provenance.json", "summary/*", "*/timings.json")
# What a run writes beside its results; not linked into the scratch folder.
RUN_STATE = (".snakemake", "logs", "benchmarks", "report.html", ".warpbio-reproduce")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_volatile(relative: str) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in VOLATILE)


def output_checksums(results: str | Path) -> dict[str, str]:
    """SHA-256 of every file under ``results`` by relative path (symlinks followed,
    so outputs served from Snakemake's cache count), volatile files left out."""
    root = Path(results)
    checksums = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not is_volatile(relative):
            checksums[relative] = _sha256(path)
    return checksums


def output_backends(results: str | Path) -> dict[str, str]:
    """Backend (cpu|gpu) that made each output, from the provenance records."""
    root = Path(results)
    backends = {}
    for record_path in root.rglob("*.provenance.json"):
        record = json.loads(record_path.read_text())
        for output in record.get("outputs", []):
            backends[_relative_output(output["path"], root)] = record.get("backend", "cpu")
    return backends


def _relative_output(path: str, root: Path) -> str:
    """Records name outputs from the working directory (results/x/...)."""
    parts = Path(path).parts
    if root.name in parts:
        return Path(*parts[parts.index(root.name) + 1 :]).as_posix()
    return Path(path).as_posix()


@dataclass
class Comparison:
    identical: list[str] = field(default_factory=list)
    differ: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the first run only
    extra: list[str] = field(default_factory=list)  # in the rerun only
    backends: dict[str, str] = field(default_factory=dict)

    def failures(self, strict_gpu: bool = False) -> list[str]:
        bad = [p for p in self.differ if strict_gpu or self.backends.get(p, "cpu") != "gpu"]
        return sorted(bad + self.missing + self.extra)

    def lines(self) -> list[str]:
        out = [f"identical: {len(self.identical)} outputs"]
        for label, paths in (("DIFFER", self.differ), ("MISSING", self.missing)):
            out += [f"{label}: {p} ({self.backends.get(p, 'cpu')})" for p in paths]
        out += [f"EXTRA in the rerun: {p}" for p in self.extra]
        return out


def compare_results(first: str | Path, second: str | Path) -> Comparison:
    before, after = output_checksums(first), output_checksums(second)
    comparison = Comparison(backends=output_backends(first))
    for path, checksum in before.items():
        if path not in after:
            comparison.missing.append(path)
        elif after[path] == checksum:
            comparison.identical.append(path)
        else:
            comparison.differ.append(path)
    comparison.extra = sorted(set(after) - set(before))
    return comparison


def link_inputs(workdir: Path, scratch: Path, results_name: str) -> None:
    """Symlink the workdir's entries (inputs, config, resources) into ``scratch``,
    leaving out the results and what a run writes beside them."""
    skipped = {results_name, *RUN_STATE}
    for entry in workdir.iterdir():
        if entry.name not in skipped:
            (scratch / entry.name).symlink_to(entry.resolve())


def rerun(
    workdir: Path,
    configfile: Path,
    snakefile: Path,
    scratch: Path,
    cores: int,
    extra: list[str],
) -> subprocess.CompletedProcess:
    config = yaml.safe_load(configfile.read_text()) or {}
    results_name = Path(config.get("results", "results")).name
    link_inputs(workdir, scratch, results_name)
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(scratch),
        "--cores",
        str(cores),
        "--configfile",
        str(configfile),
        "--config",
        "results=results",
        *extra,
    ]
    return subprocess.run(command, cwd=scratch, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warpbio reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("."), help="finished run")
    parser.add_argument(
        "--configfile",
        type=Path,
        default=None,
        help="config of the finished run (default: config/config.yaml)",
    )
    parser.add_argument(
        "--snakefile", type=Path, default=None, help="default: workflow/Snakefile of this checkout"
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--strict-gpu", action="store_true", help="fail on differing GPU outputs too"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("extra", nargs="*", help="more snakemake arguments, after --")
    args = parser.parse_args(argv)

    workdir = args.workdir.resolve()
    configfile = (args.configfile or workdir / "config" / "config.yaml").resolve()
    snakefile = args.snakefile or Path(__file__).resolve().parents[2] / "workflow" / "Snakefile"
    config = yaml.safe_load(configfile.read_text()) or {}
    finished = workdir / config.get("results", "results")
    if not finished.is_dir() or not any(finished.iterdir()):
        print(
            f"warpbio reproduce: no finished run at {finished}; run the workflow first (make demo)",
            file=sys.stderr,
        )
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="warpbio-reproduce-"))
    print(f"rerunning {configfile} from scratch in {scratch} ...", flush=True)
    done = rerun(workdir, configfile, snakefile.resolve(), scratch, args.cores, args.extra)
    if done.returncode != 0:
        print(done.stdout[-3000:] + done.stderr[-5000:], file=sys.stderr)
        print(f"warpbio reproduce: the rerun failed; its files are in {scratch}", file=sys.stderr)
        return 1
    comparison = compare_results(finished, scratch / "results")
    print("\n".join(comparison.lines()))
    failures = comparison.failures(args.strict_gpu)
    if not args.keep and not failures:
        shutil.rmtree(scratch, ignore_errors=True)
    if failures:
        print(
            f"warpbio reproduce: {len(failures)} outputs differ; the rerun is in {scratch}",
            file=sys.stderr,
        )
        return 1
    gpu_differ = len(comparison.differ)
    note = f" ({gpu_differ} GPU outputs differ, allowed)" if gpu_differ else ""
    print(f"reproduced: every CPU output identical{note}")
    return 0
