"""Evoformer and extra-MSA stack blocks (Jumper et al. 2021, Suppl. 1.6-1.7).

Each sub-module returns the *update*; :class:`EvoformerIteration` adds it to
its input (inference: no dropout). Every forward takes the run's
:class:`~warpbio.fold.model.plan.Plan` (chunking, attention kernel, fused
projections, in-place updates); the default is the reference arithmetic.
Modules and parameters carry the official Haiku names, see
:mod:`warpbio.fold.model.primitives`.
"""

from __future__ import annotations

import torch
from torch import nn

from warpbio.fold.config import ModelConfig
from warpbio.fold.model import kernels
from warpbio.fold.model.chunking import chunked
from warpbio.fold.model.plan import REFERENCE, Plan
from warpbio.fold.model.primitives import (
    Attention,
    GlobalAttention,
    LayerNorm,
    Linear,
    concatenated,
    mask_bias,
)


def self_attention(attention: Attention, plan: Plan):
    """Row-wise self-attention of ``attention`` (one tensor as queries and keys, so
    the fused path can project it once), for :func:`chunked`."""

    def rows(act, bias, nonbatched_bias=None):
        return attention(act, act, bias, nonbatched_bias, plan)

    return rows


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

    def forward(self, msa, msa_mask, pair, plan: Plan = REFERENCE):
        bias = mask_bias(msa_mask)
        msa = self.query_norm(msa)
        pair_bias = torch.einsum("qkc,ch->hqk", self.feat_2d_norm(pair), self.feat_2d_weights)
        rows = self_attention(self.attention, plan)
        return chunked(rows, [msa, bias], [pair_bias], plan.chunk_size)


class MsaColumnAttention(nn.Module):
    """Suppl. Alg. 8."""

    def __init__(self, msa_channel: int, num_head: int):
        super().__init__()
        self.query_norm = LayerNorm(msa_channel)
        self.attention = Attention(msa_channel, msa_channel, msa_channel, num_head)

    def forward(self, msa, msa_mask, plan: Plan = REFERENCE):
        msa = msa.transpose(0, 1)
        msa_mask = msa_mask.transpose(0, 1)
        msa = self.query_norm(msa)
        rows = self_attention(self.attention, plan)
        out = chunked(rows, [msa, mask_bias(msa_mask)], [], plan.chunk_size)
        return out.transpose(0, 1)


class MsaColumnGlobalAttention(nn.Module):
    """Suppl. Alg. 19 (extra-MSA stack)."""

    def __init__(self, msa_channel: int, num_head: int):
        super().__init__()
        self.query_norm = LayerNorm(msa_channel)
        self.attention = GlobalAttention(msa_channel, msa_channel, msa_channel, num_head)

    def forward(self, msa, msa_mask, plan: Plan = REFERENCE):
        msa = self.query_norm(msa.transpose(0, 1))
        mask = msa_mask.transpose(0, 1)

        def rows(act, act_mask):
            return self.attention(act, act, act_mask, plan)

        out = chunked(rows, [msa, mask], [], plan.chunk_size)
        return out.transpose(0, 1)


