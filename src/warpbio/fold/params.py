"""Load the official AlphaFold2 ``params_model_*.npz`` files into the PyTorch model.

The npz keys are Haiku's: ``<scope>//<name>``, e.g.
``alphafold/alphafold_iteration/evoformer/evoformer_iteration/msa_row_attention_with_pair_bias/attention//query_w``;
parameters of the stacked blocks (48 Evoformer, 4 extra-MSA) carry a leading
block axis. Our modules are named like the scopes, so every PyTorch parameter
has exactly one key (and, for stacked blocks, one slice of it).

Errors name the key, the expected and the found shape, and say what the file
probably is (non-pTM weights when a pTM model was asked, multimer weights ...).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

ROOT_SCOPE = "alphafold"
PAE_SCOPE = "alphafold/alphafold_iteration/predicted_aligned_error_head/"
# Template embedding is not part of this engine (templates are left out); its
# weights in model_1/model_2 files are skipped.
# (template_embedding, template_single_embedding, template_projection)
TEMPLATE_KEYS = "alphafold/alphafold_iteration/evoformer/template_"


class WeightsError(ValueError):
    """The weights file does not fit the model; the message names key and fix."""


@dataclass(frozen=True)
class Slot:
    """Where one npz key goes: the parameter(s) and, for stacks, the block index."""

    parameter: str
    index: int | None


def npz_key(parameter_name: str, prefix: str = ROOT_SCOPE) -> tuple[str, int | None]:
    """PyTorch parameter name -> (npz key, stack index or None)."""
    parts = parameter_name.split(".")
    index = None
    scopes = []
    for part in parts[:-1]:
        if part.isdigit():
            index = int(part)
        else:
            scopes.append(part)
    scope = "/".join([prefix, *scopes]) if prefix else "/".join(scopes)
    return f"{scope}//{parts[-1]}", index


def expected_layout(model: nn.Module, prefix: str = ROOT_SCOPE) -> dict[str, tuple[tuple, list]]:
    """npz key -> (expected shape, [Slot, ...]) for every parameter of ``model``."""
    layout: dict[str, tuple[tuple, list]] = {}
    for name, param in model.named_parameters():
        key, index = npz_key(name, prefix)
        shape, slots = layout.get(key, ((), []))
        slots.append(Slot(name, index))
        layout[key] = (tuple(param.shape), slots)
    final = {}
    for key, (shape, slots) in layout.items():
        if slots[0].index is None:
            final[key] = (shape, slots)
        else:
            final[key] = ((len(slots), *shape), slots)
    return final


def _describe_file(keys: set[str]) -> str:
    if any("multimer" in k or "/evoformer/~_relative_encoding" in k for k in keys):
        return "it looks like AlphaFold-Multimer weights, which this engine does not run"
    if not any(k.startswith(ROOT_SCOPE + "/") for k in keys):
        return "it has no AlphaFold2 keys at all (not a params_model_*.npz file?)"
    return ""


def load_params(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, np.ndarray],
    prefix: str = ROOT_SCOPE,
) -> None:
    """Copy the arrays of an official-layout npz (path or mapping) into ``model``.

    Raises :class:`WeightsError` naming the first missing, mis-shaped or
    unexpected key.
    """
    where = str(source) if isinstance(source, (str, os.PathLike)) else "the given weights"
    arrays = _open(source)
    keys = set(arrays)
    layout = expected_layout(model, prefix)
    ptm_wanted = any(k.startswith(PAE_SCOPE) for k in layout)
    ptm_found = any(k.startswith(PAE_SCOPE) for k in keys)
    if prefix == ROOT_SCOPE and ptm_wanted and not ptm_found and keys:
        raise WeightsError(
            f"{where}: a pTM model was asked for but the file has no "
            f"'{PAE_SCOPE}' keys: these are non-pTM weights (params_model_N.npz); "
            "use a params_model_N_ptm.npz file or a model name without _ptm"
        )
    if prefix == ROOT_SCOPE and ptm_found and not ptm_wanted:
        raise WeightsError(
            f"{where}: the file has a predicted-aligned-error head: these are pTM weights "
            "(params_model_N_ptm.npz); use a model name ending in _ptm"
        )
    hint = _describe_file(keys)
    state = dict(model.named_parameters())
    for key, (shape, slots) in layout.items():
        if key not in arrays:
            raise WeightsError(
                f"{where}: missing key '{key}' (expected shape {shape})"
                + (f"; {hint}" if hint else "")
            )
        array = np.asarray(arrays[key])
        if tuple(array.shape) != shape:
            raise WeightsError(
                f"{where}: key '{key}' has shape {tuple(array.shape)}, expected {shape}"
                + _shape_hint(shape, array.shape)
            )
        with torch.no_grad():
            for slot in slots:
                value = array if slot.index is None else array[slot.index]
                target = state[slot.parameter]
                target.copy_(torch.from_numpy(np.array(value, dtype=np.float32)))
    unexpected = sorted(k for k in keys - set(layout) if not k.startswith(TEMPLATE_KEYS))
    if unexpected:
        raise WeightsError(
            f"{where}: unexpected key '{unexpected[0]}' ({len(unexpected)} unexpected in all); "
            + (hint or "the file is for a different model configuration")
        )
    skipped = [k for k in keys if k.startswith(TEMPLATE_KEYS)]
    if skipped:
        log.info("skipped %d template-embedding arrays (templates are not used)", len(skipped))


def _shape_hint(expected: tuple, found: tuple) -> str:
    if len(expected) == len(found) and expected[1:] == tuple(found[1:]):
        return (
            f" (the file has {found[0]} stacked blocks, the model {expected[0]}: "
            "set the model depth to the file's)"
        )
    return ""


def _open(source) -> Mapping[str, np.ndarray]:
    if isinstance(source, Mapping):
        return source
    path = os.fspath(source)
    if not os.path.exists(path):
        raise WeightsError(f"weights file '{path}' does not exist; fix fold.weights.path")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as error:
        raise WeightsError(
            f"weights file '{path}' is not a readable npz ({error}); "
            "give an official params_model_*.npz"
        ) from error


def stacked_blocks(arrays: Mapping[str, np.ndarray], stack: str = "evoformer_iteration") -> int:
    """Number of blocks of a stack in an npz (from any of its keys' leading axis)."""
    marker = f"/evoformer/{stack}/"
    for key, value in arrays.items():
        if marker in key:
            return int(np.shape(value)[0])
    raise WeightsError(f"no '{marker}' keys in the weights; not an AlphaFold2 monomer file")


def export_params(model: nn.Module, prefix: str = ROOT_SCOPE) -> dict[str, np.ndarray]:
    """Our parameters in the official npz layout (for seeded demo weights)."""
    state = dict(model.named_parameters())
    out = {}
    for key, (_, slots) in expected_layout(model, prefix).items():
        values = [state[s.parameter].detach().cpu().numpy() for s in slots]
        out[key] = values[0] if slots[0].index is None else np.stack(values)
    return out
