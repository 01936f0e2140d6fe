"""Evoformer and extra-MSA stack blocks (Jumper et al. 2021, Suppl. 1.6-1.7).

Each sub-module returns the *update*; :class:`EvoformerIteration` adds it to
its input (inference: no dropout). Modules and parameters carry the official
Haiku names, see :mod:`warpbio.fold.model.primitives`.
"""

from __future__ import annotations

import torch
from torch import nn

from warpbio.fold.config import ModelConfig
from warpbio.fold.model.primitives import (
    Attention,
    GlobalAttention,
    LayerNorm,
    Linear,
    chunked,
    mask_bias,
)


class MsaRowAttentionWithPairBias(nn.Module):
    """Suppl. Alg. 7."""

    def __init__(self, msa_channel: int, pair_channel: int, num_head: int):
        super().__init__()
        self.query_norm = LayerNorm(msa_channel)
        self.feat_2d_norm = LayerNorm(pair_channel)
        self.feat_2d_weights = nn.Parameter(
            torch.randn(pair_channel, num_head) * pair_channel**-0.5
        )
        self.attention = Attention(msa_channel, msa_channel, msa_channel, num_head)

    def forward(self, msa, msa_mask, pair, chunk_size=None):
        bias = mask_bias(msa_mask)
        msa = self.query_norm(msa)
        pair_bias = torch.einsum("qkc,ch->hqk", self.feat_2d_norm(pair), self.feat_2d_weights)
        return chunked(self.attention, [msa, msa, bias], [pair_bias], chunk_size)


class MsaColumnAttention(nn.Module):
    """Suppl. Alg. 8."""

    def __init__(self, msa_channel: int, num_head: int):
        super().__init__()
        self.query_norm = LayerNorm(msa_channel)
        self.attention = Attention(msa_channel, msa_channel, msa_channel, num_head)

    def forward(self, msa, msa_mask, chunk_size=None):
        msa = msa.transpose(0, 1)
        msa_mask = msa_mask.transpose(0, 1)
        msa = self.query_norm(msa)
        out = chunked(self.attention, [msa, msa, mask_bias(msa_mask)], [], chunk_size)
        return out.transpose(0, 1)


class MsaColumnGlobalAttention(nn.Module):
    """Suppl. Alg. 19 (extra-MSA stack)."""

    def __init__(self, msa_channel: int, num_head: int):
        super().__init__()
        self.query_norm = LayerNorm(msa_channel)
        self.attention = GlobalAttention(msa_channel, msa_channel, msa_channel, num_head)

    def forward(self, msa, msa_mask, chunk_size=None):
        msa = self.query_norm(msa.transpose(0, 1))
        mask = msa_mask.transpose(0, 1)
        out = chunked(self.attention, [msa, msa, mask], [], chunk_size)
        return out.transpose(0, 1)


class Transition(nn.Module):
    """Suppl. Alg. 9 and 15: LayerNorm, Linear x factor, ReLU, Linear."""

    def __init__(self, num_channel: int, factor: int):
        super().__init__()
        self.input_layer_norm = LayerNorm(num_channel)
        self.transition1 = Linear(num_channel, num_channel * factor)
        self.transition2 = Linear(num_channel * factor, num_channel)

    def _rows(self, act):
        return self.transition2(torch.relu(self.transition1(self.input_layer_norm(act))))

    def forward(self, act, mask=None, chunk_size=None):
        return chunked(self._rows, [act], [], chunk_size)


class OuterProductMean(nn.Module):
    """Suppl. Alg. 10."""

    def __init__(self, msa_channel: int, num_outer_channel: int, pair_channel: int):
        super().__init__()
        self.layer_norm_input = LayerNorm(msa_channel)
        self.left_projection = Linear(msa_channel, num_outer_channel)
        self.right_projection = Linear(msa_channel, num_outer_channel)
        self.output_w = nn.Parameter(
            torch.randn(num_outer_channel, num_outer_channel, pair_channel) / num_outer_channel
        )
        self.output_b = nn.Parameter(torch.zeros(pair_channel))

    def forward(self, msa, msa_mask, chunk_size=None):
        mask = msa_mask.unsqueeze(-1)
        act = self.layer_norm_input(msa)
        left = mask * self.left_projection(act)
        right = mask * self.right_projection(act)
        c = left.shape[-1]
        weight = self.output_w.reshape(c * c, -1)

        def rows(left_rows):  # [S, i, c] -> [i, N, out]
            outer = torch.einsum("sic,sje->ijce", left_rows, right)
            return outer.reshape(*outer.shape[:2], c * c) @ weight + self.output_b

        act = chunked(rows, [left], [], chunk_size, dim=1, out_dim=0)
        norm = torch.einsum("sic,sjc->ijc", mask, mask)
        return act / (1e-3 + norm)


