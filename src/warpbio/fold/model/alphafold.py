"""The AlphaFold2 monomer model with recycling (Jumper et al. 2021, Suppl. Alg. 2).

Module names mirror the reference's Haiku scopes (``alphafold_iteration/
evoformer/evoformer_iteration/...``), so :mod:`warpbio.fold.params` loads the
official npz files by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from warpbio.fold.config import InferenceOptions, ModelConfig
from warpbio.fold.model.embedders import Embedder
from warpbio.fold.model.evoformer import EvoformerIteration
from warpbio.fold.model.heads import (
    DistogramHead,
    ExperimentallyResolvedHead,
    MaskedMsaHead,
    PredictedAlignedErrorHead,
    PredictedLddtHead,
    plddt_from_logits,
    predicted_aligned_error,
    predicted_tm_score,
)
from warpbio.fold.model.primitives import Linear
from warpbio.fold.model.structure import StructureModule

Batch = Mapping[str, torch.Tensor]


class EmbeddingsAndEvoformer(Embedder):
    """Embedders, extra-MSA stack, Evoformer stack and the single projection."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.extra_msa_stack = nn.ModuleList(
            EvoformerIteration(config, config.extra_msa_channel, is_extra_msa=True)
            for _ in range(config.extra_msa_stack_num_block)
        )
        self.evoformer_iteration = nn.ModuleList(
            EvoformerIteration(config, config.msa_channel, is_extra_msa=False)
            for _ in range(config.evoformer_num_block)
        )
        self.single_activations = Linear(config.msa_channel, config.seq_channel)

    def forward(self, batch: Batch, prev: Batch, chunk_size=None, on_block=None):
        msa, pair = self.input_embedding(batch, prev)
        seq_mask = batch["seq_mask"]
        pair_mask = seq_mask[:, None] * seq_mask[None, :]
        extra = self.extra_msa_embedding(batch)
        for block in self.extra_msa_stack:
            extra, pair = block(extra, pair, batch["extra_msa_mask"], pair_mask, chunk_size)
        for index, block in enumerate(self.evoformer_iteration):
            msa, pair = block(msa, pair, batch["msa_mask"], pair_mask, chunk_size)
            if on_block is not None:
                on_block(index)
        return {
            "single": self.single_activations(msa[0]),
            "pair": pair,
            "msa": msa,
            "msa_first_row": msa[0],
        }


class AlphaFoldIteration(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.evoformer = EmbeddingsAndEvoformer(config)
        self.structure_module = StructureModule(
            config.structure, config.seq_channel, config.pair_channel
        )
        self.predicted_lddt_head = PredictedLddtHead(config)
        self.distogram_head = DistogramHead(config)
        self.masked_msa_head = MaskedMsaHead(config)
        self.experimentally_resolved_head = ExperimentallyResolvedHead(config)
        if config.ptm:
            self.predicted_aligned_error_head = PredictedAlignedErrorHead(config)

    def forward(self, batch: Batch, prev: Batch, chunk_size=None, on_block=None):
        reps = self.evoformer(batch, prev, chunk_size, on_block)
        structure = self.structure_module(
            reps["single"], reps["pair"], batch["seq_mask"], batch["aatype"].long()
        )
        out = {
            "representations": reps,
            "structure_module": structure,
            "predicted_lddt": {"logits": self.predicted_lddt_head(structure["act"])},
            "distogram": {
                "logits": self.distogram_head(reps["pair"]),
                "bin_edges": self.distogram_head.bin_edges,
            },
            "masked_msa": {"logits": self.masked_msa_head(reps["msa"])},
            "experimentally_resolved": {
                "logits": self.experimentally_resolved_head(reps["single"])
            },
        }
        if self.config.ptm:
            out["predicted_aligned_error"] = {
                "logits": self.predicted_aligned_error_head(reps["pair"]),
                "breaks": self.predicted_aligned_error_head.breaks,
            }
        return out


class AlphaFold(nn.Module):
    """AlphaFold2 monomer. ``forward`` is one recycling iteration; ``predict`` loops."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.alphafold_iteration = AlphaFoldIteration(config)

    def initial_prev(self, num_res: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        zeros = dict(dtype=like.dtype, device=like.device)
        return {
            "prev_pos": torch.zeros(num_res, 37, 3, **zeros),
            "prev_msa_first_row": torch.zeros(num_res, cfg.msa_channel, **zeros),
            "prev_pair": torch.zeros(num_res, num_res, cfg.pair_channel, **zeros),
        }

    def forward(self, batch: Batch, prev: Batch | None = None, chunk_size=None, on_block=None):
        if prev is None:
            prev = self.initial_prev(batch["aatype"].shape[0], batch["msa_feat"])
        out = self.alphafold_iteration(batch, prev, chunk_size, on_block)
        out["prev"] = {
            "prev_pos": out["structure_module"]["final_atom_positions"],
            "prev_msa_first_row": out["representations"]["msa_first_row"],
            "prev_pair": out["representations"]["pair"],
        }
        out.update(confidence(out, batch["seq_mask"]))
        return out

    @torch.no_grad()
    def predict(
        self,
        batch_of_recycle: Callable[[int], Batch],
        options: InferenceOptions | None = None,
        on_recycle: Callable[[int, dict], None] | None = None,
        on_block: Callable[[int], None] | None = None,
    ) -> dict:
        """Run ``options.num_recycle + 1`` iterations; ``batch_of_recycle(r)`` gives
        the features of iteration r (AF2 resamples the MSA at every recycle)."""
        options = options or InferenceOptions()
        prev = None
        out: dict = {}
        for r in range(options.num_recycle + 1):
            out = self(batch_of_recycle(r), prev, options.chunk_size, on_block)
            prev = out["prev"]
            if on_recycle is not None:
                on_recycle(r, out)
        return out


def confidence(out: Mapping, seq_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """pLDDT, mean pLDDT and, for pTM models, PAE and pTM (the reference's metrics)."""
    plddt = plddt_from_logits(out["predicted_lddt"]["logits"])
    metrics = {"plddt": plddt, "mean_plddt": (plddt * seq_mask).sum() / seq_mask.sum()}
    if "predicted_aligned_error" in out:
        logits = out["predicted_aligned_error"]["logits"]
        breaks = out["predicted_aligned_error"]["breaks"]
        pae, max_pae = predicted_aligned_error(logits, breaks)
        metrics["predicted_aligned_error"] = pae
        metrics["max_predicted_aligned_error"] = max_pae
        metrics["ptm"] = predicted_tm_score(logits, breaks, seq_mask)
    return metrics
