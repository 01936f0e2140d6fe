"""Chunked evaluation into a preallocated output, and the automatic chunk size."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from warpbio.fold.config import InferenceOptions, ModelConfig  # noqa: E402
from warpbio.fold.model.chunking import (  # noqa: E402
    FREE_FRACTION,
    TargetShapes,
    chunked,
    pick_chunk_size,
    predicted_peak_bytes,
)

CONFIG = ModelConfig()
SHAPES = TargetShapes(num_res=1000, num_msa=512, num_extra=1024)
FLOAT32 = InferenceOptions(num_recycle=3)  # the unoptimized path, the largest peak
FAST = InferenceOptions.fast(num_recycle=3)
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


def test_predicted_peak_grows_with_the_chunk_and_caps_at_whole():
    sizes = [predicted_peak_bytes(c, SHAPES, CONFIG, FLOAT32) for c in (1, 2, 8, 64, 400, 1024)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    whole = predicted_peak_bytes(None, SHAPES, CONFIG, FLOAT32)
    assert predicted_peak_bytes(1024, SHAPES, CONFIG, FLOAT32) == whole
    assert predicted_peak_bytes(5000, SHAPES, CONFIG, FLOAT32) == whole


@pytest.mark.parametrize("free_gib", [12, 16, 24])
def test_pick_chunk_size_is_the_largest_that_fits(free_gib):
    free = free_gib * GIB
    chunk = pick_chunk_size(SHAPES, CONFIG, free, FLOAT32)
    assert chunk is not None and 1 <= chunk < 1024

    def need(c):
        return predicted_peak_bytes(c, SHAPES, CONFIG, FLOAT32)

    assert need(chunk) <= FREE_FRACTION * free < need(chunk + 1)


def test_less_free_memory_smaller_chunk_and_whole_when_it_fits():
    chunks = [pick_chunk_size(SHAPES, CONFIG, g * GIB, FLOAT32) for g in (12, 16, 24)]
    assert chunks[0] < chunks[1] < chunks[2]
    assert pick_chunk_size(SHAPES, CONFIG, 10_000 * GIB, FLOAT32) is None
    assert pick_chunk_size(SHAPES, CONFIG, 1, FLOAT32) == 1  # nothing fits: the smallest chunk


def test_bfloat16_flash_allows_larger_chunks():
    free = 24 * GIB
    reference = pick_chunk_size(SHAPES, CONFIG, free, FLOAT32)
    fast = pick_chunk_size(SHAPES, CONFIG, free, FAST)
    assert fast is None or fast > reference


def test_4000_residues_on_an_80gb_card_get_at_least_the_measured_chunk():
    """benchmarks/results/fold-memory-2026-12-07d.md: 4,000 residues peaked at 19.0
    GiB with chunk 64 on an H100. The earlier per-op estimate (float32 full-size
    copies) gave chunk 11 there, and chunk 1 at 3,000 residues in 40 GB."""
    long = TargetShapes(num_res=4000, num_msa=512, num_extra=1024)
    chunk = pick_chunk_size(long, CONFIG, 78 * GIB, FAST)
    assert chunk is not None and chunk >= 64
    assert predicted_peak_bytes(64, long, CONFIG, FAST) < 30 * GIB
    shorter = TargetShapes(num_res=3000, num_msa=512, num_extra=1024)
    assert pick_chunk_size(shorter, CONFIG, 40 * GIB, FAST) >= 64


# --------------------------------------------------------------------------
# Model parts chunked over residues: the same numbers as whole tensors
# --------------------------------------------------------------------------

N_PART = 11  # chunks of 4 leave a remainder of 3


def randomized(module, seed=3):
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():  # gates and offsets away from their init
            parameter.add_(0.3 * torch.randn_like(parameter))
    return module.eval()


def relative(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def embedding_inputs(n=N_PART, seed=0):
    g = torch.Generator().manual_seed(seed)
    aatype = torch.randint(0, 20, (n,), generator=g)
    batch = {
        "aatype": aatype,
        "target_feat": torch.nn.functional.one_hot(aatype + 1, 22).float(),
        "msa_feat": torch.rand(3, n, 49, generator=g),
        "residue_index": torch.cat([torch.arange(n // 2), torch.arange(n - n // 2) + 60]),
    }
    prev = {
        "prev_pos": 8 * torch.randn(n, 37, 3, generator=g),
        "prev_msa_first_row": torch.randn(n, CONFIG.msa_channel, generator=g),
        "prev_pair": torch.randn(n, n, CONFIG.pair_channel, generator=g),
    }
    return batch, prev


@pytest.mark.parametrize("chunk_size", [1, 4, 5])
@torch.no_grad()
def test_input_embedding_in_row_chunks_matches_whole(chunk_size):
    from warpbio.fold.model.embedders import Embedder

    embedder = randomized(Embedder(CONFIG))
    batch, prev = embedding_inputs()
    msa, pair = embedder.input_embedding(batch, prev)
    msa_chunked, pair_chunked = embedder.input_embedding(batch, prev, chunk_size)
    assert torch.equal(msa_chunked, msa)
    torch.testing.assert_close(pair_chunked, pair, rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_initial_prev_pair_is_a_broadcast_zero_with_the_same_embedding():
    from warpbio.fold.model.alphafold import AlphaFold
    from warpbio.fold.model.embedders import Embedder

    model = AlphaFold(CONFIG.with_depth(1))
    prev = model.initial_prev(N_PART, torch.zeros(1))
    assert prev["prev_pair"].stride() == (0, 0, 0) and not prev["prev_pair"].any()
    embedder = randomized(Embedder(CONFIG))
    batch, _ = embedding_inputs()
    zeros = {**prev, "prev_pair": torch.zeros(N_PART, N_PART, CONFIG.pair_channel)}
    expected = embedder.input_embedding(batch, zeros)[1]
    torch.testing.assert_close(embedder.input_embedding(batch, prev, 4)[1], expected)


def structure_inputs(n=N_PART, seed=1):
    g = torch.Generator().manual_seed(seed)
    single = torch.randn(n, 384, generator=g)
    pair = torch.randn(n, n, CONFIG.pair_channel, generator=g)
    seq_mask = torch.ones(n)
    seq_mask[-2:] = 0  # padded residues: masked keys
    return single, pair, seq_mask, torch.randint(0, 20, (n,), generator=g)


@pytest.mark.parametrize("chunk_size", [1, 4, 5])
@torch.no_grad()
def test_invariant_point_attention_in_query_chunks_matches_whole(chunk_size):
    from warpbio.fold.config import StructureConfig
    from warpbio.fold.model.structure import StructureModule, quat_to_rot

    module = randomized(StructureModule(StructureConfig(), 384, CONFIG.pair_channel))
    ipa, norm = module.fold_iteration.invariant_point_attention, module.pair_layer_norm
    single, pair, seq_mask, _ = structure_inputs()
    rot = quat_to_rot(torch.nn.functional.normalize(torch.randn(N_PART, 4), dim=-1))
    trans, mask = 5 * torch.randn(N_PART, 3), seq_mask[:, None]
    whole = ipa(single, norm(pair), mask, rot, trans)
    # one query row is a matrix-vector product: rounding apart, as the model tests
    assert relative(ipa(single, norm(pair), mask, rot, trans, chunk_size), whole) < 1e-5
    # the pair normalized chunk by chunk (the structure module's chunked path)
    assert relative(ipa(single, pair, mask, rot, trans, chunk_size, norm), whole) < 1e-5


@pytest.mark.parametrize("chunk_size", [4, 5])
@torch.no_grad()
def test_structure_module_in_query_chunks_matches_whole(chunk_size):
    """In float64: eight random layers amplify float32 rounding by orders of magnitude
    and by a CPU-dependent amount (chunks of 4 rows moved float32 atoms 2.7e-3 A on an
    AMD EPYC, under 1e-3 A on a Xeon), so the chunked path's arithmetic is checked where
    rounding cannot hide a wrong mask or remainder: it agrees to 1e-10 A there."""
    from warpbio.fold.config import StructureConfig
    from warpbio.fold.model.structure import StructureModule

    torch.manual_seed(0)
    module = StructureModule(StructureConfig(), 384, CONFIG.pair_channel).eval().double()
    inputs = [t.double() if t.is_floating_point() else t for t in structure_inputs()]
    whole = module(*inputs)
    out = module(*inputs, chunk_size)
    torch.testing.assert_close(out["act"], whole["act"], rtol=1e-10, atol=1e-10)
    for key in ("traj", "final_atom_positions"):
        torch.testing.assert_close(out[key], whole[key], rtol=1e-10, atol=1e-9)


def test_expectations_in_row_chunks_match_whole(monkeypatch):
    from warpbio.fold.model import heads

    g = torch.Generator().manual_seed(2)
    logits = 3 * torch.randn(10, 10, 64, generator=g)
    breaks = torch.linspace(0.0, 31.0, 63)
    weights = torch.ones(10)
    pae, _ = heads.predicted_aligned_error(logits, breaks)
    ptm = heads.predicted_tm_score(logits, breaks, weights)
    monkeypatch.setattr(heads, "EXPECTATION_ROWS", 3)  # chunks 3, 3, 3, 1
    assert torch.equal(heads.predicted_aligned_error(logits, breaks)[0], pae)
    assert torch.equal(heads.predicted_tm_score(logits, breaks, weights), ptm)
    centers = heads._error_bin_centers(breaks)
    assert torch.equal(pae, (torch.softmax(logits, -1) * centers).sum(-1))


def test_linear_adds_its_bias_in_place_only_when_that_is_the_same_sum():
    from warpbio.fold.model.primitives import Linear

    layer = randomized(Linear(8, 5))
    x = torch.randn(4, 8)
    expected = torch.matmul(x, layer.weights) + layer.bias
    with torch.no_grad():
        assert torch.equal(layer(x), expected)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bfloat16 product + float32 bias
            assert layer(x).dtype == torch.float32
    assert torch.equal(layer(x), expected) and layer(x).requires_grad


# --------------------------------------------------------------------------
# Live activation bytes extrapolated to long targets (tests/fold/memory_trace.py)
# --------------------------------------------------------------------------


def test_chunked_fast_path_peak_extrapolates_well_under_an_h100(monkeypatch):
    """The benchmark's memory options (fast, chunk 16 here) on a short target: no
    activation grows faster than N^2 and none is bigger than a float32 pair; the
    peak of the same op sequence at 4,000 residues stays far below 80 GiB, and the
    cost model's figure agrees with it."""
    from fold.memory_trace import trace
    from warpbio.fold.config import InferenceOptions
    from warpbio.fold.cost import Workload, live_tensor_bytes
    from warpbio.fold.model import heads
    from warpbio.fold.model.alphafold import AlphaFold

    n, target, chunk = 52, 4000, 16  # 52: no channel count is a multiple of it
    monkeypatch.setattr(heads, "EXPECTATION_ROWS", chunk)  # else one chunk at 52 rows
    torch.manual_seed(0)
    model = AlphaFold(CONFIG.with_depth(1)).eval()
    features = synthetic_features(n, clusters=20, extra=24)
    options = InferenceOptions.fast(num_recycle=1, auto_chunk=False, chunk_size=chunk)
    tracker = trace(model, features, options, n, (target,))
    allocs = tracker.peaks[target][1]
    assert max(a.power for a in tracker.peak_allocs) <= 2
    assert max(a.at(target) for a in allocs) <= target**2 * CONFIG.pair_channel * 4
    peak = tracker.peak_at(target)
    assert peak < 26 * GIB, f"{peak / GIB:.1f} GiB"
    workload = Workload.from_options(target, 20, 24, 1, options)
    modelled = sum(v for k, v in live_tensor_bytes(workload).items() if k != "parameters")
    assert modelled == pytest.approx(peak, rel=0.1)


def synthetic_features(n, clusters, extra, seed=0):
    """Features in the engine's layout (one recycle stack), as benchmarks/fold.py."""
    import numpy as np

    rng = np.random.default_rng(seed)
    aatype = rng.integers(0, 20, n)
    msa_feat = np.zeros((1, clusters, n, 49), np.float32)
    msa_feat[..., :23] = np.eye(23, dtype=np.float32)[rng.integers(0, 23, (clusters, n))]
    return {
        "aatype": aatype.astype(np.int32),
        "target_feat": np.eye(22, dtype=np.float32)[aatype + 1],
        "seq_mask": np.ones(n, np.float32),
        "residue_index": np.arange(n, dtype=np.int32),
        "msa_feat": msa_feat,
        "msa_mask": np.ones((1, clusters, n), np.float32),
        "bert_mask": np.zeros((1, clusters, n), np.float32),
        "true_msa": np.zeros((1, clusters, n), np.int32),
        "extra_msa": rng.integers(0, 22, (1, extra, n)).astype(np.int32),
        "extra_has_deletion": np.zeros((1, extra, n), np.float32),
        "extra_deletion_value": np.zeros((1, extra, n), np.float32),
        "extra_msa_mask": np.ones((1, extra, n), np.float32),
    }