class Transition(nn.Module):
    """Suppl. Alg. 9 and 15: LayerNorm, Linear x factor, ReLU, Linear."""

    def __init__(self, num_channel: int, factor: int):
        super().__init__()
        self.input_layer_norm = LayerNorm(num_channel)
        self.transition1 = Linear(num_channel, num_channel * factor)
        self.transition2 = Linear(num_channel * factor, num_channel)

    def forward(self, act, mask=None, plan: Plan = REFERENCE):
        relu = torch.relu_ if plan.inplace else torch.relu

        def rows(act_rows):
            hidden = self.transition1(self.input_layer_norm(act_rows))
            return self.transition2(relu(hidden))

        return chunked(rows, [act], [], plan.chunk_size)


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

    def _projections(self, act, mask, plan: Plan):
        if not plan.fused:
            return mask * self.left_projection(act), mask * self.right_projection(act)
        left, right = self.left_projection, self.right_projection
        weights = concatenated(self, "weights", [left.weights, right.weights])
        biases = concatenated(self, "biases", [left.bias, right.bias])
        both = mask * (torch.matmul(act, weights) + biases)
        return both.split(left.weights.shape[1], dim=-1)

    def forward(self, msa, msa_mask, plan: Plan = REFERENCE):
        mask = msa_mask.unsqueeze(-1)
        act = self.layer_norm_input(msa)
        left, right = self._projections(act, mask, plan)
        c = left.shape[-1]
        weight = self.output_w.reshape(c * c, -1)

        def rows(left_rows):  # [S, i, c] -> [i, N, out]
            outer = torch.einsum("sic,sje->ijce", left_rows, right)
            return outer.reshape(*outer.shape[:2], c * c) @ weight + self.output_b

        act = chunked(rows, [left], [], plan.chunk_size, dim=1, out_dim=0)
        # counts of the pairs of unmasked rows, float32 even under autocast
        with torch.autocast(msa.device.type, enabled=False):
            norm = torch.einsum("sic,sjc->ijc", mask.float(), mask.float())
        if plan.inplace:
            return act.div_(norm.add_(1e-3))
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

    def forward(self, pair, pair_mask, plan: Plan = REFERENCE):
        if plan.fused and not plan.chunks(pair.shape[0]):
            return kernels.triangle_multiplication_fused(self, pair, pair_mask)
        return self.update(pair, pair_mask, plan)

    def update(self, pair, pair_mask, plan: Plan = REFERENCE):
        """The update in PyTorch: the reference arithmetic on the default plan; else
        row-chunked, optionally with each side's projection and gate as one GEMM."""
        if plan.fused or plan.chunks(pair.shape[0]):
            return self._chunked_update(pair, pair_mask, plan)
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

    def _gated(self, act, mask, side: str, plan: Plan):
        """mask * projection(act) * sigmoid(gate(act)) of one side ("left"/"right");
        fused: both projections as one GEMM and the gate in one pass."""
        projection, gate = getattr(self, f"{side}_projection"), getattr(self, f"{side}_gate")
        if not plan.fused:
            return mask.unsqueeze(-1) * projection(act) * torch.sigmoid(gate(act))
        weights = concatenated(self, f"{side}_weights", [projection.weights, gate.weights])
        biases = concatenated(self, f"{side}_biases", [projection.bias, gate.bias])
        value, logits = (torch.matmul(act, weights) + biases).chunk(2, dim=-1)
        return kernels.sigmoid_gate(value, logits, mask)

    def _output_gate(self, out, act, plan: Plan):
        logits = self.gating_linear(act)
        if plan.fused:
            return kernels.sigmoid_gate(out, logits)
        multiply = torch.Tensor.mul_ if plan.inplace else torch.mul
        return multiply(out, torch.sigmoid(logits))

    def _chunked_update(self, pair, pair_mask, plan: Plan):
        """Output rows i in chunks. A row block's products need all of the other
        operand: only that one is made whole (channel-first [c, N, N], from chunks
        of pair rows, stored in the dtype the matmul reads); the block's own operand
        and output gate come from its own pair rows (outgoing) or columns
        (incoming). Nothing of [N, N, 2c + z] (23 GiB at 4,000 residues) is kept."""
        norm = self.layer_norm_input
        dtype = _matmul_dtype(pair)
        shared_side, own_side = ("right", "left") if self.outgoing else ("left", "right")

        def shared_rows(pair_rows, mask_rows):  # outgoing right[j, k] -> [c, k, j]
            gated = self._gated(norm(pair_rows), mask_rows, shared_side, plan).to(dtype)
            return gated.permute(2, 1, 0) if self.outgoing else gated.permute(2, 0, 1)

        out_dim = 2 if self.outgoing else 1  # incoming left[k, j] -> [c, k, j]
        cols = chunked(shared_rows, [pair, pair_mask], [], plan.chunk_size, out_dim=out_dim)
        cols = cols.contiguous()
        own_pair, own_mask = (
            (pair, pair_mask)
            if self.outgoing
            else (pair.transpose(0, 1), pair_mask.transpose(0, 1))
        )

        def block(pair_rows, own_rows, own_mask_rows):
            act_rows = norm(pair_rows)
            own_act = act_rows if self.outgoing else norm(own_rows)
            own = self._gated(own_act, own_mask_rows, own_side, plan).permute(2, 0, 1)
            prod = torch.matmul(own, cols)  # [c, rows, N] = sum_k own[i, k] cols[k, j]
            out = self.output_projection(self.center_layer_norm(prod.permute(1, 2, 0)))
            return self._output_gate(out, act_rows, plan)

        return chunked(block, [pair, own_pair, own_mask], [], plan.chunk_size)


def _matmul_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on ``like``'s device reads: autocast's, else float32."""
    device = like.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32


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

    def forward(self, pair, pair_mask, plan: Plan = REFERENCE):
        if self.per_column:
            pair = pair.transpose(0, 1)
            pair_mask = pair_mask.transpose(0, 1)
        act = self.query_norm(pair)
        pair_bias = torch.einsum("qkc,ch->hqk", act, self.feat_2d_weights)
        rows = self_attention(self.attention, plan)
        out = chunked(rows, [act, mask_bias(pair_mask)], [pair_bias], plan.chunk_size)
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

    def forward(self, msa, pair, msa_mask, pair_mask, plan: Plan = REFERENCE):
        # in place: the residual streams are updated without a second full copy;
        # under autocast they stay float32 and take the low-precision updates
        add = torch.Tensor.add_ if plan.inplace else torch.add
        msa = add(msa, self.msa_row_attention_with_pair_bias(msa, msa_mask, pair, plan))
        column = (
            self.msa_column_global_attention if self.is_extra_msa else self.msa_column_attention
        )
        msa = add(msa, column(msa, msa_mask, plan))
        msa = add(msa, self.msa_transition(msa, msa_mask, plan))
        pair = add(pair, self.outer_product_mean(msa, msa_mask, plan))
        pair = add(pair, self.triangle_multiplication_outgoing(pair, pair_mask, plan))
        pair = add(pair, self.triangle_multiplication_incoming(pair, pair_mask, plan))
        pair = add(pair, self.triangle_attention_starting_node(pair, pair_mask, plan))
        pair = add(pair, self.triangle_attention_ending_node(pair, pair_mask, plan))
        pair = add(pair, self.pair_transition(pair, pair_mask, plan))
        return msa, pair
