import os
import signal
import subprocess
import sys
import time

import pytest

from warpbio import device
from warpbio.device import DeviceError, lease_gpus, resolve_backend

POOL = ["0", "1", "2", "3"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_backend_resolution(monkeypatch):
    monkeypatch.setattr(device, "gpu_available", lambda: False)
    assert resolve_backend("cpu") == "cpu"
    assert resolve_backend("auto") == "cpu"
    with pytest.raises(DeviceError, match="backend 'gpu' was requested"):
        resolve_backend("gpu")
    with pytest.raises(DeviceError, match="not one of auto, cpu, gpu"):
        resolve_backend("cuda")
    monkeypatch.setattr(device, "gpu_available", lambda: True)
    assert resolve_backend("auto") == "gpu"
    assert resolve_backend("gpu") == "gpu"
    assert resolve_backend("cpu") == "cpu"


def test_gpu_not_available_when_devices_hidden(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device.gpu_available() is False
    assert device.discover_gpu_pool() == []


def test_pool_bounded_by_inherited_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert device.discover_gpu_pool() == ["2", "3"]


def test_leases_are_distinct_and_exported(tmp_path):
    first = lease_gpus(2, pool=POOL, lock_dir=tmp_path, timeout=1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(first.ids)
    second = lease_gpus(2, pool=POOL, lock_dir=tmp_path, timeout=1)
    assert set(first.ids).isdisjoint(second.ids)
    assert sorted(first.ids + second.ids) == POOL
    with pytest.raises(DeviceError, match="no 1 free GPU"):
        lease_gpus(1, pool=POOL, lock_dir=tmp_path, timeout=0.3)
    first.release()
    third = lease_gpus(2, pool=POOL, lock_dir=tmp_path, timeout=1)
    assert sorted(third.ids) == sorted(first.ids)
    second.release()
    third.release()


def test_lease_waits_for_a_release(tmp_path):
    holder = lease_gpus(4, pool=POOL, lock_dir=tmp_path, timeout=1)
    child = subprocess.Popen(
        [sys.executable, "-c", _LEASE_AND_REPORT.format(lock_dir=str(tmp_path), count=1)],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    assert child.poll() is None, "the child must wait while all GPUs are held"
    holder.release()
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0
    assert out.strip() in POOL


def test_request_larger_than_pool(tmp_path):
    with pytest.raises(DeviceError, match="pool has 4"):
        lease_gpus(5, pool=POOL, lock_dir=tmp_path)
    with pytest.raises(DeviceError, match="twice"):
        lease_gpus(1, pool=["0", "0"], lock_dir=tmp_path)


def test_zero_gpus_hides_devices(tmp_path):
    lease = lease_gpus(0, pool=POOL, lock_dir=tmp_path)
    assert lease.ids == []
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_slurm_ids_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    lease = lease_gpus(2, pool=POOL, lock_dir=tmp_path)
    assert lease.ids == ["5", "7"] and lease.source == "slurm"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,7"
    assert not list(tmp_path.iterdir()), "no lock files under SLURM"
    with pytest.raises(DeviceError, match="granted 2 GPU"):
        lease_gpus(3, pool=POOL, lock_dir=tmp_path)


_LEASE_AND_REPORT = """
from warpbio.device import lease_gpus
lease = lease_gpus({count}, pool=["0", "1", "2", "3"], lock_dir={lock_dir!r}, timeout=30)
print(",".join(lease.ids), flush=True)
"""

_LEASE_AND_HANG = _LEASE_AND_REPORT + "import time; time.sleep(600)\n"


def test_sigkill_does_not_leak_the_lease(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", _LEASE_AND_HANG.format(lock_dir=str(tmp_path), count=4)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "0,1,2,3"
    with pytest.raises(DeviceError):
        lease_gpus(1, pool=POOL, lock_dir=tmp_path, timeout=0.3)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    lease = lease_gpus(4, pool=POOL, lock_dir=tmp_path, timeout=5)
    assert sorted(lease.ids) == POOL
    lease.release()


def test_cli_lease_holds_gpus_for_the_command(tmp_path):
    script = (
        "import os, sys, time; print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); "
        "sys.stdin.readline()"
    )
    child = subprocess.Popen(
        [
            *(sys.executable, "-m", "warpbio.cli", "lease", "--gpus", "3"),
            *("--pool", ",".join(POOL), "--lock-dir", str(tmp_path), "--"),
            *(sys.executable, "-c", script),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    ids = child.stdout.readline().strip().split(",")
    assert len(ids) == 3 and set(ids) <= set(POOL)
    with pytest.raises(DeviceError):
        lease_gpus(2, pool=POOL, lock_dir=tmp_path, timeout=0.3)
    child.communicate("\n", timeout=30)
    assert child.returncode == 0
    lease_gpus(4, pool=POOL, lock_dir=tmp_path, timeout=5).release()
