"""Length buckets (warpbio.fold.model.buckets): padded targets predict what the
unpadded ones do, padded residues leak nowhere, and torch.compile of the blocks
compiles once per bucket."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from warpbio.fold import residue_constants as rc  # noqa: E402
from warpbio.fold.config import InferenceOptions, ModelConfig  # noqa: E402
from warpbio.fold.model import buckets  # noqa: E402
from warpbio.fold.model.alphafold import AlphaFold  # noqa: E402

N_RES, BUCKET = 20, 32


def recycle_batches(n=N_RES, msa_depth=8, extra_depth=12, recycles=3, seed=0):
    """The engine's own per-recycle batches (features pipeline, as predict builds
    them) of a random target, plus the atom tables of its residues."""
    from warpbio.fold import features as ft
    from warpbio.fold.inference import to_device
    from warpbio.fold.msa import Msa

    rng = np.random.default_rng(seed)
    letters = np.array(list(rc.RESTYPES))
    query = "".join(rng.choice(letters, n))
    rows = [query]
    for _ in range(msa_depth + extra_depth):
        rows.append("".join(np.where(rng.random(n) < 0.3, rng.choice(letters, n), list(query))))
    msa = Msa(
        rows, [list(rng.integers(0, 3, n)) for _ in rows], [f"s{i}" for i in range(len(rows))]
    )
    config = ft.FeatureConfig(
        max_msa_clusters=msa_depth, max_extra_msa=extra_depth, num_recycle=recycles
    )
    features = ft.build_features(query, msa, config, seed)
    batches = []
    for r in range(recycles + 1):
        batch = to_device(ft.recycle_batch(features, r), torch.device("cpu"))
        aatype = batch["aatype"]
        batch["atom37_atom_exists"] = torch.as_tensor(rc.RESTYPE_ATOM37_MASK)[aatype]
        batch["atom14_atom_exists"] = torch.as_tensor(rc.RESTYPE_ATOM14_MASK)[aatype]
        batch["residx_atom37_to_atom14"] = torch.as_tensor(rc.RESTYPE_ATOM37_TO_ATOM14)[aatype]
        batches.append(batch)
    return batches


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AlphaFold(ModelConfig().with_depth(2)).eval()


def predict(model, batches, num_recycle=3, options=None):
    options = options or InferenceOptions(num_recycle=num_recycle)
    return model.predict(lambda r: batches[r % len(batches)], options)


def test_bucket_length():
    assert buckets.bucket_length(20, (64, 32, 128)) == 32
    assert buckets.bucket_length(32, (32, 64)) == 32
    assert buckets.bucket_length(200, (32, 64)) == 200  # none large enough
    assert buckets.bucket_length(20, ()) == 20
    # a multiple applies where no bucket holds the target; a bucket wins over it
    assert buckets.bucket_length(93, (), 16) == 96
    assert buckets.bucket_length(96, (), 16) == 96
    assert buckets.bucket_length(200, (32, 64), 16) == 208
    assert buckets.bucket_length(20, (24,), 16) == 24


def test_pad_batch_masks_the_padding():
    batch = recycle_batches(recycles=0)[0]
    batch["num_alignments"] = torch.tensor(21)
    padded = buckets.pad_batch(batch, BUCKET)
    assert set(padded) == set(batch)
    assert padded["num_alignments"] is batch["num_alignments"]
    for key, value in batch.items():
        if value.ndim == 0:
            continue
        axes, fill = buckets.FEATURE_PADDING[key]
        out = padded[key]
        assert out.dtype == value.dtype, key
        assert [out.shape[a] for a in axes] == [BUCKET] * len(axes), key
        real = tuple(slice(0, s) for s in value.shape)
        assert torch.equal(out[real], value), key
        tail = (slice(None),) * axes[0] + (slice(N_RES, None),)
        assert (out[tail] == fill).all(), key
    assert (padded["aatype"][N_RES:] == rc.UNK_INDEX).all()
    for mask in ("seq_mask", "msa_mask", "extra_msa_mask"):
        assert padded[mask][..., N_RES:].sum() == 0


def test_pad_batch_refuses_what_it_cannot_pad():
    batch = recycle_batches(recycles=0)[0]
    with pytest.raises(ValueError, match="cannot pad"):
        buckets.pad_batch(batch, N_RES - 1)
    with pytest.raises(ValueError, match="template_aatype"):
        buckets.pad_batch({**batch, "template_aatype": torch.zeros(1, N_RES)}, BUCKET)
    same = buckets.pad_batch(batch, N_RES)
    assert all(same[k] is batch[k] for k in batch)


def differences(a, b):
    sa, sb = a["structure_module"], b["structure_module"]
    return {
        "atoms": (sa["final_atom_positions"] - sb["final_atom_positions"]).abs().max().item(),
        "plddt": (a["plddt"] - b["plddt"]).abs().max().item(),
        "pae": (a["predicted_aligned_error"] - b["predicted_aligned_error"]).abs().max().item(),
        "ptm": abs(float(a["ptm"] - b["ptm"])),
        "mean_plddt": abs(float(a["mean_plddt"] - b["mean_plddt"])),
    }


def test_padded_prediction_matches_unpadded(model):
    """Same real-residue outputs up to float32 rounding of other matrix shapes
    (measured: atoms ~1e-4 A, pLDDT ~1e-5, PAE ~3e-5 after 3 recycles)."""
    batches = recycle_batches()
    plain = predict(model, batches)
    padded = predict(model, [buckets.pad_batch(b, BUCKET) for b in batches])
    assert padded["plddt"].shape == (BUCKET,)
    cropped = buckets.crop_outputs(padded, N_RES)
    diff = differences(cropped, plain)
    print("padded vs unpadded:", diff)
    assert diff["atoms"] < 1e-3
    assert diff["plddt"] < 1e-4
    assert diff["pae"] < 1e-3
    assert diff["ptm"] < 1e-5 and diff["mean_plddt"] < 1e-4
    torch.testing.assert_close(
        cropped["structure_module"]["final_atom_mask"],
        plain["structure_module"]["final_atom_mask"],
    )
    # padded residues are unknown type: no atoms
    assert padded["structure_module"]["final_atom_mask"][N_RES:].sum() == 0


def test_padded_residues_leak_nowhere(model):
    """Random values in every padded position (masks kept 0) change no real
    output: the padding is masked in every module, not merely small."""
    generator = torch.Generator().manual_seed(7)
    batches = [buckets.pad_batch(b, BUCKET) for b in recycle_batches(recycles=1)]
    noisy = []
    for batch in batches:
        batch = dict(batch)
        for key, value in batch.items():
            if value.ndim == 0 or key.endswith("mask") or key == "seq_mask":
                continue
            axis = buckets.FEATURE_PADDING[key][0][0]
            value = value.clone()
            tail = value.narrow(axis, N_RES, BUCKET - N_RES)
            if value.is_floating_point():
                tail.copy_(3 * torch.rand(tail.shape, generator=generator))
            else:
                tail.copy_(torch.randint(0, 14, tail.shape, generator=generator))
            batch[key] = value
        noisy.append(batch)
    clean = buckets.crop_outputs(predict(model, batches, 1), N_RES)
    dirty = buckets.crop_outputs(predict(model, noisy, 1), N_RES)
    diff = differences(clean, dirty)
    assert max(diff.values()) <= 1e-6, diff


def test_crop_outputs_crops_every_residue_axis(model):
    batch = buckets.pad_batch(recycle_batches(recycles=0)[0], BUCKET)
    with torch.no_grad():
        out = model(batch)
    cropped = buckets.crop_outputs(out, N_RES)
    for path, axes in buckets.OUTPUT_RESIDUE_AXES.items():
        node_in, node_out = out, cropped
        for part in path.split("/"):
            if isinstance(node_in, torch.Tensor):
                break  # "predicted_aligned_error": confidence() put the PAE map there
            node_in, node_out = node_in[part], node_out[part]
        else:
            for axis in range(node_in.ndim):
                want = N_RES if axis in axes else node_in.shape[axis]
                assert node_out.shape[axis] == want, (path, axis)
    assert cropped["ptm"] is out["ptm"]
    with pytest.raises(ValueError, match="extra/thing"):
        buckets.crop_outputs({"extra": {"thing": torch.zeros(3)}}, 2)


def small_model():
    torch.manual_seed(1)
    config = dataclasses.replace(ModelConfig().with_depth(2), extra_msa_stack_num_block=1)
    return AlphaFold(config).eval()


def test_compile_model_off_leaves_the_model():
    model = small_model()
    assert buckets.compile_model(model, InferenceOptions()) is model
    blocks = model.alphafold_iteration.evoformer.evoformer_iteration
    assert "forward" not in blocks[0].__dict__
    # compiled, then asked for an unoptimized run: the eager forward comes back
    buckets.compile_model(model, InferenceOptions(compile=True), backend="aot_eager")
    assert "forward" in blocks[0].__dict__
    buckets.compile_model(model, InferenceOptions())
    assert "forward" not in blocks[0].__dict__


def test_compile_model_compiles_once_per_bucket():
    """Dynamo tracing, guards and recompiles are what compile_model controls; the
    aot_eager backend keeps it to seconds. (Inductor on this CPU took ~65 s for
    one bucket on 2 shared cores: it runs in the GPU test below.)"""
    from torch._dynamo.utils import counters

    model = small_model()
    options = InferenceOptions(num_recycle=1, compile=True, length_buckets=(24, 32))
    targets = [(20, 0), (18, 1), (30, 2)]  # buckets 24, 24, 32
    batches = {
        seed: [buckets.pad_batch(b, buckets.bucket_length(n, options.length_buckets)) for b in
               recycle_batches(n, recycles=1, seed=seed)]
        for n, seed in targets
    }  # fmt: skip
    eager = {seed: predict(model, batches[seed], 1) for _, seed in targets}
    assert buckets.compile_model(model, options, backend="aot_eager") is model
    before = counters["stats"]["unique_graphs"]
    graphs = []
    for _, seed in targets:
        out = predict(model, batches[seed], options=options)
        graphs.append(counters["stats"]["unique_graphs"] - before)
        diff = differences(out, eager[seed])
        assert diff["atoms"] < 1e-3 and diff["plddt"] < 1e-4, diff
    # one graph per block kind (extra-MSA, Evoformer) and bucket; none for 18 in 24
    assert graphs == [2, 2, 4]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and PyTorch-CUDA")
def test_cuda_inductor_compile_matches_eager():
    torch.backends.cuda.matmul.allow_tf32 = False
    model = small_model().cuda()
    options = InferenceOptions(num_recycle=1, compile=True, length_buckets=(32,))
    cuda_batches = [
        {k: v.cuda() for k, v in buckets.pad_batch(b, BUCKET).items()}
        for b in recycle_batches(recycles=1)
    ]
    eager = predict(model, cuda_batches, 1)
    buckets.compile_model(model, options)
    compiled = predict(model, cuda_batches, options=options)
    diff = differences(compiled, eager)
    assert diff["atoms"] < 1e-2 and diff["plddt"] < 1e-2, diff
