"""Each inference switch against the unoptimized float32 path (CPU, seeded random
model): chunking, SDPA attention, in-place updates, fused projections and gates,
offload, bfloat16 autocast, early stopping, the automatic chunk size."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from warpbio.fold.config import InferenceOptions, ModelConfig  # noqa: E402
from warpbio.fold.model import evoformer, kernels  # noqa: E402
from warpbio.fold.model.alphafold import AlphaFold, ca_rms_change  # noqa: E402
from warpbio.fold.model.plan import Plan, make_plan  # noqa: E402
from warpbio.fold.model.primitives import Attention, GlobalAttention, mask_bias  # noqa: E402

N_RES, N_SEQ, N_EXTRA, BLOCKS, RECYCLES = 24, 8, 12, 2, 2
PADDING = 2  # padded residues: fully masked attention rows in the pair stack
F32_RTOL, ATOMS_TOL = 1e-5, 1e-3


def random_batch(n_res=N_RES, seed=0):
    g = torch.Generator().manual_seed(seed)
    aatype = torch.randint(0, 20, (n_res,), generator=g)
    seq_mask = torch.ones(n_res)
    seq_mask[n_res - PADDING :] = 0
    msa_mask = (torch.rand(N_SEQ, n_res, generator=g) > 0.1).float()
    msa_mask[0] = 1
    one_hot = torch.nn.functional.one_hot(torch.randint(0, 23, (N_SEQ, n_res), generator=g), 23)
    return {
        "aatype": aatype,
        "target_feat": torch.nn.functional.one_hot(aatype + 1, 22).float(),
        "msa_feat": torch.cat([one_hot.float(), torch.rand(N_SEQ, n_res, 26, generator=g)], -1),
        "seq_mask": seq_mask,
        "msa_mask": msa_mask * seq_mask,
        "residue_index": torch.arange(n_res),
        "extra_msa": torch.randint(0, 22, (N_EXTRA, n_res), generator=g),
        "extra_has_deletion": (torch.rand(N_EXTRA, n_res, generator=g) > 0.8).float(),
        "extra_deletion_value": torch.rand(N_EXTRA, n_res, generator=g),
        "extra_msa_mask": (torch.rand(N_EXTRA, n_res, generator=g) > 0.1).float() * seq_mask,
    }


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tensors this small gain nothing from threads, and shared CI cores make
    OpenMP threads wait on each other (seconds per forward instead of 0.1 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AlphaFold(ModelConfig().with_depth(BLOCKS)).eval()


@pytest.fixture(scope="module")
def batch():
    return random_batch()


@pytest.fixture(scope="module")
def reference(model, batch):
    return model.predict(lambda r: batch, InferenceOptions(num_recycle=RECYCLES))


def run(model, batch, **options):
    return model.predict(lambda r: batch, InferenceOptions(num_recycle=RECYCLES, **options))


def relative(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def atom_deviation(out, ref, batch) -> float:
    """Largest displacement (A) of an existing atom of an unpadded residue."""
    mask = ref["structure_module"]["final_atom_mask"] * batch["seq_mask"][:, None]
    moved = out["structure_module"]["final_atom_positions"]
    moved = (moved - ref["structure_module"]["final_atom_positions"]).norm(dim=-1)
    return float((moved * mask).max())


def ca_rmsd(out, ref, batch) -> float:
    ca = [o["structure_module"]["final_atom_positions"][:, 1] for o in (out, ref)]
    return ca_rms_change(ca[0], ca[1], batch["seq_mask"])


def radius_of_gyration(out, batch) -> float:
    ca = out["structure_module"]["final_atom_positions"][batch["seq_mask"] > 0, 1]
    return float(((ca - ca.mean(0)) ** 2).sum(-1).mean().sqrt())


def assert_float32_agrees(out, ref, batch, what):
    figures = {
        "pair": relative(out["prev"]["prev_pair"], ref["prev"]["prev_pair"]),
        "msa_first_row": relative(
            out["prev"]["prev_msa_first_row"], ref["prev"]["prev_msa_first_row"]
        ),
        "single": relative(out["representations"]["single"], ref["representations"]["single"]),
        "pae": relative(out["predicted_aligned_error"], ref["predicted_aligned_error"]),
    }
    atoms = atom_deviation(out, ref, batch)
    plddt = float((out["plddt"] - ref["plddt"]).abs().max())
    print(f"{what}: relative {figures}, atoms {atoms:.2e} A, pLDDT {plddt:.2e}")
    for name, value in figures.items():
        assert value <= F32_RTOL, f"{what}: {name} differs by {value:.3g} (relative)"
    assert atoms < ATOMS_TOL, f"{what}: atoms differ by {atoms:.3g} A"
    assert plddt < 1e-3
    assert out["recycles"] == ref["recycles"] == RECYCLES


# --------------------------------------------------------------------------
# Whole model, float32 switches
# --------------------------------------------------------------------------

FLOAT32_SWITCHES = {
    "chunk 5 (remainders 4, 3, 2)": dict(chunk_size=5),
    "chunk 1": dict(chunk_size=1),
    "sdpa": dict(attention="sdpa"),
    "sdpa chunk 7": dict(attention="sdpa", chunk_size=7),
    "flash": dict(attention="flash"),
    "flash fused chunk 7": dict(attention="flash", fused=True, chunk_size=7),
    "inplace": dict(inplace=True),
    "fused": dict(fused=True),
    "fused chunk 5": dict(fused=True, chunk_size=5),
    "offload": dict(offload=True),
    "all float32 switches": dict(
        chunk_size=5, attention="sdpa", fused=True, inplace=True, offload=True
    ),
}


@pytest.mark.parametrize("switches", FLOAT32_SWITCHES.values(), ids=FLOAT32_SWITCHES.keys())
def test_float32_switch_matches_reference(model, batch, reference, switches):
    assert_float32_agrees(run(model, batch, **switches), reference, batch, str(switches))


def test_fast_cpu_preset_is_float32_and_matches_reference(model, batch, reference):
    options = InferenceOptions.fast_cpu()
    assert options.precision == "float32" and options.attention == "sdpa"
    assert options.fused and options.inplace and not options.compile and options.chunk_size
    assert options.length_multiple == 16 and options.retain_host_memory  # predict()'s part
    switches = {k: v for k, v in options.__dict__.items() if k != "num_recycle"}
    assert_float32_agrees(run(model, batch, **switches), reference, batch, "fast_cpu")


def test_inplace_is_identical_to_out_of_place(model, batch, reference):
    """Same sums in the same order: equal to rounding noise at most (here: equal)."""
    out = run(model, batch, inplace=True)
    for key in ("prev_pair", "prev_msa_first_row", "prev_pos"):
        diff = float((out["prev"][key] - reference["prev"][key]).abs().max())
        print(f"inplace {key}: max |diff| {diff:.3g}")
        assert diff <= 1e-6 * float(reference["prev"][key].abs().max())


def test_auto_chunk_with_little_free_memory_matches_reference(model, batch, reference, caplog):
    options = InferenceOptions(num_recycle=RECYCLES, auto_chunk=True)
    tight = make_plan(options, model.config, batch, torch.device("cpu"), free_bytes=5 * 2**20)
    ample = make_plan(options, model.config, batch, torch.device("cpu"), free_bytes=2**40)
    assert ample.chunk_size is None
    assert tight.chunk_size is not None and tight.chunk_size < N_RES
    with caplog.at_level(logging.INFO, logger="warpbio.fold.model.plan"):
        make_plan(options, model.config, batch, torch.device("cpu"), free_bytes=5 * 2**20)
    assert f"chunk size {tight.chunk_size}" in caplog.text
    out = model.predict(lambda r: batch, options, plan=tight)
    assert_float32_agrees(out, reference, batch, f"auto chunk {tight.chunk_size}")


# --------------------------------------------------------------------------
# bfloat16 autocast and fast()
# --------------------------------------------------------------------------


def bfloat16_figures(out, ref, batch, what):
    figures = {
        "mean_plddt_diff": float(out["mean_plddt"] - ref["mean_plddt"]),
        "ca_rmsd": ca_rmsd(out, ref, batch),
        "radius_of_gyration": radius_of_gyration(ref, batch),
        "pair_relative_rms": float(
            (out["prev"]["prev_pair"] - ref["prev"]["prev_pair"]).norm()
            / ref["prev"]["prev_pair"].norm()
        ),
    }
    print(what, {k: round(v, 4) for k, v in figures.items()})
    return figures


@pytest.mark.parametrize(
    "options",
    [
        dict(precision="bfloat16"),
        dict(precision="bfloat16", bf16_streams=True),
        dict(InferenceOptions.fast().__dict__),
    ],
    ids=["bfloat16", "bf16-streams", "fast"],
)
def test_bfloat16_stacks_close_to_float32(options):
    """32 residues, one recycle. The stacks' bf16 rounding is ~0.4% per module;
    random parameters make the structure module amplify it: CA atoms of this
    model sit 10-60 A apart, and over seeds 0-5 the CA RMSD to float32 was 3-16%
    of the radius of gyration (seed 0, used here: about 4%); pLDDT moved < 0.05."""
    options = {**options, "num_recycle": 1}
    torch.manual_seed(0)
    model = AlphaFold(ModelConfig().with_depth(BLOCKS)).eval()
    batch = random_batch(n_res=32, seed=0)
    ref = model.predict(lambda r: batch, InferenceOptions(num_recycle=1))
    out = model.predict(lambda r: batch, InferenceOptions(**options))
    figures = bfloat16_figures(out, ref, batch, f"{options}:")
    assert abs(figures["mean_plddt_diff"]) < 0.5
    assert figures["ca_rmsd"] < 0.1 * figures["radius_of_gyration"]
    # bf16 was applied (not a float32 run) and stayed at bf16's rounding level
    assert 1e-4 < figures["pair_relative_rms"] < 5e-2
    # residual stream, structure module and heads in float32
    for tensor in (
        out["prev"]["prev_pair"],
        out["representations"]["msa"],
        out["representations"]["single"],
        out["structure_module"]["final_atom_positions"],
        out["predicted_lddt"]["logits"],
    ):
        assert tensor.dtype == torch.float32


# --------------------------------------------------------------------------
# Early stopping
# --------------------------------------------------------------------------


def test_early_stop_off_runs_every_recycle(model, batch, reference):
    out = run(model, batch, early_stop_tolerance=0.0)
    assert out["recycles"] == RECYCLES
    assert torch.equal(out["prev"]["prev_pos"], reference["prev"]["prev_pos"])


def test_early_stop_at_the_tolerance(model, batch):
    changes, positions = [], []

    def record(_r, out):
        positions.append(out["prev"]["prev_pos"][:, 1].clone())
        if len(positions) > 1:
            changes.append(ca_rms_change(positions[-1], positions[-2], batch["seq_mask"]))

    run_all = model.predict(lambda r: batch, InferenceOptions(num_recycle=3), on_recycle=record)
    assert run_all["recycles"] == 3 and len(changes) == 3
    print("CA RMS change per recycle (A):", [round(c, 3) for c in changes])

    # a tolerance above the first change stops after recycle 1 ...
    def stop_at(tolerance):
        options = InferenceOptions(num_recycle=3, early_stop_tolerance=tolerance)
        return model.predict(lambda r: batch, options)["recycles"]

    assert stop_at(changes[0] * 1.01) == 1
    # ... and one below every change runs them all
    assert stop_at(min(changes) * 0.99) == 3


# --------------------------------------------------------------------------
# Modules: chunking with remainders and masks, SDPA, fused projections
# --------------------------------------------------------------------------

C_M, C_Z, N_MOD, S_MOD = 32, 16, 11, 7


def module_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    msa = torch.randn(S_MOD, N_MOD, C_M, generator=g)
    pair = torch.randn(N_MOD, N_MOD, C_Z, generator=g)
    seq_mask = torch.ones(N_MOD)
    seq_mask[-2:] = 0
    msa_mask = (torch.rand(S_MOD, N_MOD, generator=g) > 0.2).float() * seq_mask
    msa_mask[:, 3] = 0  # a fully masked MSA column
    return msa, pair, msa_mask, seq_mask[:, None] * seq_mask[None, :]


def randomized(module):
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in module.parameters():  # gates and biases away from their init
            parameter.add_(0.3 * torch.randn_like(parameter))
    return module.eval()


MODULES = {
    "msa_row": lambda: evoformer.MsaRowAttentionWithPairBias(C_M, C_Z, 4),
    "msa_column": lambda: evoformer.MsaColumnAttention(C_M, 4),
    "msa_column_global": lambda: evoformer.MsaColumnGlobalAttention(C_M, 4),
    "msa_transition": lambda: evoformer.Transition(C_M, 4),
    "outer_product_mean": lambda: evoformer.OuterProductMean(C_M, 6, C_Z),
    "triangle_mult_out": lambda: evoformer.TriangleMultiplication(C_Z, 12, outgoing=True),
    "triangle_mult_in": lambda: evoformer.TriangleMultiplication(C_Z, 12, outgoing=False),
    "triangle_att_start": lambda: evoformer.TriangleAttention(C_Z, 4, per_column=False),
    "triangle_att_end": lambda: evoformer.TriangleAttention(C_Z, 4, per_column=True),
    "pair_transition": lambda: evoformer.Transition(C_Z, 4),
}


def call(name, module, plan):
    msa, pair, msa_mask, pair_mask = module_inputs()
    if name == "msa_row":
        return module(msa, msa_mask, pair, plan)
    if name.startswith("msa") or name == "outer_product_mean":
        return module(msa, msa_mask, plan)
    return module(pair, pair_mask, plan)


PLANS = {
    "chunk 1": Plan(chunk_size=1),
    "chunk 3": Plan(chunk_size=3),
    "chunk 4": Plan(chunk_size=4),
    "sdpa": Plan(attention="sdpa"),
    "sdpa chunk 4": Plan(attention="sdpa", chunk_size=4),
    "flash fused chunk 3": Plan(attention="flash", fused=True, chunk_size=3),
    "fused": Plan(fused=True),
    "fused chunk 3": Plan(fused=True, chunk_size=3),
    "inplace chunk 4": Plan(inplace=True, chunk_size=4),
}


@pytest.mark.parametrize("plan", PLANS.values(), ids=PLANS.keys())
@pytest.mark.parametrize("name", MODULES)
@torch.no_grad()
def test_module_matches_reference(name, plan):
    module = randomized(MODULES[name]())
    reference = call(name, module, Plan())
    out = call(name, module, plan)
    assert out.shape == reference.shape and torch.isfinite(out).all()
    assert relative(out, reference) <= 1e-5, f"{name}: {relative(out, reference):.3g}"


def attention_inputs(batch=5, q_len=6, channels=16, heads=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, q_len, channels, generator=g)
    mask = (torch.rand(batch, q_len, generator=g) > 0.3).float()
    mask[1] = 0  # every key masked: uniform weights in the reference
    mask[2, :-1] = 0  # a single key left
    return x, mask_bias(mask), torch.randn(heads, q_len, q_len, generator=g)


@pytest.mark.parametrize("pair_bias", [True, False], ids=["pair bias", "no pair bias"])
@pytest.mark.parametrize("chunk_size", [None, 2, 3])
@torch.no_grad()
def test_sdpa_matches_reference_attention(pair_bias, chunk_size):
    from warpbio.fold.model.chunking import chunked

    attention = randomized(Attention(16, 16, 16, 4))
    x, bias, nonbatched = attention_inputs()
    shared = [nonbatched if pair_bias else None]

    def rows(plan):
        return lambda act, b, nb: attention(act, act, b, nb, plan)

    reference = chunked(rows(Plan()), [x, bias], shared, None)
    out = chunked(rows(Plan(attention="sdpa")), [x, bias], shared, chunk_size)
    assert torch.isfinite(out).all()
    assert relative(out, reference) <= 1e-5
    # the fully masked row: the mean of the values, as the reference's uniform weights
    assert relative(out[1], reference[1]) <= 1e-5


@pytest.mark.parametrize("fused", [False, True], ids=["einsum", "fused"])
@pytest.mark.parametrize("pair_bias", [True, False], ids=["pair bias", "no pair bias"])
@torch.no_grad()
def test_flash_matches_reference_attention(pair_bias, fused):
    """attention="flash" (the gated-attention kernel's twin on the CPU; the Triton
    kernel itself is compared with the twin in test_kernels.py)."""
    attention = randomized(Attention(16, 16, 16, 4))
    x, bias, nonbatched = attention_inputs()
    nonbatched = nonbatched if pair_bias else None
    reference = attention(x, x, bias, nonbatched, Plan())
    out = attention(x, x, bias, nonbatched, Plan(attention="flash", fused=fused))
    assert relative(out, reference) <= 1e-5
    assert relative(out[1], reference[1]) <= 1e-5  # the fully masked row


@torch.no_grad()
def test_sdpa_keeps_the_callers_mask_bias():
    attention = randomized(Attention(16, 16, 16, 4))
    x, bias, _ = attention_inputs()
    before = bias.clone()
    attention(x, x, bias, None, Plan(attention="sdpa"))
    assert torch.equal(bias, before)


@torch.no_grad()
def test_fused_attention_cache_follows_parameter_changes():
    attention = randomized(Attention(16, 16, 16, 4))
    x, bias, nonbatched = attention_inputs()
    fused = Plan(fused=True)
    first = attention(x, x, bias, nonbatched, fused)
    attention.value_w.mul_(2.0)  # in place: the version counter moves
    changed = attention(x, x, bias, nonbatched, fused)
    assert relative(changed, attention(x, x, bias, nonbatched)) <= 1e-5
    assert relative(changed, first) > 1e-2
    attention.gating_w = torch.nn.Parameter(torch.randn_like(attention.gating_w))  # replaced
    replaced = attention(x, x, bias, nonbatched, fused)
    assert relative(replaced, attention(x, x, bias, nonbatched)) <= 1e-5


@torch.no_grad()
def test_fused_global_attention():
    attention = randomized(GlobalAttention(16, 16, 16, 4))
    x = torch.randn(5, 6, 16)
    mask = (torch.rand(5, 6) > 0.3).float()
    mask[0] = 0
    reference = attention(x, x, mask)
    assert relative(attention(x, x, mask, Plan(fused=True)), reference) <= 1e-5


# --------------------------------------------------------------------------
# The kernels' interface (PyTorch twins here)
# --------------------------------------------------------------------------


def test_sigmoid_gate():
    value, gate = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    mask = (torch.rand(3, 4) > 0.5).float()
    torch.testing.assert_close(kernels.sigmoid_gate(value, gate), value * torch.sigmoid(gate))
    torch.testing.assert_close(
        kernels.sigmoid_gate(value, gate, mask), value * torch.sigmoid(gate) * mask[..., None]
    )


@pytest.mark.parametrize("outgoing", [True, False], ids=["outgoing", "incoming"])
@torch.no_grad()
def test_triangle_multiplication_fused_returns_the_update(outgoing):
    module = randomized(evoformer.TriangleMultiplication(C_Z, 12, outgoing))
    _, pair, _, pair_mask = module_inputs(1)
    reference = module(pair, pair_mask)
    assert (
        relative(kernels.triangle_multiplication_fused(module, pair, pair_mask), reference) <= 1e-5
    )


# --------------------------------------------------------------------------
# Plumbing
# --------------------------------------------------------------------------


def test_plan_from_options(batch):
    config = ModelConfig().with_depth(BLOCKS)
    cpu = torch.device("cpu")
    assert make_plan(InferenceOptions(), config, batch, cpu) == Plan()
    plan = make_plan(InferenceOptions.fast(), config, batch, cpu, free_bytes=2**40)
    assert plan == Plan(
        chunk_size=None,
        attention="flash",
        fused=True,
        inplace=True,
        autocast_dtype=torch.bfloat16,
        stream_dtype=torch.bfloat16,
    )
    assert make_plan(InferenceOptions(chunk_size=6), config, batch, cpu).chunk_size == 6


def test_inference_predict_records_recycles_and_chunk(model):
    from warpbio.fold.features import PER_RECYCLE
    from warpbio.fold.inference import predict

    one = {key: value.numpy() for key, value in random_batch(seed=2).items()}
    one["bert_mask"] = one["true_msa"] = np.zeros_like(one["msa_mask"])  # unused by the model
    features = {  # two MSA samples, cycled through the four iterations
        key: np.stack([value, value[::-1].copy()]) if key in PER_RECYCLE else value
        for key, value in one.items()
    }
    options = InferenceOptions(num_recycle=3, auto_chunk=True, offload=True)
    result = predict(model, features, options, torch.device("cpu"), free_bytes=5 * 2**20)
    assert result["recycles_run"] == 3
    assert 1 <= result["timings"]["auto_chunk_size"] < N_RES
    assert [f"recycle_{i}" in result["timings"] for i in range(4)] == [True] * 4
    # padded with masked residues: the outputs come back cropped and equal
    real = one["seq_mask"] > 0  # the batch's own masked residues are arbitrary in both
    for padded_options in (  # to a bucket; to a multiple (the CPU preset's padding)
        replace(options, length_buckets=(N_RES + 8,)),
        replace(options, length_multiple=20, retain_host_memory=True),  # 24 -> 40
    ):
        padded = predict(model, features, padded_options, torch.device("cpu"), free_bytes=5 * 2**20)
        assert padded["atom_positions"].shape == result["atom_positions"].shape
        moved = padded["atom_positions"][real] - result["atom_positions"][real]
        assert np.abs(moved).max() < 1e-3
        assert np.abs(padded["plddt"][real] - result["plddt"][real]).max() < 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_offload_and_fast_match(batch):
    torch.manual_seed(0)
    model = AlphaFold(ModelConfig().with_depth(BLOCKS)).eval().cuda()
    gpu_batch = {k: v.cuda() for k, v in batch.items()}
    reference = model.predict(lambda r: gpu_batch, InferenceOptions(num_recycle=RECYCLES))
    offloaded = model.predict(lambda r: batch, InferenceOptions(num_recycle=RECYCLES, offload=True))
    assert_float32_agrees(offloaded, reference, gpu_batch, "cuda offload")
    sdpa = model.predict(
        lambda r: gpu_batch, InferenceOptions(num_recycle=RECYCLES, attention="sdpa", chunk_size=7)
    )
    assert_float32_agrees(sdpa, reference, gpu_batch, "cuda sdpa chunk 7")


def test_workflow_settings_build_the_options():
    """The schema fills fold.inference's defaults (the reference path), and the
    predict step turns the rule's params.inference into InferenceOptions."""
    from pathlib import Path

    utils = pytest.importorskip("snakemake.utils")
    from warpbio.fold.steps import inference_options

    schema = Path(__file__).parents[2] / "workflow" / "schemas" / "config.schema.yaml"
    config = {"fold": {"enabled": True}}
    utils.validate(config, str(schema))
    settings = {**config["fold"]["inference"], "num_recycle": config["fold"]["num_recycle"]}
    assert inference_options(settings) == InferenceOptions()
    config = {
        "fold": {
            "inference": {
                "chunk_size": 64,
                "auto_chunk": True,
                "precision": "bfloat16",
                "bf16_streams": True,
                "attention": "flash",
                "fused": True,
                "inplace": True,
                "early_stop_tolerance": 0.5,
                "offload": True,
            }
        }
    }
    utils.validate(config, str(schema))
    settings = {**config["fold"]["inference"], "num_recycle": 2}
    assert inference_options(settings) == InferenceOptions.fast(
        num_recycle=2, chunk_size=64, early_stop_tolerance=0.5, offload=True
    )
    # the README's CPU settings are the CPU preset
    cpu = {"chunk_size": 16, "attention": "sdpa", "fused": True, "inplace": True}
    cpu.update(length_multiple=16, retain_host_memory=True)
    utils.validate(config := {"fold": {"inference": cpu}}, str(schema))
    settings = {**config["fold"]["inference"], "num_recycle": 2}
    assert inference_options(settings) == InferenceOptions.fast_cpu(num_recycle=2)
    with pytest.raises(Exception, match="length_multiple"):
        utils.validate({"fold": {"inference": {"length_multiple": 0}}}, str(schema))
    with pytest.raises(Exception, match="bfloat8"):
        utils.validate({"fold": {"inference": {"precision": "bfloat8"}}}, str(schema))
