import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
SHARED_DATA = REPO.parent / "shared" / "data"


def snakemake_executable() -> str:
    beside = Path(sys.executable).with_name("snakemake")
    found = str(beside) if beside.exists() else shutil.which("snakemake")
    if not found:
        pytest.skip("snakemake is not installed in this environment")
    return found


def run_snakemake(workdir: Path, *args: str, snakefile: Path = SNAKEFILE, check: bool = True):
    """Real Snakemake in a subprocess, from ``workdir``; returns CompletedProcess."""
    command = [snakemake_executable(), "--snakefile", str(snakefile), "-d", str(workdir), *args]
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({done.returncode}):\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
        )
    return done


def planned_jobs(workdir, configfile) -> dict[str, int]:
    """Rule -> job count of a dry run (empty when nothing is to be done)."""
    done = run_snakemake(workdir, "-n", "--cores", "2", "--configfile", str(configfile))
    text = done.stdout + done.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    return {
        rule: int(count)
        for rule, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)
        if rule != "total"
    }


@pytest.fixture
def demo_config():
    return load_demo_config()


def load_demo_config() -> dict:
    """config/config.yaml, with the fold demo's shipped inputs as absolute paths, so
    that the demo runs from any working directory."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    fold = config["fold"]
    fold["fasta"] = str(REPO / fold["fasta"])
    fold["msa"]["files"] = {k: str(REPO / v) for k, v in fold["msa"]["files"].items()}
    return config


def write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def finished_demo(tmp_path_factory):
    """The demo DAG run once locally on 2 cores, shared by the workflow tests that
    read it (outputs, report, reruns) or compare other runs with it (reproduce,
    SLURM, fault tolerance). Tests must not change its results."""
    config = load_demo_config()
    workdir = tmp_path_factory.mktemp("demo")
    configfile = write_config(workdir, config)
    run_snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    return workdir, config


def assert_negative_count_refused(done, workdir: Path) -> None:
    """singlecell_preprocess of dataset 'bad' (a -2 count) failed clearly and left nothing."""
    assert done.returncode != 0
    results = workdir / "results/singlecell/bad"
    assert (results / "ingested.h5ad").exists()
    assert not (results / "preprocessed.h5ad").exists()
    assert not (results / "qc/filtering.tsv").exists()
    assert not list(results.rglob(".*tmp-*"))
    log = (workdir / "logs/singlecell/preprocess/bad.log").read_text()
    assert "ingested.h5ad: 1 negative or invalid count(s), first -2.0 in cell" in log
    assert "raw UMI counts" in log
