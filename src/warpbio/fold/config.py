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


PRECISIONS = ("float32", "bfloat16")
ATTENTION_KERNELS = ("reference", "sdpa", "flash")


CPU_CHUNK = 16  # rows per chunk in fast_cpu()
CPU_LENGTH_MULTIPLE = 16  # fast_cpu() pads residues to a multiple of this


@dataclass(frozen=True)
class InferenceOptions:
    """Run-time options that do not change the weights.

    The defaults are the unoptimized float32 reference path; :meth:`fast` turns
    every inference optimization on. Each switch is checked against the
    reference path in the tests.

    - ``chunk_size``: rows of attention/transition/outer-product batches at once
      (memory for speed; results do not depend on it). ``auto_chunk`` picks it
      per target from the free device memory instead.
    - ``precision``: ``bfloat16`` autocasts the Evoformer and extra-MSA stacks
      (the structure module, heads and the residual stream stay float32).
    - ``bf16_streams``: with ``precision="bfloat16"``, the MSA and pair residual
      streams themselves are bfloat16 inside the two stacks (as the reference's
      bfloat16 mode keeps them), and layer norms read and write bfloat16
      (float32 arithmetic inside); halves the bytes of every memory-bound pass.
    - ``attention``: ``sdpa`` runs gated attention with pair bias through
      PyTorch's fused scaled-dot-product attention (memory-efficient kernel);
      ``flash`` through warpbio's Triton kernel that reads the pair bias tile by
      tile (no [B, H, Q, K] mask) and applies the gate in its epilogue.
    - ``fused``: concatenated projections and fused gating kernels (Triton on
      CUDA, a PyTorch twin elsewhere).
    - ``inplace``: residual updates in place (no second copy of pair/MSA).
    - ``compile``: ``torch.compile`` of the Evoformer block, with the target
      padded up to one of ``length_buckets`` to bound recompiles.
    - ``length_multiple``: pad a target (beyond its bucket, if none holds it) to a
      multiple of this many residues, masked like the buckets' padding. CPU
      attention kernels tile keys by 16: 93 residues run slower than 96.
    - ``retain_host_memory``: keep freed host memory in the process
      (:func:`warpbio.hostmem.retain_freed_memory`); CPU runs only.
    - ``early_stop_tolerance``: stop recycling once the CA positions move less
      than this RMS (Angstrom) between recycles; 0 = off (the reference).
    - ``offload``: keep the recycled pair/MSA tensors and the MSA stack's
      inputs on the host between recycles (very long targets).
    """

    num_recycle: int = 3
    chunk_size: int | None = None
    auto_chunk: bool = False
    precision: str = "float32"
    bf16_streams: bool = False
    attention: str = "reference"
    fused: bool = False
    inplace: bool = False
    compile: bool = False
    length_buckets: tuple[int, ...] = ()
    length_multiple: int = 1
    retain_host_memory: bool = False
    early_stop_tolerance: float = 0.0
    offload: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: use one of {PRECISIONS}")
        if self.attention not in ATTENTION_KERNELS:
            raise ValueError(f"attention {self.attention!r}: use one of {ATTENTION_KERNELS}")
        if self.bf16_streams and self.precision != "bfloat16":
            raise ValueError('bf16_streams needs precision="bfloat16"')
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size {self.chunk_size}: use a positive integer or None")
        if self.length_multiple < 1:
            raise ValueError(f"length_multiple {self.length_multiple}: use a positive integer")

    @classmethod
    def fast(cls, **changes) -> InferenceOptions:
        """Every optimization that keeps the reference's accuracy."""
        settings = dict(
            auto_chunk=True,
            precision="bfloat16",
            bf16_streams=True,
            attention="flash",
            fused=True,
            inplace=True,
        )
        settings.update(changes)
        return cls(**settings)

    @classmethod
    def fast_cpu(cls, **changes) -> InferenceOptions:
        """The optimizations that pay on CPU cores: float32 (bfloat16 is emulated on
        most CPUs), SDPA attention (PyTorch's tiled CPU kernel: no [B, H, Q, K]
        logits; 2x on the MSA column attention), fused projections, in place,
        chunks of 16 rows (small temporaries stay in the allocator's cache instead
        of fresh page-faulted mappings: 1.2-1.5x at 58-128 residues on 2 cores),
        lengths padded to a multiple of 16 (SDPA's key tiles: 2.5x on the row
        attention at 96 residues against 93) and freed host memory kept for
        reuse (with bfloat16 1.14-1.20x at 93 and 150 residues, these two)."""
        settings = dict(
            attention="sdpa",
            fused=True,
            inplace=True,
            chunk_size=CPU_CHUNK,
            length_multiple=CPU_LENGTH_MULTIPLE,
            retain_host_memory=True,
        )
        settings.update(changes)
        return cls(**settings)
