"""The whole model in a 2-block configuration against the official JAX model
(AlphaFold_noE, one recycling iteration per call), CPU float32."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("haiku")
pytest.importorskip("alphafold.model.modules")
torch = pytest.importorskip("torch")

import haiku as hk  # noqa: E402
import jax  # noqa: E402
from alphafold.model import modules  # noqa: E402

from fold.af2_reference import (  # noqa: E402
    atom_masks,
    flatten,
    perturb_constants,
    reference_config,
)
from warpbio.fold.config import InferenceOptions, ModelConfig  # noqa: E402
from warpbio.fold.model.alphafold import AlphaFold  # noqa: E402
from warpbio.fold.params import load_params  # noqa: E402

N_RES, N_SEQ, N_EXTRA, BLOCKS = 16, 8, 12, 2


def random_batch(seed=0):
    rng = np.random.default_rng(seed)
    aatype = rng.integers(0, 20, N_RES).astype(np.int32)
    target_feat = np.zeros((N_RES, 22), np.float32)
    target_feat[np.arange(N_RES), aatype + 1] = 1
    msa_feat = np.concatenate(
        [
            np.eye(23, dtype=np.float32)[rng.integers(0, 23, (N_SEQ, N_RES))],
            rng.random((N_SEQ, N_RES, 26)).astype(np.float32),
        ],
        -1,
    )
    seq_mask = np.ones(N_RES, np.float32)
    msa_mask = (rng.random((N_SEQ, N_RES)) > 0.05).astype(np.float32)
    msa_mask[0] = 1
    return {
        "aatype": aatype,
        "target_feat": target_feat,
        "msa_feat": msa_feat,
        "seq_mask": seq_mask,
        "msa_mask": msa_mask,
        "residue_index": np.arange(N_RES, dtype=np.int32) + 5,
        "extra_msa": rng.integers(0, 22, (N_EXTRA, N_RES)).astype(np.int32),
        "extra_has_deletion": (rng.random((N_EXTRA, N_RES)) > 0.8).astype(np.float32),
        "extra_deletion_value": rng.random((N_EXTRA, N_RES)).astype(np.float32),
        "extra_msa_mask": (rng.random((N_EXTRA, N_RES)) > 0.1).astype(np.float32),
        **atom_masks(aatype),
    }


def zero_prev():
    return {
        "prev_msa_first_row": np.zeros((N_RES, 256), np.float32),
        "prev_pair": np.zeros((N_RES, N_RES, 128), np.float32),
        "prev_pos": np.zeros((N_RES, 37, 3), np.float32),
    }


@pytest.fixture(scope="module")
def reference():
    cfg = reference_config(num_blocks=BLOCKS)

    def forward(batch):
        return modules.AlphaFold_noE(cfg.model)(batch, is_training=False)

    transformed = hk.transform(forward)
    batch = random_batch()
    params = transformed.init(jax.random.PRNGKey(0), {**batch, "prev": zero_prev()})
    params = perturb_constants(hk.data_structures.to_mutable_dict(params), seed=0)
    apply = jax.jit(transformed.apply)
    prev, outputs = zero_prev(), []
    for _ in range(4):  # 0..3 recycles
        out = apply(params, jax.random.PRNGKey(1), {**batch, "prev": prev})
        out = jax.tree_util.tree_map(np.asarray, out)
        prev = out["prev"]
        outputs.append(out)
    return flatten(params), batch, outputs


def run_ours(params, batch, num_recycle):
    model = AlphaFold(ModelConfig().with_depth(BLOCKS))
    load_params(model, params)
    model.eval()
    features = {k: torch.as_tensor(v) for k, v in batch.items()}
    return model.predict(lambda r: features, InferenceOptions(num_recycle=num_recycle))


def differences(ours, ref):
    pairs = {
        "final_atom_positions": (
            ours["structure_module"]["final_atom_positions"],
            ref["structure_module"]["final_atom_positions"],
        ),
        "plddt_logits": (ours["predicted_lddt"]["logits"], ref["predicted_lddt"]["logits"]),
        "distogram_logits": (ours["distogram"]["logits"], ref["distogram"]["logits"]),
        "masked_msa_logits": (ours["masked_msa"]["logits"], ref["masked_msa"]["logits"]),
        "experimentally_resolved_logits": (
            ours["experimentally_resolved"]["logits"],
            ref["experimentally_resolved"]["logits"],
        ),
        "pae": (ours["predicted_aligned_error"], ref["predicted_aligned_error"]),
        "plddt": (ours["plddt"], ref["plddt"]),
        "ptm": (ours["ptm"], ref["ptm"]),
        "pair": (ours["prev"]["prev_pair"], ref["prev"]["prev_pair"]),
        "msa_first_row": (ours["prev"]["prev_msa_first_row"], ref["prev"]["prev_msa_first_row"]),
    }
    table = {}
    for name, (a, b) in pairs.items():
        a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
        table[name] = (float(np.abs(a - b).max()), float(np.abs(b).max()))
    return table


def report(name, table):
    path = os.environ.get("WARPBIO_FOLD_PARITY_REPORT")
    print(name, json.dumps(table, indent=1))
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({name: table}) + "\n")


def test_full_model_no_recycling_matches_reference(reference):
    params, batch, outputs = reference
    ours = run_ours(params, batch, num_recycle=0)
    table = differences(ours, outputs[0])
    report("2 blocks, 0 recycles", table)
    atoms_diff, _ = table.pop("final_atom_positions")
    assert atoms_diff < 0.05, f"final atom positions differ by {atoms_diff:.3g} A"
    for name, (diff, scale) in table.items():
        assert diff <= 1e-4 * max(scale, 1e-6), f"{name}: {diff:.3g} vs scale {scale:.3g}"


def test_full_model_three_recycles_reported(reference):
    """Recycling feeds the outputs back 3 times; differences may grow (reported)."""
    params, batch, outputs = reference
    ours = run_ours(params, batch, num_recycle=3)
    table = differences(ours, outputs[3])
    report("2 blocks, 3 recycles", table)
    atoms_diff, atoms_scale = table["final_atom_positions"]
    assert atoms_diff < 0.05, f"after 3 recycles atoms differ by {atoms_diff:.3g} A"
    assert np.isfinite(atoms_scale)
