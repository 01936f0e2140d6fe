"""The AlphaFold2 monomer model with recycling (Jumper et al. 2021, Suppl. Alg. 2).

Module names mirror the reference's Haiku scopes (``alphafold_iteration/
evoformer/evoformer_iteration/...``), so :mod:`warpbio.fold.params` loads the
official npz files by name.
"""

from __future__ import annotations

import logging
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
from warpbio.fold.model.plan import REFERENCE, Plan, make_plan
from warpbio.fold.model.primitives import Linear
from warpbio.fold.model.structure import StructureModule

log = logging.getLogger(__name__)

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

    def forward(self, batch: Batch, prev: Batch, plan: Plan = REFERENCE, on_block=None):
        msa, pair = self.input_embedding(batch, prev, plan.chunk_size)
        seq_mask = batch["seq_mask"]
        pair_mask = seq_mask[:, None] * seq_mask[None, :]
        extra = self.extra_msa_embedding(batch)
        if plan.stream_dtype is not None:  # the stacks' residual streams in low precision
            msa, pair, extra = (t.to(plan.stream_dtype) for t in (msa, pair, extra))
        # autocast covers the two stacks only; the structure module gets float32
        with plan.autocast(pair.device.type):
            for block in self.extra_msa_stack:
                extra, pair = block(extra, pair, batch["extra_msa_mask"], pair_mask, plan)
            del extra
            for index, block in enumerate(self.evoformer_iteration):
                msa, pair = block(msa, pair, batch["msa_mask"], pair_mask, plan)
                if on_block is not None:
                    on_block(index)
        msa, pair = msa.float(), pair.float()
        return {
            "single": self.single_activations(msa[0]),
            "pair": pair,
            "msa": msa,
            # a copy: a view would keep the whole float32 MSA alive into the next
            # recycle (2 GiB at 4,000 residues)
            "msa_first_row": msa[0].clone(),
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

    def forward(self, batch: Batch, prev: Batch, plan: Plan = REFERENCE, on_block=None):
        reps = self.evoformer(batch, prev, plan, on_block)
        structure = self.structure_module(
            reps["single"],
            reps["pair"],
            batch["seq_mask"],
            batch["aatype"].long(),
            plan.chunk_size,
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
            # a broadcast zero: no [N, N, z] float32 block (7.6 GiB at 4,000 residues)
            "prev_pair": torch.zeros((), **zeros).expand(num_res, num_res, cfg.pair_channel),
        }

    def forward(
        self, batch: Batch, prev: Batch | None = None, plan: Plan = REFERENCE, on_block=None
    ):
        if prev is None:
            prev = self.initial_prev(batch["aatype"].shape[0], batch["msa_feat"])
        out = self.alphafold_iteration(batch, prev, plan, on_block)
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
        plan: Plan | None = None,
    ) -> dict:
        """Run up to ``options.num_recycle + 1`` iterations; ``batch_of_recycle(r)``
        gives the features of iteration r (AF2 resamples the MSA at every recycle).

        ``plan`` defaults to the options' plan for the first batch. With
        ``early_stop_tolerance`` recycling stops once the CA atoms move less than
        that RMS (A); with ``offload`` the recycled tensors wait on the host and
        each batch goes to the device when its iteration runs. ``out["recycles"]``
        is the number of recycles that ran."""
        options = options or InferenceOptions()
        device = next(self.parameters()).device
        prev = None
        out: dict = {}
        for r in range(options.num_recycle + 1):
            batch = batch_of_recycle(r)
            if options.offload:
                batch = to_device(batch, device)
                prev = None if prev is None else to_device(prev, device)
            if plan is None:
                plan = make_plan(options, self.config, batch, device)
            previous_ca = None if prev is None else prev["prev_pos"][:, CA]
            out = {}  # the last iteration's outputs are not needed during this one
            out = self(batch, prev, plan, on_block)
            prev = out["prev"]
            out["recycles"] = r
            if on_recycle is not None:
                on_recycle(r, out)
            if previous_ca is not None and options.early_stop_tolerance > 0:
                change = ca_rms_change(prev["prev_pos"][:, CA], previous_ca, batch["seq_mask"])
                out["ca_change"] = change
                if change < options.early_stop_tolerance:
                    log.info("recycle %d: CA moved %.3g A RMS, stopping early", r, change)
                    break
            if options.offload and r < options.num_recycle:
                prev = to_host(prev)
                out = batch = {}  # drop this iteration's device tensors, then the cache
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        return out


CA = 1  # atom37 index of the C-alpha


def ca_rms_change(new_ca: torch.Tensor, old_ca: torch.Tensor, seq_mask: torch.Tensor) -> float:
    """RMS displacement (A) of the C-alpha atoms [N, 3] over the unmasked residues."""
    moved = ((new_ca - old_ca) ** 2).sum(-1)
    return float(torch.sqrt((moved * seq_mask).sum() / seq_mask.sum().clamp(min=1)))


def to_host(tensors: Batch) -> dict[str, torch.Tensor]:
    """Host copies, pinned when CUDA is there (fast, asynchronous copies back)."""
    pin = torch.cuda.is_available()
    host = {}
    for key, value in tensors.items():
        if value.device.type == "cpu" and not pin:
            host[key] = value
        else:
            host[key] = torch.empty_like(value, device="cpu", pin_memory=pin).copy_(value)
    return host


def to_device(tensors: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in tensors.items()}


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
