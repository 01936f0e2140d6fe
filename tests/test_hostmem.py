import ctypes.util
import sys

import numpy as np
import pytest

from warpbio import hostmem


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or "libc.so" not in str(ctypes.util.find_library("c")),
    reason="glibc mallopt only",
)
def test_retain_freed_memory_sets_the_thresholds_once(monkeypatch):
    calls = []
    real = hostmem._mallopt()

    def recording():
        def mallopt(param, value):
            calls.append((param, value))
            return real(param, value)

        return mallopt

    monkeypatch.setattr(hostmem, "_retained", False)
    monkeypatch.setattr(hostmem, "_mallopt", recording)
    assert hostmem.retain_freed_memory() is True
    # mmap threshold before trim (trim alone would pin the threshold at 128 KiB)
    assert calls == [
        (hostmem.M_MMAP_THRESHOLD, hostmem.MMAP_THRESHOLD_MAX),
        (hostmem.M_TRIM_THRESHOLD, hostmem.TRIM_THRESHOLD),
    ]
    assert hostmem.retain_freed_memory() is True  # idempotent: no second call
    assert len(calls) == 2
    # allocations of every size still work and hold their values
    for size in (1000, 5 * 2**20, 40 * 2**20):
        block = np.full(size // 8, 3.0)
        assert block.sum() == 3.0 * (size // 8)


def test_retain_freed_memory_reports_a_refusal(monkeypatch, caplog):
    monkeypatch.setattr(hostmem, "_retained", False)
    monkeypatch.setattr(hostmem, "_mallopt", lambda: (lambda param, value: 0))
    assert hostmem.retain_freed_memory() is False
    assert "refused" in caplog.text
    monkeypatch.setattr(hostmem, "_mallopt", lambda: None)
    assert hostmem.retain_freed_memory() is False
    assert hostmem._retained is False
