"""Shared fixtures of the fold tests."""

from __future__ import annotations

import time

import numpy as np
import pytest


@pytest.fixture(scope="session")
def reference_npz_48(tmp_path_factory):
    """A full-depth (48-block) model_3_ptm npz made by the reference's own random
    initialisation, in the official file layout. ~70 s on 2 cores."""
    pytest.importorskip("haiku")
    pytest.importorskip("alphafold.model.modules")
    import haiku as hk
    import jax
    from alphafold.model import modules

    from fold.af2_reference import atom_masks, flatten, reference_config

    started = time.time()
    cfg = reference_config(num_blocks=48)
    n = 8
    aatype = np.arange(n, dtype=np.int32)
    batch = {
        "aatype": aatype,
        "target_feat": np.eye(22, dtype=np.float32)[aatype + 1],
        "msa_feat": np.zeros((2, n, 49), np.float32),
        "seq_mask": np.ones(n, np.float32),
        "msa_mask": np.ones((2, n), np.float32),
        "residue_index": np.arange(n, dtype=np.int32),
        "extra_msa": np.zeros((2, n), np.int32),
        "extra_has_deletion": np.zeros((2, n), np.float32),
        "extra_deletion_value": np.zeros((2, n), np.float32),
        "extra_msa_mask": np.ones((2, n), np.float32),
        "prev": {
            "prev_msa_first_row": np.zeros((n, 256), np.float32),
            "prev_pair": np.zeros((n, n, 128), np.float32),
            "prev_pos": np.zeros((n, 37, 3), np.float32),
        },
        **atom_masks(aatype),
    }
    init = hk.transform(lambda b: modules.AlphaFold_noE(cfg.model)(b, is_training=False)).init
    params = flatten(jax.jit(init)(jax.random.PRNGKey(42), batch))
    path = tmp_path_factory.mktemp("weights") / "params_model_3_ptm.npz"
    np.savez(path, **params)
    print(f"reference 48-block npz: {len(params)} arrays in {time.time() - started:.0f} s")
    return path
