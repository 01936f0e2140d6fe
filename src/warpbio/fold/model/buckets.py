"""Length buckets for ``torch.compile``: pad a target to one of a few lengths,
run, crop the outputs back.

With ``dynamic=False`` every new input shape compiles the Evoformer block
again; padding each target up to the smallest of ``InferenceOptions.
length_buckets`` that holds it bounds the compiles to one per bucket.

Padded residues are masked out (``seq_mask``, ``msa_mask``, ``extra_msa_mask``
0), as AF2's own fixed-size padding does, so real residues get the same
results: attention masks padded keys, the triangle updates and the outer
product mean mask padded rows/columns, IPA masks padded keys, and pTM and mean
pLDDT weight by ``seq_mask``. (AF2 pads every feature with 0; here residue
types pad as unknown (X) and MSA entries as gaps, so padded residues have no
atoms; masked, the values change nothing.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from warpbio.fold import residue_constants as rc
from warpbio.fold.config import InferenceOptions
from warpbio.fold.model.alphafold import AlphaFold

# batch feature -> (its residue axes, the value padded residues get)
FEATURE_PADDING: dict[str, tuple[tuple[int, ...], float]] = {
    "aatype": ((0,), rc.UNK_INDEX),
    "residue_index": ((0,), 0),
    "seq_mask": ((0,), 0),
    "target_feat": ((0,), 0),
    "between_segment_residues": ((0,), 0),
    "msa_feat": ((1,), 0),
    "msa_mask": ((1,), 0),
    "bert_mask": ((1,), 0),
    "true_msa": ((1,), rc.GAP_INDEX),
    "msa": ((1,), rc.GAP_INDEX),
    "deletion_matrix": ((1,), 0),
    "extra_msa": ((1,), rc.GAP_INDEX),
    "extra_has_deletion": ((1,), 0),
    "extra_deletion_value": ((1,), 0),
    "extra_deletion_matrix": ((1,), 0),
    "extra_msa_mask": ((1,), 0),
    "atom14_atom_exists": ((0,), 0),
    "atom37_atom_exists": ((0,), 0),
    "residx_atom14_to_atom37": ((0,), 0),
    "residx_atom37_to_atom14": ((0,), 0),
    "prev_pos": ((0,), 0),
    "prev_msa_first_row": ((0,), 0),
    "prev_pair": ((0, 1), 0),
}

# model output path ("group/key" or "key") -> its residue axes; () = none
OUTPUT_RESIDUE_AXES: dict[str, tuple[int, ...]] = {
    "representations/single": (0,),
    "representations/pair": (0, 1),
    "representations/msa": (1,),
    "representations/msa_first_row": (0,),
    "structure_module/act": (0,),
    "structure_module/traj": (1,),
    "structure_module/final_affines": (0,),
    "structure_module/angles_sin_cos": (0,),
    "structure_module/unnormalized_angles_sin_cos": (0,),
    "structure_module/final_atom14_positions": (0,),
    "structure_module/final_atom_positions": (0,),
    "structure_module/final_atom_mask": (0,),
    "predicted_lddt/logits": (0,),
    "distogram/logits": (0, 1),
    "distogram/bin_edges": (),
    "masked_msa/logits": (1,),
    "experimentally_resolved/logits": (0,),
    "predicted_aligned_error/logits": (0, 1),
    "predicted_aligned_error/breaks": (),
    "predicted_aligned_error": (0, 1),  # the PAE map that confidence() puts in its place
    "prev/prev_pos": (0,),
    "prev/prev_msa_first_row": (0,),
    "prev/prev_pair": (0, 1),
    "plddt": (0,),
}


def bucket_length(num_res: int, buckets: Sequence[int], multiple: int = 1) -> int:
    """The smallest bucket >= ``num_res``; when none is that large, ``num_res``
    rounded up to a multiple of ``multiple``."""
    fitting = [b for b in buckets if b >= num_res]
    if fitting:
        return min(fitting)
    return -(-num_res // multiple) * multiple


def pad_batch(batch: Mapping[str, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    """A recycle batch with its residues padded to ``length`` (masked out, see the
    module doc); scalars pass unchanged. Unknown per-residue features raise
    rather than being left unpadded."""
    num_res = int(batch["aatype"].shape[0])
    if length < num_res:
        raise ValueError(f"cannot pad {num_res} residues to {length}")
    out = {}
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor) or value.ndim == 0:
            out[key] = value
        elif key not in FEATURE_PADDING:
            raise ValueError(f"pad_batch: feature {key!r} has no residue axis in FEATURE_PADDING")
        else:
            axes, fill = FEATURE_PADDING[key]
            out[key] = _pad(value, axes, length, fill)
    return out


def _pad(tensor: torch.Tensor, axes: tuple[int, ...], length: int, fill: float) -> torch.Tensor:
    if all(tensor.shape[a] == length for a in axes):
        return tensor
    shape = list(tensor.shape)
    for axis in axes:
        shape[axis] = length
    padded = torch.full(shape, fill, dtype=tensor.dtype, device=tensor.device)
    padded[tuple(slice(0, size) for size in tensor.shape)] = tensor
    return padded


def crop_outputs(out: Mapping, num_res: int) -> dict:
    """Model outputs (``AlphaFold.forward``'s nested dict) cropped to the first
    ``num_res`` residues (views, no copies); scalars pass unchanged."""
    return _crop(out, num_res, prefix="")


def _crop(out: Mapping, num_res: int, prefix: str) -> dict:
    cropped = {}
    for key, value in out.items():
        path = prefix + key
        if isinstance(value, Mapping):
            cropped[key] = _crop(value, num_res, prefix=path + "/")
        elif not isinstance(value, torch.Tensor) or value.ndim == 0:
            cropped[key] = value
        elif path not in OUTPUT_RESIDUE_AXES:
            raise ValueError(f"crop_outputs: output {path!r} has no entry in OUTPUT_RESIDUE_AXES")
        else:
            for axis in OUTPUT_RESIDUE_AXES[path]:
                value = value.narrow(axis, 0, num_res)
            cropped[key] = value
    return cropped


def compile_model(
    model: AlphaFold, options: InferenceOptions, backend: str = "inductor"
) -> AlphaFold:
    """``torch.compile`` (``dynamic=False``) of every Evoformer and extra-MSA block's
    forward, in place, when ``options.compile`` is set; the model is returned.

    One compiled code serves all blocks of a kind (parameters are graph inputs),
    so a new bucket length costs one compile for each of the two block kinds.
    ``backend`` is torch.compile's (tests use a cheaper one). Without
    ``options.compile`` the blocks get their eager forward back, so one model
    object serves compiled and unoptimized runs alike.
    """
    evoformer = model.alphafold_iteration.evoformer
    blocks = [*evoformer.extra_msa_stack, *evoformer.evoformer_iteration]
    if not options.compile:
        for block in blocks:
            block.__dict__.pop("forward", None)  # the class's eager forward again
        return model
    for block in blocks:
        if "forward" not in block.__dict__:  # not compiled yet
            block.forward = torch.compile(block.forward, dynamic=False, backend=backend)
    # unbucketed runs compile once per distinct length (and autocast state)
    _allow_recompiles(max(2 * (len(options.length_buckets) + 1), MIN_RECOMPILES))
    return model


MIN_RECOMPILES = 32


def _allow_recompiles(count: int) -> None:
    """Raise dynamo's per-code recompile limit (8 by default) to ``count`` plus
    headroom, so that more buckets than that do not fall back to eager."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), count + 4))
