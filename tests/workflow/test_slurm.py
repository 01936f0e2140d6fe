"""The demo DAG on a real SLURM cluster (localhost) through profiles/slurm.

A single-node cluster (tests/workflow/slurm_cluster.py) is started for this
module and stopped after it; skipped with the reason where SLURM cannot start,
unless WARPBIO_REQUIRE_SLURM is set (CI sets it once it has installed SLURM).
Every job must go through sbatch with the cpus, memory, runtime and GPUs its
rule requests (checked in slurmctld's records), and the outputs must equal the
local run's.
"""

import json
import os
import re
import subprocess
from itertools import combinations
from pathlib import Path

import pytest
from conftest import REPO, SNAKEFILE, planned_jobs, snakemake_executable, write_config

from warpbio.reproduce import output_checksums

from .slurm_cluster import PARTITION, ClusterUnavailableError, start_cluster

pytestmark = pytest.mark.workflow

PROFILE = REPO / "profiles" / "slurm"
# The plugin's defaults poll every 40 s and up to 180 s; 2 s keeps the test short.
FAST_POLLING = (
    "--slurm-status-command",
    "squeue",  # no accounting database here, so no sacct
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-keep-successful-logs",
)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except ClusterUnavailableError as error:
        if os.environ.get("WARPBIO_REQUIRE_SLURM"):
            pytest.fail(f"WARPBIO_REQUIRE_SLURM is set but SLURM cannot start: {error}")
        pytest.skip(f"SLURM cannot start here: {error}")
    yield cluster
    cluster.stop()


