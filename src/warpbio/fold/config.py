"""Model and inference settings of the AlphaFold2 monomer engine.

:class:`ModelConfig` holds the architecture (the numbers of the official
``model_*`` configs; every official monomer model has the same shapes, only
``ptm`` models add the predicted-aligned-error head). :class:`InferenceOptions`
holds what may change between runs of the same weights: recycles and chunking.
Chunk sizes are the hook for the memory/speed work of part 2; ``None`` means
"whole tensor at once".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class StructureConfig:
    num_layer: int = 8
    num_channel: int = 384
    num_head: int = 12
    num_layer_in_transition: int = 3
    num_point_qk: int = 4
    num_point_v: int = 8
    num_scalar_qk: int = 16
    num_scalar_v: int = 16
    position_scale: float = 10.0
    sidechain_num_channel: int = 128
    sidechain_num_residual_block: int = 2


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an AlphaFold2 monomer model (defaults: the official one)."""

    msa_channel: int = 256
    pair_channel: int = 128
    seq_channel: int = 384
    extra_msa_channel: int = 64
    evoformer_num_block: int = 48
    extra_msa_stack_num_block: int = 4
    max_relative_feature: int = 32
    msa_row_num_head: int = 8
    msa_column_num_head: int = 8
    triangle_attention_num_head: int = 4
    triangle_multiplication_channel: int = 128
    outer_product_channel: int = 32
    transition_factor: int = 4
    prev_pos_min_bin: float = 3.25
    prev_pos_max_bin: float = 20.75
    prev_pos_num_bins: int = 15
    distogram_num_bins: int = 64
    distogram_first_break: float = 2.3125
    distogram_last_break: float = 21.6875
    plddt_num_bins: int = 50
    plddt_num_channels: int = 128
    pae_num_bins: int = 64
    pae_max_error_bin: float = 31.0
    masked_msa_num_output: int = 23
    ptm: bool = True  # model has the predicted-aligned-error (pTM/PAE) head
    structure: StructureConfig = field(default_factory=StructureConfig)

    def with_depth(self, evoformer_num_block: int) -> ModelConfig:
        return replace(self, evoformer_num_block=evoformer_num_block)


def model_config(name: str) -> ModelConfig:
    """Config of an official model name: model_1..5 or model_1..5_ptm."""
    base = name.removesuffix("_ptm")
    if base not in {f"model_{i}" for i in range(1, 6)}:
        raise ValueError(
            f"unknown model name {name!r}; use model_1 .. model_5, optionally with _ptm "
            "(multimer models are not supported)"
        )
    return ModelConfig(ptm=name.endswith("_ptm"))


@dataclass(frozen=True)
class InferenceOptions:
    """Run-time options that do not change the weights.

    ``chunk_size`` bounds the batch rows that attention and transitions process
    at once (memory for speed); the results do not depend on it.
    """

    num_recycle: int = 3
    chunk_size: int | None = None
