"""Structure module: invariant point attention, backbone updates, all-atom
coordinates (Jumper et al. 2021, Suppl. 1.8, Alg. 20-24).

Frames are kept as (unit quaternion [N, 4], translation [N, 3]) like the
reference's QuatAffine; rotations are derived from the quaternion.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from warpbio.fold import residue_constants as rc
from warpbio.fold.config import StructureConfig
from warpbio.fold.model.chunking import chunked
from warpbio.fold.model.primitives import LayerNorm, Linear

# --------------------------------------------------------------------------
# Rigid-body helpers
# --------------------------------------------------------------------------


def quat_to_rot(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternion (w, x, y, z) [..., 4] -> rotation matrix [..., 3, 3]."""
    w, x, y, z = q.unbind(-1)
    rows = [
        [w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z],
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def quat_multiply_by_vec(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hamilton product q * (0, v)."""
    w, x, y, z = q.unbind(-1)
    b, c, d = v.unbind(-1)
    return torch.stack(
        [
            -x * b - y * c - z * d,
            w * b + y * d - z * c,
            w * c - x * d + z * b,
            w * d + x * c - y * b,
        ],
        -1,
    )


def pre_compose(
    quat: torch.Tensor, trans: torch.Tensor, update: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the 6-vector backbone update (Suppl. Alg. 23) in the local frame."""
    vec, trans_update = update[..., :3], update[..., 3:]
    rot = quat_to_rot(quat)
    new_quat = quat + quat_multiply_by_vec(quat, vec)
    new_quat = new_quat / torch.linalg.norm(new_quat, dim=-1, keepdim=True)
    new_trans = trans + torch.einsum("nij,nj->ni", rot, trans_update)
    return new_quat, new_trans


def apply_frame(rot: torch.Tensor, trans: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Points [N, P, 3] in residue frames -> global."""
    return torch.einsum("nij,npj->npi", rot, points) + trans[:, None, :]


def invert_frame(rot: torch.Tensor, trans: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Global points [N, P, 3] -> each residue's local frame."""
    return torch.einsum("nji,npj->npi", rot, points - trans[:, None, :])


# --------------------------------------------------------------------------
# Invariant point attention
# --------------------------------------------------------------------------


class InvariantPointAttention(nn.Module):
    """Suppl. Alg. 22."""

    def __init__(self, config: StructureConfig, pair_channel: int, dist_epsilon: float = 1e-8):
        super().__init__()
        h, c = config.num_head, config.num_channel
        self.config, self.dist_epsilon = config, dist_epsilon
        sqk, sv, pqk, pv = (
            config.num_scalar_qk,
            config.num_scalar_v,
            config.num_point_qk,
            config.num_point_v,
        )
        self.q_scalar = Linear(c, h * sqk)
        self.kv_scalar = Linear(c, h * (sv + sqk))
        self.q_point_local = Linear(c, h * 3 * pqk)
        self.kv_point_local = Linear(c, h * 3 * (pqk + pv))
        self.trainable_point_weights = nn.Parameter(torch.full((h,), math.log(math.e - 1.0)))
        self.attention_2d = Linear(pair_channel, h)
        num_features = h * (sv + pv * 4 + pair_channel)
        self.output_projection = Linear(num_features, c)

    def forward(self, single, pair, mask, rot, trans, chunk_size=None, pair_norm=None):
        """single [N, c], pair [N, N, cz], mask [N, 1], frames (rot [N,3,3], trans [N,3]).

        The attention runs over chunks of ``chunk_size`` query rows (its point
        distances are [h, q, k, p, 3]: 8.6 GiB per copy at 4,000 residues);
        ``pair_norm``, when given, normalizes each chunk's pair rows (the caller
        keeps no normalized copy of the pair)."""
        cfg = self.config
        n, h = single.shape[0], cfg.num_head
        sqk, sv, pqk, pv = cfg.num_scalar_qk, cfg.num_scalar_v, cfg.num_point_qk, cfg.num_point_v

        q_scalar = self.q_scalar(single).reshape(n, h, sqk)
        kv_scalar = self.kv_scalar(single).reshape(n, h, sv + sqk)
        k_scalar, v_scalar = kv_scalar.split([sqk, sv], dim=-1)

        def global_points(linear: Linear, per_head: int) -> torch.Tensor:
            local = torch.stack(linear(single).chunk(3, dim=-1), dim=-1)  # [N, h*p, 3]
            return apply_frame(rot, trans, local).reshape(n, h, per_head, 3)

        q_point = global_points(self.q_point_local, pqk)
        kv_point = global_points(self.kv_point_local, pqk + pv)
        k_point, v_point = kv_point.split([pqk, pv], dim=2)
        keys = (k_scalar, v_scalar, k_point, v_point, mask)

        def rows(q_scalar, q_point, pair, mask, rot, trans):
            pair = pair if pair_norm is None else pair_norm(pair)
            return self._attend(q_scalar, q_point, pair, mask, rot, trans, keys)

        batched = [q_scalar, q_point, pair, mask, rot, trans]
        features = chunked(rows, batched, [], chunk_size)
        return self.output_projection(features)

    def _attend(self, q_scalar, q_point, pair, mask, rot, trans, keys):
        """Output features of some query rows [q, ...] against every key."""
        cfg = self.config
        n, h = q_scalar.shape[0], cfg.num_head
        sqk, sv, pqk, pv = cfg.num_scalar_qk, cfg.num_scalar_v, cfg.num_point_qk, cfg.num_point_v
        k_scalar, v_scalar, k_point, v_point, key_mask = keys

        scalar_weights = math.sqrt(1.0 / (3 * sqk))
        point_weights = math.sqrt(1.0 / (3 * pqk * 9.0 / 2))
        point_weights = point_weights * torch.nn.functional.softplus(self.trainable_point_weights)
        attention_2d_weights = math.sqrt(1.0 / 3)

        # [h, q, k]
        q_p, k_p = q_point.permute(1, 0, 2, 3), k_point.permute(1, 0, 2, 3)  # [h, N, p, 3]
        dist2 = ((q_p[:, :, None] - k_p[:, None]) ** 2).sum(-1)  # [h, q, k, p]
        attn_qk_point = -0.5 * (point_weights[:, None, None, None] * dist2).sum(-1)
        q = (scalar_weights * q_scalar).transpose(0, 1)
        k = k_scalar.transpose(0, 1)
        logits = torch.matmul(q, k.transpose(-1, -2)) + attn_qk_point
        logits = logits + attention_2d_weights * self.attention_2d(pair).permute(2, 0, 1)
        mask_2d = mask * key_mask.transpose(0, 1)
        logits = logits - 1e5 * (1.0 - mask_2d)
        attn = torch.softmax(logits, dim=-1)

        result_scalar = torch.matmul(attn, v_scalar.transpose(0, 1)).transpose(0, 1)
        result_point = torch.einsum("hqk,khpx->qhpx", attn, v_point).reshape(n, h * pv, 3)
        result_point = invert_frame(rot, trans, result_point)  # [q, h*pv, 3]
        norm = torch.sqrt(self.dist_epsilon + (result_point**2).sum(-1))
        over_2d = torch.einsum("hij,ijc->ihc", attn, pair).reshape(n, -1)
        return torch.cat(
            [
                result_scalar.reshape(n, h * sv),
                result_point[..., 0],
                result_point[..., 1],
                result_point[..., 2],
                norm,
                over_2d,
            ],
            dim=-1,
        )


# --------------------------------------------------------------------------
# Side chains and all-atom coordinates
# --------------------------------------------------------------------------


def _table(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(array, device=like.device)


def torsion_angles_to_frames(aatype, rot, trans, angles):
    """Backbone frames + 7 torsions (sin, cos) -> 8 rigid-group frames (Alg. 24)."""
    n = aatype.shape[0]
    default = _table(rc.RESTYPE_RIGID_GROUP_DEFAULT_FRAME, rot).to(rot.dtype)[aatype]
    d_rot, d_trans = default[..., :3, :3], default[..., :3, 3]  # [N, 8, 3, 3], [N, 8, 3]
    sin = torch.cat([torch.zeros(n, 1, dtype=rot.dtype, device=rot.device), angles[..., 0]], -1)
    cos = torch.cat([torch.ones(n, 1, dtype=rot.dtype, device=rot.device), angles[..., 1]], -1)
    zeros, ones = torch.zeros_like(sin), torch.ones_like(sin)
    rot_x = torch.stack(
        [
            torch.stack([ones, zeros, zeros], -1),
            torch.stack([zeros, cos, -sin], -1),
            torch.stack([zeros, sin, cos], -1),
        ],
        -2,
    )  # [N, 8, 3, 3]
    f_rot = torch.matmul(d_rot, rot_x)
    f_trans = d_trans
    # chi2..chi4 frames hang on the previous chi frame, not on the backbone
    rots, transes = list(f_rot.unbind(1)), list(f_trans.unbind(1))
    for group in (5, 6, 7):
        prev_r, prev_t = rots[group - 1], transes[group - 1]
        transes[group] = torch.einsum("nij,nj->ni", prev_r, transes[group]) + prev_t
        rots[group] = torch.matmul(prev_r, rots[group])
    f_rot, f_trans = torch.stack(rots, 1), torch.stack(transes, 1)
    g_rot = torch.matmul(rot[:, None], f_rot)
    g_trans = torch.einsum("nij,ngj->ngi", rot, f_trans) + trans[:, None]
    return g_rot, g_trans


def frames_to_atom14(aatype, g_rot, g_trans):
    """Literature atom positions placed in their groups' frames -> [N, 14, 3]."""
    group = _table(rc.RESTYPE_ATOM14_TO_RIGID_GROUP, aatype)[aatype]  # [N, 14]
    lit = _table(rc.RESTYPE_ATOM14_RIGID_GROUP_POSITIONS, g_rot).to(g_rot.dtype)[aatype]
    mask = _table(rc.RESTYPE_ATOM14_MASK, g_rot).to(g_rot.dtype)[aatype]
    index = group[..., None, None].expand(-1, -1, 3, 3)
    a_rot = torch.gather(g_rot, 1, index)
    a_trans = torch.gather(g_trans, 1, group[..., None].expand(-1, -1, 3))
    positions = torch.einsum("naij,naj->nai", a_rot, lit) + a_trans
    return positions * mask[..., None]


def atom14_to_atom37(aatype, atom14):
    """[N, 14, 3] -> [N, 37, 3], zero where the residue has no such atom."""
    index = _table(rc.RESTYPE_ATOM37_TO_ATOM14, aatype)[aatype]  # [N, 37]
    exists = _table(rc.RESTYPE_ATOM37_MASK, atom14).to(atom14.dtype)[aatype]
    atom37 = torch.gather(atom14, 1, index[..., None].expand(-1, -1, 3))
    return atom37 * exists[..., None]


class RigidSidechain(nn.Module):
    """Torsion angles from the single representation (Suppl. Alg. 20 lines 11-14)."""

    def __init__(self, num_input: int, num_channel: int, num_residual_block: int):
        super().__init__()
        self.input_projection = Linear(num_input, num_channel)
        self.input_projection_1 = Linear(num_input, num_channel)
        self.num_residual_block = num_residual_block
        for i in range(num_residual_block):
            suffix = "" if i == 0 else f"_{i}"
            self.add_module(f"resblock1{suffix}", Linear(num_channel, num_channel))
            self.add_module(f"resblock2{suffix}", Linear(num_channel, num_channel))
        self.unnormalized_angles = Linear(num_channel, 14)

    def forward(self, act, initial_act):
        act = self.input_projection(torch.relu(act)) + self.input_projection_1(
            torch.relu(initial_act)
        )
        for i in range(self.num_residual_block):
            suffix = "" if i == 0 else f"_{i}"
            update = getattr(self, f"resblock1{suffix}")(torch.relu(act))
            act = act + getattr(self, f"resblock2{suffix}")(torch.relu(update))
        raw = self.unnormalized_angles(torch.relu(act)).reshape(act.shape[0], 7, 2)
        norm = torch.sqrt(torch.clamp((raw**2).sum(-1, keepdim=True), min=1e-12))
        return raw / norm, raw


class FoldIteration(nn.Module):
    """One of the 8 shared-weight structure-module layers (Suppl. Alg. 20 lines 6-21)."""

    def __init__(self, config: StructureConfig, pair_channel: int):
        super().__init__()
        c = config.num_channel
        self.config = config
        self.invariant_point_attention = InvariantPointAttention(config, pair_channel)
        self.attention_layer_norm = LayerNorm(c)
        for i in range(config.num_layer_in_transition):
            self.add_module("transition" if i == 0 else f"transition_{i}", Linear(c, c))
        self.transition_layer_norm = LayerNorm(c)
        self.affine_update = Linear(c, 6)
        self.rigid_sidechain = RigidSidechain(
            c, config.sidechain_num_channel, config.sidechain_num_residual_block
        )

    def forward(self, act, pair, mask, quat, trans, chunk_size=None, pair_norm=None):
        rot = quat_to_rot(quat)
        ipa = self.invariant_point_attention
        act = act + ipa(act, pair, mask, rot, trans, chunk_size, pair_norm)
        act = self.attention_layer_norm(act)
        hidden = act
        n_layers = self.config.num_layer_in_transition
        for i in range(n_layers):
            hidden = getattr(self, "transition" if i == 0 else f"transition_{i}")(hidden)
            if i < n_layers - 1:
                hidden = torch.relu(hidden)
        act = self.transition_layer_norm(act + hidden)
        quat, trans = pre_compose(quat, trans, self.affine_update(act))
        return act, quat, trans


class StructureModule(nn.Module):
    """Suppl. Alg. 20: 8 iterations of IPA + backbone update, then all atoms."""

    def __init__(self, config: StructureConfig, seq_channel: int, pair_channel: int):
        super().__init__()
        self.config = config
        self.single_layer_norm = LayerNorm(seq_channel)
        self.initial_projection = Linear(seq_channel, config.num_channel)
        self.pair_layer_norm = LayerNorm(pair_channel)
        self.fold_iteration = FoldIteration(config, pair_channel)

    def forward(
        self, single, pair, seq_mask, aatype, chunk_size: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Chunked (``chunk_size`` query rows), every layer normalizes the pair rows
        it reads instead of keeping a normalized float32 copy of the pair."""
        n = single.shape[0]
        act = self.single_layer_norm(single)
        initial_act = act
        act = self.initial_projection(act)
        pair_norm = self.pair_layer_norm
        if chunk_size is None or chunk_size >= n:
            pair, pair_norm = pair_norm(pair), None
        mask = seq_mask[:, None]
        quat = torch.zeros(n, 4, dtype=single.dtype, device=single.device)
        quat[:, 0] = 1.0
        trans = torch.zeros(n, 3, dtype=single.dtype, device=single.device)
        traj = []
        for _ in range(self.config.num_layer):
            act, quat, trans = self.fold_iteration(
                act, pair, mask, quat, trans, chunk_size, pair_norm
            )
            traj.append(torch.cat([quat, trans * self.config.position_scale], -1))
        # side chains of the final layer (earlier layers' side chains feed nothing)
        angles, raw_angles = self.fold_iteration.rigid_sidechain(act, initial_act)
        rot, scaled = quat_to_rot(quat), trans * self.config.position_scale
        g_rot, g_trans = torsion_angles_to_frames(aatype, rot, scaled, angles)
        atom14 = frames_to_atom14(aatype, g_rot, g_trans)
        atom37 = atom14_to_atom37(aatype, atom14)
        return {
            "act": act,
            "traj": torch.stack(traj),
            "final_affines": traj[-1],
            "angles_sin_cos": angles,
            "unnormalized_angles_sin_cos": raw_angles,
            "final_atom14_positions": atom14,
            "final_atom_positions": atom37,
            "final_atom_mask": _table(rc.RESTYPE_ATOM37_MASK, atom37).to(atom37.dtype)[aatype],
        }