def submit(cluster, workdir: Path, *args: str, snakefile: Path = SNAKEFILE, env=None):
    """Snakemake through profiles/slurm, as a user on a login node would run it."""
    environment = {
        k: v for k, v in cluster.env.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))
    }
    environment["SLURM_CONF"] = cluster.env["SLURM_CONF"]
    environment.update(env or {})
    command = [
        snakemake_executable(),
        *("--snakefile", str(snakefile), "-d", str(workdir), "--profile", str(PROFILE)),
        *FAST_POLLING,
        *args,
    ]
    done = subprocess.run(
        command, cwd=workdir, env=environment, capture_output=True, text=True, timeout=900
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{output[-6000:]}\n{cluster.logs()}"
    return output


def rule_blocks(text: str, indent: str = "") -> list[tuple[str, dict]]:
    """(Snakemake job id, request) of each rule block printed at ``indent``: the rule,
    threads, mem_mb, runtime and gpu as Snakemake asked for them."""
    blocks = []
    pattern = rf"^{indent}rule (\w+):\n((?:{indent}    .*\n)+)"
    for rule, body in re.findall(pattern, text, flags=re.M):
        resources = re.search(r"^\s*resources: (.*)$", body, flags=re.M).group(1)
        values = dict(re.findall(r"(\w+)=([^,\s]+)", resources))
        threads = re.search(r"^\s*threads: (\d+)$", body, flags=re.M)
        jobid = re.search(r"^\s*jobid: (\d+)$", body, flags=re.M).group(1)
        request = {
            "rule": rule,
            "threads": int(threads.group(1)) if threads else 1,
            "mem_mb": int(values["mem_mb"]),
            "runtime": int(values["runtime"]),
            "gpu": int(values.get("gpu", 0)),
        }
        blocks.append((jobid, request))
    return blocks


def submitted_jobs(output: str) -> dict[str, dict]:
    """Snakemake's own account of each submission: SLURM job id -> its request.

    A job of a rule ``group:`` goes in as a group job (a uuid for an id; its rules
    printed indented under "Group job NAME", after a blank line on the console): its
    request is its one member's. Group jobs are matched to their headers in print
    order, which is safe here because every group of the demo is one fold_predict job
    with the same resources.
    """
    planned = dict(rule_blocks(output))
    groups = []
    header = r"^(?:\[[^\]]*\] )?Group job (\w+) \(jobs in lexicogr\. order\):\n((?:(?:    .*)?\n)+)"
    for _, body in re.findall(header, output, flags=re.M):
        members = rule_blocks(body, indent="    ")
        assert len(members) == 1, f"a group job of {len(members)} jobs: {body}"
        groups.append(members[0][1])
    jobs = {}
    submitted = r"Job (\S+) has been submitted with SLURM jobid (\d+)"
    for jobid, slurm_id in re.findall(submitted, output):
        jobs[slurm_id] = planned[jobid] if jobid.isdigit() else groups.pop(0)
    assert not groups, f"group jobs never submitted: {groups}"
    return jobs


def minutes(limit: str) -> int:
    """SLURM's [days-]hours:minutes:seconds in minutes."""
    days, _, clock = limit.rpartition("-")
    hours, mins, _ = (int(part) for part in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + mins


def slurm_records(cluster, output: str) -> dict[str, dict]:
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    return {job["JobId"]: job for job in cluster.jobs() if job.get("JobName") == run_id}


def test_demo_through_slurm_requests_each_rules_resources_and_matches_the_local_run(
    slurm, finished_demo, tmp_path
):
    reference, config = finished_demo
    workdir = tmp_path / "demo"
    workdir.mkdir()
    configfile = write_config(workdir, config)
    cache = tmp_path / "cache"
    cache.mkdir()
    # every rule of the demo DAG must go through sbatch ("all" is a local rule)
    expected_rules = set(planned_jobs(workdir, configfile)) - {"all"}
    output = submit(
        slurm,
        workdir,
        "--configfile",
        str(configfile),
        env={"SNAKEMAKE_OUTPUT_CACHE": str(cache)},
    )

    requested = submitted_jobs(output)
    records = slurm_records(slurm, output)
    assert {job["rule"] for job in requested.values()} == expected_rules
    # every job Snakemake submitted is a SLURM job of this run, and nothing else is
    assert set(requested) == set(records)
    for job_id, want in requested.items():
        got = records[job_id]
        rule = want["rule"]
        assert got["JobState"] == "COMPLETED" and got["ExitCode"] == "0:0", (rule, got)
        assert got["Partition"] == PARTITION
        assert got["Comment"].startswith(f"rule_{rule}"), (rule, got["Comment"])
        assert int(got["NumCPUs"]) == want["threads"], rule
        assert got["MinMemoryNode"] == f"{want['mem_mb']}M", rule
        assert minutes(got["TimeLimit"]) == want["runtime"], rule
        assert "gres:gpu" not in got.get("TresPerJob", ""), rule  # CPU backend here
        # the job id is in the executor's log path, as the plugin reports it
        assert list((workdir / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log")), rule
    # the rules' own declarations (threads: 16, mem_mb 8000, runtime 120) reached sbatch
    pca = next(records[i] for i, job in requested.items() if job["rule"] == "genotype_pca")
    assert (pca["NumCPUs"], pca["MinMemoryNode"], pca["TimeLimit"]) == ("16", "8000M", "02:00:00")

    assert output_checksums(workdir / "results") == output_checksums(reference / "results")
    # the profile's between-workflow cache worked from inside the SLURM jobs
    stored = {path.name.split("_", 1)[1] for path in cache.iterdir()}
    assert {"bed.bed", "h5ad.h5ad"} <= stored


def test_gpu_rules_get_distinct_slurm_assigned_gpus(slurm, tmp_path):
    output = submit(slurm, tmp_path, snakefile=Path(__file__).parent / "slurm_gpu" / "Snakefile")
    requested = submitted_jobs(output)
    records = slurm_records(slurm, output)
    assert len(requested) == 3 and set(requested) == set(records)
    for job_id, want in requested.items():
        got = records[job_id]
        assert got["JobState"] == "COMPLETED"
        assert got["TresPerJob"] == f"gres:gpu:{want['gpu']}"  # sbatch --gpus=N
        assert (int(got["NumCPUs"]), got["MinMemoryNode"], got["TimeLimit"]) == (
            2,
            "1500M",
            "00:07:00",
        )

    jobs = [json.loads(p.read_text()) for p in sorted((tmp_path / "records").glob("*.json"))]
    assert len(jobs) == 3
    for job in jobs:
        # the runner kept the ids SLURM assigned (no lock files under SLURM)
        assert job["visible"] == ",".join(job["ids"])
        assert len(job["ids"]) == job["granted"]
        assert set(job["ids"]) <= {"0", "1", "2", "3"}
    overlapping = [
        (a, b) for a, b in combinations(jobs, 2) if a["start"] < b["end"] and b["start"] < a["end"]
    ]
    for a, b in overlapping:
        assert set(a["ids"]).isdisjoint(b["ids"]), (a, b)
