"""Jobs killed with SIGKILL mid-write, and jobs that run out of memory.

A killed job skips every clean-up, so what protects the results is that outputs
are renamed into place only when complete (warpbio.io.atomic_write) and that
Snakemake marks a job's outputs incomplete until it finishes. The reruns here
must end with outputs identical to the uninterrupted demo (the session's
``finished_demo``).
"""

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import SNAKEFILE, run_snakemake, snakemake_executable, write_config

from warpbio.device import gpu_available
from warpbio.genotype.pca import PackedStandardizedMatrix
from warpbio.reproduce import output_checksums

pytestmark = pytest.mark.workflow

GENOTYPES = Path("results/genotype/demo")
TEMPORARY_BED = re.compile(r"^\.simulated\.tmp-(\d+)\.bed$")


def start_demo(workdir: Path, config: dict) -> subprocess.Popen:
    configfile = write_config(workdir, config)
    command = [snakemake_executable(), "--snakefile", str(SNAKEFILE), "-d", str(workdir)]
    return subprocess.Popen(
        [*command, "--cores", "2", "--configfile", str(configfile)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(condition, run: subprocess.Popen, timeout: float = 300.0):
    """Poll ``condition`` every 2 ms until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.poll() is None:
        found = condition()
        if found:
            return found
        time.sleep(0.002)
    return None


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants, as a node failure would."""
    try:
        parent = psutil.Process(pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=30)


def temporary_bed(workdir: Path):
    folder = workdir / GENOTYPES
    if folder.is_dir():
        for entry in os.scandir(folder):
            match = TEMPORARY_BED.match(entry.name)
            if match:
                return int(match.group(1)), Path(entry.path)
    return None


def test_job_killed_mid_write_leaves_no_output_and_the_rerun_matches(finished_demo, tmp_path):
    """SIGKILL the simulator while it streams its .bed; Snakemake stays alive."""
    reference, config = finished_demo
    for attempt in range(3):  # the .bed takes a few hundred ms to write
        workdir = tmp_path / f"try{attempt}"
        workdir.mkdir()
        run = start_demo(workdir, config)
        caught = wait_for(lambda workdir=workdir: temporary_bed(workdir), run)
        if caught:
            pid, half_written = caught
            os.kill(pid, signal.SIGKILL)
            output, _ = run.communicate(timeout=600)
            break
        run.communicate(timeout=600)
    else:
        pytest.fail("never caught the simulator writing its .bed in three runs")

    assert run.returncode != 0, output
    assert "genotype_simulate" in output and "Error" in output
    # nothing at the declared outputs; only the killed writer's temporary is left
    assert not (workdir / GENOTYPES / "simulated.bed").exists()
    assert not (workdir / GENOTYPES / "provenance/simulate.provenance.json").exists()
    assert half_written.exists()

    run_snakemake(workdir, "--cores", "2", "--configfile", str(workdir / "config.yaml"))
    assert not half_written.exists()
    log = (workdir / "logs/genotype/simulate/demo.log").read_text()
    assert "left by a writer that was killed" in log
    assert output_checksums(workdir / "results") == output_checksums(reference / "results")


def test_run_killed_after_a_partial_write_is_not_trusted_until_rerun(finished_demo, tmp_path):
    """SIGKILL Snakemake and its job once the .bed is in place but the rest is not
    (as a node failure would): the complete-looking .bed must not be trusted."""
    reference, config = finished_demo
    provenance = GENOTYPES / "provenance/simulate.provenance.json"

    def bed_but_no_provenance(workdir):
        bed = workdir / GENOTYPES / "simulated.bed"
        return bed.exists() and not (workdir / provenance).exists()

    for attempt in range(3):
        workdir = tmp_path / f"try{attempt}"
        workdir.mkdir()
        run = start_demo(workdir, config)
        if wait_for(lambda workdir=workdir: bed_but_no_provenance(workdir), run):
            kill_tree(run.pid)
            run.communicate(timeout=60)
            if bed_but_no_provenance(workdir):
                break
        else:
            kill_tree(run.pid)
            run.communicate(timeout=60)
    else:
        pytest.fail("never caught the simulator between its .bed and its provenance")

    configfile = str(workdir / "config.yaml")
    run_snakemake(workdir, "--unlock", "--cores", "1", "--configfile", configfile)
    refused = run_snakemake(workdir, "--cores", "2", "--configfile", configfile, check=False)
    assert refused.returncode != 0
    message = refused.stdout + refused.stderr
    assert "IncompleteFilesException" in message and "simulated.bed" in message

    run_snakemake(workdir, "--cores", "2", "--rerun-incomplete", "--configfile", configfile)
    assert output_checksums(workdir / "results") == output_checksums(reference / "results")


OOM_SNAKEFILE = Path(__file__).parent / "oom_retry" / "Snakefile"


def oom_job_inputs():
    path = OOM_SNAKEFILE.parent / "scripts" / "gram_inputs.py"
    spec = importlib.util.spec_from_file_location("gram_inputs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.packed_genotypes(8192, 4000)


@pytest.mark.parametrize(
    "backend",
    [
        "cpu",
        pytest.param(
            "gpu",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU and CuPy"),
            ],
        ),
    ],
)
def test_out_of_memory_is_retried_with_smaller_blocks(tmp_path, monkeypatch, backend):
    """The first attempt's 8192-SNP blocks exceed the job's memory (CPU: an address
    space cap; GPU: CuPy's pool limit); the retries halve them until the pass fits,
    and the result is the full-memory one."""
    kind = {"cpu": "host", "gpu": "GPU"}[backend]
    monkeypatch.setenv("CUPY_GPU_MEMORY_LIMIT", str(300 * 2**20))
    done = run_snakemake(
        tmp_path,
        *("--cores", "1", "--retries", "3", "--config", f"backend={backend}"),
        snakefile=OOM_SNAKEFILE,
    )
    output = done.stdout + done.stderr
    assert f"rule gram ran out of {kind} memory on attempt 1" in output
    assert "warpbio.runner.OutOfMemoryError" in output
    record = json.loads((tmp_path / "gram.provenance.json").read_text())
    assert record["attempt"] >= 2
    assert record["extra"]["block_snps"] == 8192 >> (record["attempt"] - 1)

    packed, table, vectors = oom_job_inputs()
    expected = PackedStandardizedMatrix(packed, table, 4000).gram_times(vectors)
    np.testing.assert_allclose(np.load(tmp_path / "gram.npy"), expected, rtol=1e-4)
