"""The runner under faults: out-of-memory errors, retries' chunk sizes, killed writers."""

import os
from types import SimpleNamespace

import numpy as np
import pytest

from warpbio.io import atomic_write, remove_stale_temporaries, stale_temporaries
from warpbio.runner import OutOfMemoryError, StepContext, memory_exhausted, run_step


def error_from(module: str, name: str, base=RuntimeError, message="boom"):
    """An instance of an exception class that claims to live in ``module`` (as
    CuPy's and PyTorch's do), without importing that library."""
    cls = type(name, (base,), {"__module__": module})
    return cls(message)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (MemoryError("host"), "host"),
        (error_from("cupy.cuda.memory", "OutOfMemoryError", MemoryError), "GPU"),
        (error_from("torch", "OutOfMemoryError", RuntimeError, "CUDA out of memory."), "GPU"),
        (
            error_from(
                "cupy_backends.cuda.api.runtime",
                "CUDARuntimeError",
                RuntimeError,
                "cudaErrorMemoryAllocation: out of memory",
            ),
            "GPU",
        ),
        (
            error_from(
                "numba.cuda.cudadrv.driver",
                "CudaAPIError",
                RuntimeError,
                "[2] Call to cuMemAlloc results in CUDA_ERROR_OUT_OF_MEMORY",
            ),
            "GPU",
        ),
        (
            error_from(
                "jaxlib.xla_extension",
                "XlaRuntimeError",
                RuntimeError,
                "RESOURCE_EXHAUSTED: Out of memory while trying to allocate",
            ),
            "GPU",
        ),
        (ValueError("out of memory"), None),  # not an allocation failure of a GPU library
        (error_from("torch", "RuntimeError", RuntimeError, "shape mismatch"), None),
    ],
)
def test_memory_exhausted_recognises_host_and_gpu_allocation_failures(error, kind):
    assert memory_exhausted(error) == kind


def test_memory_exhausted_follows_the_cause_chain():
    try:
        try:
            raise MemoryError("inner")
        except MemoryError as inner:
            raise RuntimeError("wrapped by a library") from inner
    except RuntimeError as outer:
        assert memory_exhausted(outer) == "host"


class Outputs(list):
    """Snakemake's output namedlist: iterable, with names as attributes."""

    def __init__(self, **named):
        super().__init__(named.values())
        self.__dict__.update(named)


def job(tmp_path, attempt=1, **params):
    outputs = Outputs(
        table=str(tmp_path / "table.tsv"), provenance=str(tmp_path / "table.provenance.json")
    )
    return SimpleNamespace(
        rule="demo",
        log=[str(tmp_path / "demo.log")],
        input=[],
        output=outputs,
        params=SimpleNamespace(backend="cpu", **params),
        wildcards={},
        threads=1,
        resources=SimpleNamespace(attempt=attempt, gpu=0),
        config={},
    )


def test_out_of_memory_becomes_one_clear_error_and_leaves_no_output(tmp_path):
    def step(ctx):
        with atomic_write(ctx.output.table) as tmp:
            tmp.write_text("half")
            raise MemoryError("cannot allocate the decoded block")

    with pytest.raises(OutOfMemoryError, match=r"rule demo ran out of host memory on attempt 2"):
        run_step(job(tmp_path, attempt=2), step)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.log"]
    assert "--retries" in (tmp_path / "demo.log").read_text()


def test_attempt_reaches_the_step_and_its_provenance(tmp_path):
    seen = {}

    def step(ctx):
        seen["block"] = ctx.shrink(8192, minimum=64)
        with atomic_write(ctx.output.table) as tmp:
            tmp.write_text("x")

    run_step(job(tmp_path, attempt=3), step)
    assert seen["block"] == 2048
    record = (tmp_path / "table.provenance.json").read_text()
    assert '"attempt": 3' in record


@pytest.mark.parametrize(("attempt", "block"), [(1, 8192), (2, 4096), (4, 1024), (12, 64)])
def test_shrink_halves_per_attempt_down_to_the_minimum(attempt, block):
    ctx = StepContext(
        rule="r",
        input=[],
        output=[],
        params={},
        wildcards={},
        threads=1,
        backend="cpu",
        seed=None,
        lease=None,
        config={},
        attempt=attempt,
    )
    assert ctx.shrink(8192, minimum=64) == block


def test_stale_temporaries_of_a_killed_writer_are_found_and_removed(tmp_path):
    target = tmp_path / "counts.h5ad"
    killed = tmp_path / ".counts.tmp-4242.h5ad"
    killed.write_text("half")
    killed_dir = tmp_path / ".store.tmp-77.zarr"
    killed_dir.mkdir()
    (killed_dir / "chunk").write_text("1")
    unrelated = [tmp_path / ".counts.tmp-x.h5ad", tmp_path / ".other.tmp-1.h5ad"]
    for path in unrelated:
        path.write_text("keep")
    assert stale_temporaries(target) == [killed]
    removed = remove_stale_temporaries([target, tmp_path / "store.zarr"])
    assert removed == [killed, killed_dir]
    assert not killed.exists() and not killed_dir.exists()
    assert all(path.exists() for path in unrelated)


def test_run_step_removes_what_a_killed_attempt_left(tmp_path):
    stale = tmp_path / f".table.tmp-{os.getpid() + 1}.tsv"
    stale.write_text("half of a killed attempt")

    def step(ctx):
        with atomic_write(ctx.output.table) as tmp:
            tmp.write_text(str(np.arange(3)))

    run_step(job(tmp_path), step)
    assert not stale.exists()
    assert "left by a writer that was killed" in (tmp_path / "demo.log").read_text()
