"""Input embedder, relative positions, recycling embedder and extra-MSA
embedding (Jumper et al. 2021, Suppl. Alg. 3, 4, 32)."""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import nn

from warpbio.fold import residue_constants as rc
from warpbio.fold.config import ModelConfig
from warpbio.fold.model.chunking import chunked
from warpbio.fold.model.primitives import LayerNorm, Linear

TARGET_FEAT_DIM = 22  # 20 amino acids + X + "between segments"
MSA_FEAT_DIM = 49  # 23 one-hot + has_deletion + deletion_value + 23 profile + deletion_mean
EXTRA_MSA_FEAT_DIM = 25  # 23 one-hot + has_deletion + deletion_value


def pseudo_beta(aatype: torch.Tensor, atom37: torch.Tensor) -> torch.Tensor:
    """CB position (CA for glycine) [N, 3]."""
    is_gly = (aatype == rc.RESTYPE_ORDER["G"])[:, None]
    return torch.where(is_gly, atom37[:, rc.ATOM_ORDER["CA"]], atom37[:, rc.ATOM_ORDER["CB"]])


def distogram_one_hot(positions, num_bins: int, min_bin: float, max_bin: float, others=None):
    """One-hot of the distances between ``positions`` [i, 3] and ``others`` [j, 3]
    (default: the same) in ``num_bins`` bins from min_bin to max_bin."""
    others = positions if others is None else others
    lower = torch.linspace(min_bin, max_bin, num_bins, device=positions.device) ** 2
    upper = torch.cat([lower[1:], lower.new_tensor([1e8])])
    dist2 = ((positions[:, None] - others[None, :]) ** 2).sum(-1, keepdim=True)
    return ((dist2 > lower) & (dist2 < upper)).to(positions.dtype)


class Embedder(nn.Module):
    """Everything in the reference's ``evoformer`` scope before the stacks."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c, z = config.msa_channel, config.pair_channel
        self.config = config
        self.preprocess_1d = Linear(TARGET_FEAT_DIM, c)
        self.preprocess_msa = Linear(MSA_FEAT_DIM, c)
        self.left_single = Linear(TARGET_FEAT_DIM, z)
        self.right_single = Linear(TARGET_FEAT_DIM, z)
        self.prev_pos_linear = Linear(config.prev_pos_num_bins, z)
        self.prev_msa_first_row_norm = LayerNorm(c)
        self.prev_pair_norm = LayerNorm(z)
        # (sic: the reference's key name)
        self.pair_activiations = Linear(2 * config.max_relative_feature + 1, z)
        self.extra_msa_activations = Linear(EXTRA_MSA_FEAT_DIM, config.extra_msa_channel)

    def input_embedding(self, batch, prev, chunk_size: int | None = None):
        """msa [S, N, c] and pair [N, N, z] activations, recycling included; the pair
        in chunks of ``chunk_size`` rows (the relative-position one-hot alone is
        [N, N, 65] int64: 7.7 GiB at 4,000 residues)."""
        target = batch["target_feat"]
        msa = self.preprocess_1d(target)[None] + self.preprocess_msa(batch["msa_feat"])
        first_row = msa[0] + self.prev_msa_first_row_norm(prev["prev_msa_first_row"])
        msa = torch.cat([first_row[None], msa[1:]], dim=0)
        beta = pseudo_beta(batch["aatype"], prev["prev_pos"])
        pos = batch["residue_index"]
        left, right = self.left_single(target), self.right_single(target)
        batched = [left, beta, pos, prev["prev_pair"]]
        pair = chunked(self._pair_rows, batched, [right, beta, pos], chunk_size)
        return msa, pair

    def _pair_rows(self, left_rows, beta_rows, pos_rows, prev_pair_rows, right, beta, pos):
        """Rows i of the pair embedding (Suppl. Alg. 3, 4 and 32), each row alone."""
        cfg = self.config
        pair = left_rows[:, None] + right[None]
        dgram = distogram_one_hot(
            beta_rows, cfg.prev_pos_num_bins, cfg.prev_pos_min_bin, cfg.prev_pos_max_bin, beta
        )
        pair = pair + self.prev_pos_linear(dgram)
        pair = pair + self.prev_pair_norm(prev_pair_rows)
        offset = (pos_rows[:, None] - pos[None, :]).long()
        max_rel = cfg.max_relative_feature
        offset = torch.clamp(offset + max_rel, 0, 2 * max_rel)
        return pair + self.pair_activiations(nnf.one_hot(offset, 2 * max_rel + 1).to(pair.dtype))

    def extra_msa_embedding(self, batch):
        one_hot = nnf.one_hot(batch["extra_msa"].long(), 23).to(batch["extra_deletion_value"].dtype)
        feat = torch.cat(
            [
                one_hot,
                batch["extra_has_deletion"][..., None],
                batch["extra_deletion_value"][..., None],
            ],
            dim=-1,
        )
        return self.extra_msa_activations(feat)
