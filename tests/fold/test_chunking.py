"""Chunked evaluation into a preallocated output, and the automatic chunk size."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from warpbio.fold.config import ModelConfig  # noqa: E402
from warpbio.fold.model.chunking import (  # noqa: E402
    TargetShapes,
    chunk_bytes,
    chunked,
    pick_chunk_size,
    working_set_bytes,
)

CONFIG = ModelConfig()
SHAPES = TargetShapes(num_res=1000, num_msa=512, num_extra=1024)
GIB = 2**30


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 7, 100])
def test_chunked_matches_whole_with_remainders(chunk_size):
    x = torch.randn(7, 5, 3)
    y = torch.randn(7, 5, 3)
    shared = torch.randn(3, 2)

    def fn(a, b, w):  # [i, 5, 3] -> [i, 5, 2]
        return (a * b) @ w

    whole = chunked(fn, [x, y], [shared], None)
    assert torch.equal(chunked(fn, [x, y], [shared], chunk_size), whole)


def test_chunked_joins_along_another_axis():
    left = torch.randn(4, 9, 2)  # chunked along axis 1, output rows along axis 0
    right = torch.randn(4, 6, 2)

    def rows(left_rows):
        return torch.einsum("sic,sjc->ij", left_rows, right)

    whole = rows(left)
    out = chunked(rows, [left], [], 4, dim=1, out_dim=0)
    assert out.shape == (9, 6)
    torch.testing.assert_close(out, whole, rtol=1e-6, atol=1e-6)


def test_chunk_bytes_grows_with_the_chunk_and_caps_at_whole():
    sizes = [chunk_bytes(c, SHAPES, CONFIG) for c in (1, 2, 8, 64, 400, 1024, 5000)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert chunk_bytes(1024, SHAPES, CONFIG) == chunk_bytes(None, SHAPES, CONFIG)
    # one row of MSA row attention logits: 8 heads x N x N floats x 3 copies
    assert chunk_bytes(1, SHAPES, CONFIG) == 8 * 1000 * 1000 * 4 * 3


@pytest.mark.parametrize("free_gib", [10, 12, 24, 96])
def test_pick_chunk_size_is_the_largest_that_fits(free_gib):
    free = free_gib * GIB
    chunk = pick_chunk_size(SHAPES, CONFIG, free)
    budget = 0.5 * (free - working_set_bytes(SHAPES, CONFIG))
    assert chunk is not None and 1 <= chunk < 1024
    assert chunk_bytes(chunk, SHAPES, CONFIG) <= budget < chunk_bytes(chunk + 1, SHAPES, CONFIG)


def test_less_free_memory_smaller_chunk_and_whole_when_it_fits():
    chunks = [pick_chunk_size(SHAPES, CONFIG, g * GIB) for g in (12, 24, 96)]
    assert chunks[0] < chunks[1] < chunks[2]
    assert pick_chunk_size(SHAPES, CONFIG, 10_000 * GIB) is None
    assert pick_chunk_size(SHAPES, CONFIG, 1) == 1  # nothing fits: the smallest chunk


def test_bfloat16_sdpa_allows_larger_chunks():
    free = 24 * GIB
    reference = pick_chunk_size(SHAPES, CONFIG, free)
    fast = pick_chunk_size(SHAPES, CONFIG, free, dtype_bytes=2, attention="sdpa")
    assert fast > reference
