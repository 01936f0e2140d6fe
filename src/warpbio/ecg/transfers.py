"""Count device-to-host copies with the CUDA profiler (CUPTI, through torch.profiler).

CUPTI records every memory copy any library in the process makes (CuPy,
Numba, PyTorch), including the small ones hidden in a host-side ``if`` on a
device value, a ``len()`` of a boolean-masked array or a ``.item()``. The
pipeline runs its device stages inside :func:`count_device_to_host` and
reports how many copies went device -> host; on the GPU path that must be 0.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class TransferCount:
    device_to_host: int = 0
    device_to_host_bytes: int = 0
    host_to_device: int = 0
    kernels: int = 0  # device kernels seen: shows the profiler was really recording
    copies: list[str] = field(default_factory=list)


def count_trace(trace: dict) -> TransferCount:
    """Copies and kernels in a Chrome trace exported by torch.profiler (Kineto)."""
    count = TransferCount()
    for event in trace.get("traceEvents", []):
        category = str(event.get("cat", "")).lower()
        name = str(event.get("name", ""))
        if category == "kernel":
            count.kernels += 1
        elif category == "gpu_memcpy":
            if "DtoH" in name:
                count.device_to_host += 1
                count.device_to_host_bytes += int(event.get("args", {}).get("bytes", 0) or 0)
                count.copies.append(name)
            elif "HtoD" in name:
                count.host_to_device += 1
    return count


@contextmanager
def count_device_to_host() -> Iterator[TransferCount]:
    """Profile the block's CUDA activity; the yielded count is filled when it ends."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    result = TransferCount()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        yield result
        torch.cuda.synchronize()
    handle, path = tempfile.mkstemp(suffix=".json")
    os.close(handle)
    try:
        profiler.export_chrome_trace(path)
        with open(path) as trace:
            counted = count_trace(json.load(trace))
    finally:
        os.unlink(path)
    result.__dict__.update(counted.__dict__)
