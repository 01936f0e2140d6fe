"""Module-by-module parity with the official AlphaFold2 JAX modules (CPU, float32).

Each test builds the reference module with random (perturbed) parameters, loads
those parameters into ours through the npz-layout loader, runs both on the same
random inputs and asks max |ours - reference| <= 1e-4 x max |reference|.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("haiku")
pytest.importorskip("alphafold.model.modules")
torch = pytest.importorskip("torch")

from alphafold.model import folding, modules, quat_affine  # noqa: E402

from fold.af2_reference import (  # noqa: E402
    atom_masks,
    reference_config,
    run_reference,
    small,
)
from warpbio.fold.config import StructureConfig  # noqa: E402
from warpbio.fold.model import evoformer, structure  # noqa: E402
from warpbio.fold.model.plan import Plan  # noqa: E402
from warpbio.fold.params import load_params  # noqa: E402

N_RES, N_SEQ = 16, 8
C_M, C_Z = 32, 16
RTOL = 1e-4

CFG = reference_config()
GC = CFG.model.global_config
EVO = CFG.model.embeddings_and_evoformer.evoformer


def assert_matches(ours, reference, rtol=RTOL, what="output"):
    ours = ours.detach().numpy() if hasattr(ours, "detach") else np.asarray(ours)
    reference = np.asarray(reference)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    diff = float(np.abs(ours - reference).max())
    scale = float(np.abs(reference).max())
    print(f"{what}: max|diff| {diff:.3g}, scale {scale:.3g}")
    assert diff <= rtol * scale, f"{what}: max|diff| {diff:.3g} > {rtol} x scale {scale:.3g}"
    return diff, scale


def random_inputs(seed=0):
    rng = np.random.default_rng(seed)
    msa = rng.standard_normal((N_SEQ, N_RES, C_M)).astype(np.float32)
    pair = rng.standard_normal((N_RES, N_RES, C_Z)).astype(np.float32)
    msa_mask = (rng.random((N_SEQ, N_RES)) > 0.1).astype(np.float32)
    seq_mask = np.ones(N_RES, np.float32)
    seq_mask[-2:] = 0  # padding
    pair_mask = seq_mask[:, None] * seq_mask[None, :]
    return msa, pair, msa_mask, pair_mask


def t(x):
    return torch.as_tensor(np.asarray(x))


def load(module, params, prefix):
    load_params(module, params, prefix=prefix)
    return module.eval()


@pytest.mark.parametrize("outgoing", [True, False], ids=["outgoing", "incoming"])
def test_triangle_multiplication(outgoing):
    name = f"triangle_multiplication_{'outgoing' if outgoing else 'incoming'}"
    config = small(EVO[name], num_intermediate_channel=24)
    _, pair, _, pair_mask = random_inputs()

    def fn(act, mask):
        return modules.TriangleMultiplication(config, GC, name=name)(act, mask)

    params, ref = run_reference(fn, pair, pair_mask)
    ours = load(evoformer.TriangleMultiplication(C_Z, 24, outgoing), params, name)
    assert_matches(ours(t(pair), t(pair_mask)), ref)


@pytest.mark.parametrize("per_column", [False, True], ids=["starting", "ending"])
def test_triangle_attention(per_column):
    name = f"triangle_attention_{'ending' if per_column else 'starting'}_node"
    _, pair, _, pair_mask = random_inputs(1)

    def fn(act, mask):
        return modules.TriangleAttention(EVO[name], GC, name=name)(act, mask)

    params, ref = run_reference(fn, pair, pair_mask)
    ours = load(evoformer.TriangleAttention(C_Z, 4, per_column), params, name)
    assert_matches(ours(t(pair), t(pair_mask)), ref)
    assert_matches(ours(t(pair), t(pair_mask), Plan(chunk_size=5)), ref, what="chunked")


def test_msa_row_attention_with_pair_bias():
    name = "msa_row_attention_with_pair_bias"
    msa, pair, msa_mask, _ = random_inputs(2)

    def fn(m, mm, p):
        return modules.MSARowAttentionWithPairBias(EVO[name], GC, name=name)(m, mm, p)

    params, ref = run_reference(fn, msa, msa_mask, pair)
    ours = load(evoformer.MsaRowAttentionWithPairBias(C_M, C_Z, 8), params, name)
    assert_matches(ours(t(msa), t(msa_mask), t(pair)), ref)


def test_msa_column_attention():
    name = "msa_column_attention"
    msa, _, msa_mask, _ = random_inputs(3)

    def fn(m, mm):
        return modules.MSAColumnAttention(EVO[name], GC, name=name)(m, mm)

    params, ref = run_reference(fn, msa, msa_mask)
    ours = load(evoformer.MsaColumnAttention(C_M, 8), params, name)
    assert_matches(ours(t(msa), t(msa_mask)), ref)


def test_msa_column_global_attention():
    name = "msa_column_global_attention"
    msa, _, msa_mask, _ = random_inputs(4)
    msa_mask[:, 3] = 0  # a fully masked column

    def fn(m, mm):
        return modules.MSAColumnGlobalAttention(EVO["msa_column_attention"], GC, name=name)(m, mm)

    params, ref = run_reference(fn, msa, msa_mask)
    ours = load(evoformer.MsaColumnGlobalAttention(C_M, 8), params, name)
    assert_matches(ours(t(msa), t(msa_mask)), ref)


def test_outer_product_mean():
    name = "outer_product_mean"
    config = small(EVO[name], num_outer_channel=8, chunk_size=5)
    msa, _, msa_mask, _ = random_inputs(5)

    def fn(m, mm):
        return modules.OuterProductMean(config, GC, num_output_channel=C_Z, name=name)(m, mm)

    params, ref = run_reference(fn, msa, msa_mask)
    ours = load(evoformer.OuterProductMean(C_M, 8, C_Z), params, name)
    assert_matches(ours(t(msa), t(msa_mask)), ref)
    assert_matches(ours(t(msa), t(msa_mask), Plan(chunk_size=3)), ref, what="chunked")


@pytest.mark.parametrize("which", ["msa_transition", "pair_transition"])
def test_transition(which):
    msa, pair, msa_mask, pair_mask = random_inputs(6)
    act, mask = (msa, msa_mask) if which == "msa_transition" else (pair, pair_mask)

    def fn(a, m):
        return modules.Transition(EVO[which], GC, name=which)(a, m)

    params, ref = run_reference(fn, act, mask)
    ours = load(evoformer.Transition(act.shape[-1], 4), params, which)
    assert_matches(ours(t(act), t(mask)), ref)


SM = CFG.model.heads.structure_module


def random_frames(rng, n):
    quat = rng.standard_normal((n, 4)).astype(np.float32)
    quat /= np.linalg.norm(quat, axis=-1, keepdims=True)
    trans = (5 * rng.standard_normal((n, 3))).astype(np.float32)
    return quat, trans


def test_invariant_point_attention():
    rng = np.random.default_rng(7)
    c_s, c_z = SM.num_channel, 128
    single = rng.standard_normal((N_RES, c_s)).astype(np.float32)
    pair = rng.standard_normal((N_RES, N_RES, c_z)).astype(np.float32)
    mask = np.ones((N_RES, 1), np.float32)
    mask[-3:] = 0
    quat, trans = random_frames(rng, N_RES)

    def fn(s, p, m, q, tr):
        affine = quat_affine.QuatAffine(q, [tr[:, 0], tr[:, 1], tr[:, 2]])
        return folding.InvariantPointAttention(SM, GC)(s, p, m, affine)

    params, ref = run_reference(fn, single, pair, mask, quat, trans)
    ours = load(
        structure.InvariantPointAttention(StructureConfig(), c_z),
        params,
        "invariant_point_attention",
    )
    out = ours(t(single), t(pair), t(mask), structure.quat_to_rot(t(quat)), t(trans))
    assert_matches(out, ref)


def test_structure_module_atom_positions():
    rng = np.random.default_rng(8)
    aatype = rng.integers(0, 20, N_RES).astype(np.int32)
    single = rng.standard_normal((N_RES, 384)).astype(np.float32)
    pair = rng.standard_normal((N_RES, N_RES, 128)).astype(np.float32)
    seq_mask = np.ones(N_RES, np.float32)
    batch = {"aatype": aatype, "seq_mask": seq_mask, **atom_masks(aatype)}

    def fn(s, p, b):
        module = folding.StructureModule(SM, GC, compute_loss=True)
        return module({"single": s, "pair": p}, b, is_training=False)

    params, ref = run_reference(fn, single, pair, batch)
    ours = load(structure.StructureModule(StructureConfig(), 384, 128), params, "structure_module")
    out = ours(t(single), t(pair), t(seq_mask), t(aatype).long())
    positions = out["final_atom_positions"].detach().numpy()
    error = np.abs(positions - ref["final_atom_positions"]).max()
    assert error < 0.05, f"final atom positions differ by {error:.3g} A"
    assert_matches(out["final_atom_positions"], ref["final_atom_positions"], what="atom37")
    assert_matches(out["traj"], ref["traj"], what="backbone trajectory")
    assert_matches(out["act"], ref["representations"]["structure_module"], what="single act")
    assert_matches(out["angles_sin_cos"], ref["sidechains"]["angles_sin_cos"][-1], what="angles")