class TriangleMultiplication(nn.Module):
    """Suppl. Alg. 11 (outgoing) and 12 (incoming), the unfused AF2 layout."""

    def __init__(self, pair_channel: int, num_intermediate: int, outgoing: bool):
        super().__init__()
        self.outgoing = outgoing
        self.layer_norm_input = LayerNorm(pair_channel)
        self.left_projection = Linear(pair_channel, num_intermediate)
        self.right_projection = Linear(pair_channel, num_intermediate)
        self.left_gate = Linear(pair_channel, num_intermediate)
        self.right_gate = Linear(pair_channel, num_intermediate)
        self.center_layer_norm = LayerNorm(num_intermediate)
        self.output_projection = Linear(num_intermediate, pair_channel)
        self.gating_linear = Linear(pair_channel, pair_channel)

    def forward(self, pair, pair_mask, chunk_size=None):
        mask = pair_mask.unsqueeze(-1)
        act = self.layer_norm_input(pair)
        left = mask * self.left_projection(act) * torch.sigmoid(self.left_gate(act))
        right = mask * self.right_projection(act) * torch.sigmoid(self.right_gate(act))
        # channel-first batched matmul: outgoing 'ikc,jkc->ijc', incoming 'kjc,kic->ijc'
        if self.outgoing:
            prod = torch.matmul(left.permute(2, 0, 1), right.permute(2, 1, 0))
        else:
            prod = torch.matmul(right.permute(2, 1, 0), left.permute(2, 0, 1))
        out = self.center_layer_norm(prod.permute(1, 2, 0))
        out = self.output_projection(out)
        return out * torch.sigmoid(self.gating_linear(act))


class TriangleAttention(nn.Module):
    """Suppl. Alg. 13 (starting node, per row) and 14 (ending node, per column)."""

    def __init__(self, pair_channel: int, num_head: int, per_column: bool):
        super().__init__()
        self.per_column = per_column
        self.query_norm = LayerNorm(pair_channel)
        self.feat_2d_weights = nn.Parameter(
            torch.randn(pair_channel, num_head) * pair_channel**-0.5
        )
        self.attention = Attention(pair_channel, pair_channel, pair_channel, num_head)

    def forward(self, pair, pair_mask, chunk_size=None):
        if self.per_column:
            pair = pair.transpose(0, 1)
            pair_mask = pair_mask.transpose(0, 1)
        act = self.query_norm(pair)
        pair_bias = torch.einsum("qkc,ch->hqk", act, self.feat_2d_weights)
        out = chunked(self.attention, [act, act, mask_bias(pair_mask)], [pair_bias], chunk_size)
        return out.transpose(0, 1) if self.per_column else out


class EvoformerIteration(nn.Module):
    """One Evoformer block (Suppl. Alg. 6) or one extra-MSA block (Alg. 18)."""

    def __init__(self, config: ModelConfig, msa_channel: int, is_extra_msa: bool):
        super().__init__()
        c, z = msa_channel, config.pair_channel
        self.msa_row_attention_with_pair_bias = MsaRowAttentionWithPairBias(
            c, z, config.msa_row_num_head
        )
        if is_extra_msa:
            self.msa_column_global_attention = MsaColumnGlobalAttention(
                c, config.msa_column_num_head
            )
        else:
            self.msa_column_attention = MsaColumnAttention(c, config.msa_column_num_head)
        self.is_extra_msa = is_extra_msa
        self.msa_transition = Transition(c, config.transition_factor)
        self.outer_product_mean = OuterProductMean(c, config.outer_product_channel, z)
        self.triangle_multiplication_outgoing = TriangleMultiplication(
            z, config.triangle_multiplication_channel, outgoing=True
        )
        self.triangle_multiplication_incoming = TriangleMultiplication(
            z, config.triangle_multiplication_channel, outgoing=False
        )
        self.triangle_attention_starting_node = TriangleAttention(
            z, config.triangle_attention_num_head, per_column=False
        )
        self.triangle_attention_ending_node = TriangleAttention(
            z, config.triangle_attention_num_head, per_column=True
        )
        self.pair_transition = Transition(z, config.transition_factor)

    def forward(self, msa, pair, msa_mask, pair_mask, chunk_size=None):
        msa = msa + self.msa_row_attention_with_pair_bias(msa, msa_mask, pair, chunk_size)
        column = (
            self.msa_column_global_attention if self.is_extra_msa else self.msa_column_attention
        )
        msa = msa + column(msa, msa_mask, chunk_size)
        msa = msa + self.msa_transition(msa, msa_mask, chunk_size)
        pair = pair + self.outer_product_mean(msa, msa_mask, chunk_size)
        pair = pair + self.triangle_multiplication_outgoing(pair, pair_mask, chunk_size)
        pair = pair + self.triangle_multiplication_incoming(pair, pair_mask, chunk_size)
        pair = pair + self.triangle_attention_starting_node(pair, pair_mask, chunk_size)
        pair = pair + self.triangle_attention_ending_node(pair, pair_mask, chunk_size)
        pair = pair + self.pair_transition(pair, pair_mask, chunk_size)
        return msa, pair
