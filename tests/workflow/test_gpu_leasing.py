"""GPU leases through real Snakemake: --resources gpu=2, a pool of 4 fake ids."""

import json
from itertools import combinations
from pathlib import Path

import pytest
from conftest import run_snakemake

from warpbio.device import lease_gpus

pytestmark = pytest.mark.workflow

SNAKEFILE = Path(__file__).parent / "gpu_lease" / "Snakefile"
POOL = ["0", "1", "2", "3"]


def test_concurrent_jobs_get_distinct_gpus_and_kill_leaks_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    lock_dir = tmp_path / "leases"
    done = run_snakemake(
        tmp_path,
        *("--cores", "8", "--resources", "gpu=2", "--keep-going"),
        *("--config", f"gpus={POOL}", f"gpu_lease_dir={lock_dir}", "hold_seconds=1.5"),
        snakefile=SNAKEFILE,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, "killed_job must fail"
    assert "killed_job" in output

    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "records").glob("job*.json"))]
    assert len(records) == 8
    for record in records:
        assert record["visible"] == ",".join(record["ids"])
        assert record["omp_threads"] == "1"  # BLAS pools sized to the job's threads
        assert len(record["ids"]) == record["granted"]
        assert len(set(record["ids"])) == len(record["ids"]) and set(record["ids"]) <= set(POOL)
    overlapping = 0
    for a, b in combinations(records, 2):
        if a["start"] < b["end"] and b["start"] < a["end"]:
            overlapping += 1
            assert set(a["ids"]).isdisjoint(b["ids"]), (a, b)
    assert overlapping >= 2, "jobs must have run concurrently for the test to mean anything"
    # never more GPUs in use at once than Snakemake's gpu=2 allows
    for record in records:
        moment = record["start"] + 1e-3
        in_use = sum(r["granted"] for r in records if r["start"] <= moment < r["end"])
        assert in_use <= 2

    # the SIGKILLed job held 2 GPUs: all 4 must be free again
    lease = lease_gpus(4, pool=POOL, lock_dir=lock_dir, timeout=5)
    assert sorted(lease.ids) == POOL
    lease.release()
