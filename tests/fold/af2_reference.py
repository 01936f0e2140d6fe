"""The official AlphaFold2 JAX modules as the reference (test-only helper).

Modules are initialised with random parameters (``zero_init=False``,
``bfloat16=False``, ``deterministic=True``); every constant-initialised array
(layer-norm scales and offsets, biases, gates) is then perturbed, so a swapped
or ignored parameter shows in the outputs. Parameters are flattened to the
official npz layout (``scope//name``).
"""

from __future__ import annotations

import copy

import haiku as hk
import jax
import numpy as np
from alphafold.common import residue_constants as ref_rc
from alphafold.model import config as af_config

jax.config.update("jax_platforms", "cpu")


def reference_config(num_blocks: int = 2, ptm: bool = True):
    """model_3(_ptm) (no templates) in float32, deterministic, random-init friendly."""
    cfg = af_config.model_config("model_3_ptm" if ptm else "model_3")
    gc = cfg.model.global_config
    gc.bfloat16 = False
    gc.bfloat16_output = False
    gc.zero_init = False
    gc.deterministic = True
    gc.use_remat = False
    cfg.model.calc_extended_ptm = False  # RunModel sets these two
    cfg.model.use_probs_extended = False
    evo = cfg.model.embeddings_and_evoformer
    evo.evoformer_num_block = num_blocks
    # the official monomer weights use the unfused triangle-multiplication layout
    for name in ("triangle_multiplication_outgoing", "triangle_multiplication_incoming"):
        evo.evoformer[name].fuse_projection_weights = False
    return cfg


def flatten(params) -> dict[str, np.ndarray]:
    return {
        f"{scope}//{name}": np.asarray(value)
        for scope, leaves in params.items()
        for name, value in leaves.items()
    }


def perturb_constants(params, seed: int):
    rng = np.random.default_rng(seed)
    out = {}
    for scope, leaves in params.items():
        out[scope] = {}
        for name, value in leaves.items():
            value = np.asarray(value)
            if value.size > 1 and np.all(value == value.reshape(-1)[0]):
                value = value + 0.1 * rng.standard_normal(value.shape).astype(value.dtype)
            elif value.size == 1:
                value = value + np.float32(0.1)
            out[scope][name] = value
    return out


def run_reference(fn, *args, seed: int = 0):
    """Init ``fn`` (a function building Haiku modules) randomly, apply it.

    Returns (flat npz-layout params, output as NumPy pytree).
    """
    transformed = hk.transform(fn)
    params = transformed.init(jax.random.PRNGKey(seed), *args)
    params = perturb_constants(hk.data_structures.to_mutable_dict(params), seed)
    out = transformed.apply(params, jax.random.PRNGKey(seed + 1), *args)
    return flatten(params), jax.tree_util.tree_map(np.asarray, out)


def atom_masks(aatype: np.ndarray) -> dict[str, np.ndarray]:
    """atom14/atom37 existence and index maps from the reference's own tables."""
    to37, exists14, exists37 = [], [], []
    for index in aatype:
        if index >= 20:
            to37.append(np.zeros(37, np.int32))
            exists14.append(np.zeros(14, np.float32))
            exists37.append(np.zeros(37, np.float32))
            continue
        name = ref_rc.restype_1to3[ref_rc.restypes[index]]
        names14 = ref_rc.restype_name_to_atom14_names[name]
        to37.append(
            np.array([names14.index(a) if a in names14 else 0 for a in ref_rc.atom_types], np.int32)
        )
        exists14.append(np.array([1.0 if n else 0.0 for n in names14], np.float32))
        exists37.append(ref_rc.STANDARD_ATOM_MASK[index].astype(np.float32))
    return {
        "residx_atom37_to_atom14": np.stack(to37),
        "atom14_atom_exists": np.stack(exists14),
        "atom37_atom_exists": np.stack(exists37),
    }


def small(config, **changes):
    """A copy of an ml_collections config with some fields changed."""
    config = copy.deepcopy(config)
    for key, value in changes.items():
        config[key] = value
    return config
