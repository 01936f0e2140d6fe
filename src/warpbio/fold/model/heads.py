"""Output heads and confidence scores (Jumper et al. 2021, Suppl. 1.9)."""

from __future__ import annotations

import torch
from torch import nn

from warpbio.fold.config import ModelConfig
from warpbio.fold.model.chunking import chunked
from warpbio.fold.model.primitives import LayerNorm, Linear


class PredictedLddtHead(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c, h = config.structure.num_channel, config.plddt_num_channels
        self.input_layer_norm = LayerNorm(c)
        self.act_0 = Linear(c, h)
        self.act_1 = Linear(h, h)
        self.logits = Linear(h, config.plddt_num_bins)

    def forward(self, structure_act):
        act = self.input_layer_norm(structure_act)
        act = torch.relu(self.act_0(act))
        act = torch.relu(self.act_1(act))
        return self.logits(act)


class DistogramHead(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.half_logits = Linear(config.pair_channel, config.distogram_num_bins)
        self.register_buffer(
            "bin_edges",
            torch.linspace(
                config.distogram_first_break,
                config.distogram_last_break,
                config.distogram_num_bins - 1,
            ),
            persistent=False,
        )

    def forward(self, pair):
        half = self.half_logits(pair)
        return half + half.transpose(0, 1)


class MaskedMsaHead(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.logits = Linear(config.msa_channel, config.masked_msa_num_output)

    def forward(self, msa):
        return self.logits(msa)


class PredictedAlignedErrorHead(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.logits = Linear(config.pair_channel, config.pae_num_bins)
        self.register_buffer(
            "breaks",
            torch.linspace(0.0, config.pae_max_error_bin, config.pae_num_bins - 1),
            persistent=False,
        )

    def forward(self, pair):
        return self.logits(pair)


class ExperimentallyResolvedHead(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.logits = Linear(config.seq_channel, 37)

    def forward(self, single):
        return self.logits(single)


# --------------------------------------------------------------------------
# Confidence scores from logits
# --------------------------------------------------------------------------


# rows of [N, N, bins] logits turned into expectations at once (the softmax and the
# weighted bins are two float32 copies of the logits: 3.8 GiB each at 4,000 residues)
EXPECTATION_ROWS = 256


def expectation(logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum over the bins of softmax(logits) * values, in chunks of rows."""

    def rows(logit_rows):
        return (torch.softmax(logit_rows, -1) * values).sum(-1)

    return chunked(rows, [logits], [], EXPECTATION_ROWS)


def plddt_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-residue pLDDT in [0, 100]: expected lDDT-Ca over the bins."""
    num_bins = logits.shape[-1]
    centers = (torch.arange(num_bins, device=logits.device, dtype=logits.dtype) + 0.5) / num_bins
    return (torch.softmax(logits, -1) * centers).sum(-1) * 100


def _error_bin_centers(breaks: torch.Tensor) -> torch.Tensor:
    step = breaks[1] - breaks[0]
    centers = breaks + step / 2
    return torch.cat([centers, centers[-1:] + step])


def predicted_aligned_error(logits: torch.Tensor, breaks: torch.Tensor):
    """(PAE [N, N] in angstroms, the largest value it can take)."""
    centers = _error_bin_centers(breaks).to(logits.dtype)
    return expectation(logits, centers), centers[-1]


def predicted_tm_score(
    logits: torch.Tensor, breaks: torch.Tensor, residue_weights: torch.Tensor
) -> torch.Tensor:
    """pTM (Suppl. 1.9.7): max over alignment frames of the expected TM-score."""
    centers = _error_bin_centers(breaks).to(logits.dtype)
    num_res = torch.clamp(residue_weights.sum(), min=19)
    d0 = 1.24 * (num_res - 15) ** (1.0 / 3) - 1.8
    tm_per_bin = 1.0 / (1 + centers**2 / d0**2)
    tm_term = expectation(logits, tm_per_bin)
    pair_weights = residue_weights[None, :] * residue_weights[:, None]
    normed = pair_weights / (1e-8 + pair_weights.sum(-1, keepdim=True))
    per_alignment = (tm_term * normed).sum(-1)
    return (per_alignment * residue_weights).max()
