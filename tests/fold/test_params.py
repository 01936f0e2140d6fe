"""The weight loader on a full 48-block npz made by the reference's own
initialisation (acceptance 2), and its messages for files that do not fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from warpbio.fold.config import ModelConfig
from warpbio.fold.model.alphafold import AlphaFold
from warpbio.fold.params import WeightsError, export_params, load_params, stacked_blocks

ROW_QUERY = (
    "alphafold/alphafold_iteration/evoformer/evoformer_iteration/"
    "msa_row_attention_with_pair_bias/attention//query_w"
)


def tiny_batch(n=12, s=4, e=6):
    rng = np.random.default_rng(0)
    aatype = rng.integers(0, 20, n)
    return {
        "aatype": torch.as_tensor(aatype),
        "target_feat": torch.eye(22)[aatype + 1],
        "msa_feat": torch.rand(s, n, 49),
        "seq_mask": torch.ones(n),
        "msa_mask": torch.ones(s, n),
        "residue_index": torch.arange(n),
        "extra_msa": torch.randint(0, 22, (e, n)),
        "extra_has_deletion": torch.zeros(e, n),
        "extra_deletion_value": torch.zeros(e, n),
        "extra_msa_mask": torch.ones(e, n),
    }


@pytest.mark.slow
def test_loader_reads_reference_48_block_npz_and_runs(reference_npz_48):
    with np.load(reference_npz_48) as data:
        assert data[ROW_QUERY].shape == (48, 256, 8, 32)  # the real file's layout
        assert stacked_blocks(dict(data)) == 48
    model = AlphaFold(ModelConfig())
    load_params(model, reference_npz_48)
    state = dict(model.named_parameters())
    with np.load(reference_npz_48) as data:
        stacked = data[ROW_QUERY]
    ours = state[
        "alphafold_iteration.evoformer.evoformer_iteration.47."
        "msa_row_attention_with_pair_bias.attention.query_w"
    ]
    np.testing.assert_array_equal(ours.detach().numpy(), stacked[47])
    with torch.no_grad():
        out = model.eval()(tiny_batch())
    positions = out["structure_module"]["final_atom_positions"]
    assert positions.shape == (12, 37, 3) and torch.isfinite(positions).all()
    assert 0 <= float(out["ptm"]) <= 1 and torch.isfinite(out["plddt"]).all()


@pytest.fixture(scope="module")
def small_arrays():
    torch.manual_seed(0)
    return export_params(AlphaFold(ModelConfig().with_depth(2)))


def test_missing_key_is_named(small_arrays):
    arrays = dict(small_arrays)
    key = ROW_QUERY
    del arrays[key]
    with pytest.raises(
        WeightsError, match=f"missing key '{key}' \\(expected shape \\(2, 256, 8, 32\\)\\)"
    ):
        load_params(AlphaFold(ModelConfig().with_depth(2)), arrays)


def test_misshaped_key_is_named(small_arrays):
    arrays = dict(small_arrays)
    key = "alphafold/alphafold_iteration/structure_module/initial_projection//weights"
    arrays[key] = np.zeros((384, 380), np.float32)
    with pytest.raises(
        WeightsError, match=f"key '{key}' has shape \\(384, 380\\), expected \\(384, 384\\)"
    ):
        load_params(AlphaFold(ModelConfig().with_depth(2)), arrays)


def test_wrong_depth_says_so(small_arrays):
    with pytest.raises(WeightsError, match="the file has 2 stacked blocks, the model 3"):
        load_params(AlphaFold(ModelConfig().with_depth(3)), small_arrays)


def test_non_ptm_weights_for_a_ptm_model(small_arrays):
    arrays = {k: v for k, v in small_arrays.items() if "predicted_aligned_error" not in k}
    with pytest.raises(WeightsError, match="non-pTM weights"):
        load_params(AlphaFold(ModelConfig().with_depth(2)), arrays)


def test_ptm_weights_for_a_non_ptm_model(small_arrays):
    with pytest.raises(WeightsError, match="these are pTM weights"):
        load_params(AlphaFold(ModelConfig(ptm=False).with_depth(2)), small_arrays)


def test_not_an_alphafold_file(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, something=np.zeros(3))
    with pytest.raises(WeightsError, match=r"missing key .*no AlphaFold2 keys"):
        load_params(AlphaFold(ModelConfig(ptm=False).with_depth(1)), path)


def test_export_then_load_round_trip(small_arrays):
    model = AlphaFold(ModelConfig().with_depth(2))
    load_params(model, small_arrays)
    again = export_params(model)
    assert set(again) == set(small_arrays)
    for key, value in small_arrays.items():
        np.testing.assert_array_equal(again[key], value)


def test_template_weights_of_model_1_and_2_are_skipped(small_arrays):
    arrays = dict(small_arrays)
    arrays["alphafold/alphafold_iteration/evoformer/template_embedding/x//weights"] = np.zeros(3)
    arrays["alphafold/alphafold_iteration/evoformer/template_projection//bias"] = np.zeros(3)
    load_params(AlphaFold(ModelConfig().with_depth(2)), arrays)
