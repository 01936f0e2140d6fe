"""The AlphaFold2 monomer input pipeline (Jumper et al. 2021, Suppl. 1.2).

Per target, once: sequence features (aatype, residue index), the MSA in
AlphaFold's residue order, masks and the MSA profile. Per recycling iteration
(AF2 resamples the MSA at every recycle), from a seeded generator:

1. sample up to ``max_msa_clusters`` cluster centres (query first, the rest a
   random permutation); the other sequences become the extra MSA;
2. BERT-style masking of 15% of the centres' positions (10% uniform amino
   acid, 10% profile, 10% unchanged, 70% mask token), as at AF2 inference;
3. assign each extra sequence to its nearest centre (Hamming agreement on
   amino acids, gaps and masks not counting) and summarise the clusters
   (profile and mean deletions);
4. keep a random ``max_extra_msa`` subset of the extra MSA;
5. ``msa_feat`` [S, N, 49] = one-hot(23), has_deletion, deletion_value,
   cluster profile(23), cluster deletion mean; ``target_feat`` [N, 22].

No padding to fixed sizes: padded rows carry zero masks in AF2 and change
nothing, so they are left out. The order of operations follows AF2's
``data_transforms``; its random draws (TF Philox) are not reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from warpbio.fold import residue_constants as rc
from warpbio.fold.msa import Msa, msa_arrays

MASK_TOKEN = 22  # the 23rd MSA class: BERT mask


@dataclass(frozen=True)
class FeatureConfig:
    max_msa_clusters: int = 512
    max_extra_msa: int = 5120
    num_recycle: int = 3
    masked_msa_replace_fraction: float = 0.15
    uniform_prob: float = 0.1
    profile_prob: float = 0.1
    same_prob: float = 0.1


def aatype_of(sequence: str) -> np.ndarray:
    """Residue types 0..19, 20 for X and anything not among the 20."""
    return np.array([rc.RESTYPE_ORDER.get(c, rc.UNK_INDEX) for c in sequence], dtype=np.int64)


def target_features(sequence: str, msa: Msa) -> dict[str, np.ndarray]:
    """Features before MSA sampling (AF2's non-ensembled transforms)."""
    hhblits, deletions = msa_arrays(msa)
    msa_ids = rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE[hhblits].astype(np.int64)
    n = len(sequence)
    return {
        "aatype": aatype_of(sequence),
        "residue_index": np.arange(n, dtype=np.int64),
        "between_segment_residues": np.zeros(n, dtype=np.float32),
        "seq_mask": np.ones(n, dtype=np.float32),
        "msa": msa_ids,
        "deletion_matrix": deletions,
        "msa_mask": np.ones(msa_ids.shape, dtype=np.float32),
        "hhblits_profile": one_hot(msa_ids, 22).mean(0),
    }


def one_hot(index: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[index]


def sample_msa(features, max_seq: int, rng: np.random.Generator) -> dict:
    """Cluster centres (query + random others) and the extra MSA (the rest)."""
    num_seq = features["msa"].shape[0]
    order = np.concatenate([[0], 1 + rng.permutation(num_seq - 1)])
    chosen, rest = order[: min(max_seq, num_seq)], order[min(max_seq, num_seq) :]
    out = dict(features)
    for key in ("msa", "deletion_matrix", "msa_mask"):
        out["extra_" + key] = features[key][rest]
        out[key] = features[key][chosen]
    return out


def make_masked_msa(features, config: FeatureConfig, rng: np.random.Generator) -> dict:
    """BERT corruption of the cluster centres (kept as true_msa / bert_mask)."""
    msa = features["msa"]
    random_aa = np.array([0.05] * 20 + [0.0, 0.0], dtype=np.float32)
    probs = (
        config.uniform_prob * random_aa
        + config.profile_prob * features["hhblits_profile"][None]
        + config.same_prob * one_hot(msa, 22)
    )
    mask_prob = 1.0 - config.profile_prob - config.same_prob - config.uniform_prob
    probs = np.concatenate([probs, np.full((*msa.shape, 1), mask_prob, np.float32)], -1)
    position = rng.random(msa.shape) < config.masked_msa_replace_fraction
    cumulative = np.cumsum(probs, axis=-1)
    draw = rng.random(msa.shape)[..., None] * cumulative[..., -1:]
    replacement = np.minimum((draw >= cumulative).sum(-1), probs.shape[-1] - 1)
    out = dict(features)
    out["true_msa"] = msa
    out["bert_mask"] = position.astype(np.float32)
    out["msa"] = np.where(position, replacement, msa)
    return out


def nearest_neighbor_clusters(features) -> np.ndarray:
    """Index of the most agreeing centre for every extra sequence (first on ties)."""
    weights = np.concatenate([np.ones(21), np.zeros(2)]).astype(np.float32)
    centres = features["msa_mask"][..., None] * one_hot(features["msa"], 23) * weights
    extra = features["extra_msa_mask"][..., None] * one_hot(features["extra_msa"], 23)
    if extra.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    agreement = extra.reshape(extra.shape[0], -1) @ centres.reshape(centres.shape[0], -1).T
    return agreement.argmax(1)


def summarize_clusters(features, assignment: np.ndarray) -> dict:
    """Cluster profile [S, N, 23] and mean deletions [S, N] (centre included)."""
    num_seq = features["msa"].shape[0]
    mask = features["extra_msa_mask"]

    def cluster_sum(values):
        total = np.zeros((num_seq, *values.shape[1:]), dtype=np.float64)
        np.add.at(total, assignment, values)
        return total

    counts = 1e-6 + features["msa_mask"] + cluster_sum(mask)
    profile = cluster_sum(mask[..., None] * one_hot(features["extra_msa"], 23))
    profile += one_hot(features["msa"], 23)
    deletions = cluster_sum(mask * features["extra_deletion_matrix"]) + features["deletion_matrix"]
    out = dict(features)
    out["cluster_profile"] = (profile / counts[..., None]).astype(np.float32)
    out["cluster_deletion_mean"] = (deletions / counts).astype(np.float32)
    return out


def crop_extra_msa(features, max_extra: int, rng: np.random.Generator) -> dict:
    num = features["extra_msa"].shape[0]
    keep = rng.permutation(num)[: min(max_extra, num)]
    out = dict(features)
    for key in ("extra_msa", "extra_deletion_matrix", "extra_msa_mask"):
        out[key] = features[key][keep]
    return out


def deletion_value(deletions: np.ndarray) -> np.ndarray:
    return (np.arctan(deletions / 3.0) * (2.0 / np.pi)).astype(np.float32)


def make_msa_feat(features) -> dict:
    out = dict(features)
    out["msa_feat"] = np.concatenate(
        [
            one_hot(features["msa"], 23),
            np.clip(features["deletion_matrix"], 0, 1)[..., None],
            deletion_value(features["deletion_matrix"])[..., None],
            features["cluster_profile"],
            deletion_value(features["cluster_deletion_mean"])[..., None],
        ],
        axis=-1,
    ).astype(np.float32)
    out["target_feat"] = np.concatenate(
        [
            np.clip(features["between_segment_residues"], 0, 1)[:, None],
            one_hot(features["aatype"], 21),
        ],
        axis=-1,
    ).astype(np.float32)
    out["extra_has_deletion"] = np.clip(features["extra_deletion_matrix"], 0, 1).astype(np.float32)
    out["extra_deletion_value"] = deletion_value(features["extra_deletion_matrix"])
    return out


PER_RECYCLE = (
    "msa_feat",
    "msa_mask",
    "extra_msa",
    "extra_has_deletion",
    "extra_deletion_value",
    "extra_msa_mask",
    "bert_mask",
    "true_msa",
)
SHARED = ("aatype", "residue_index", "seq_mask", "target_feat")


def recycle_features(base, config: FeatureConfig, rng: np.random.Generator) -> dict:
    """Steps 1-5 of the module docstring for one recycling iteration."""
    features = sample_msa(base, config.max_msa_clusters, rng)
    features = make_masked_msa(features, config, rng)
    features = summarize_clusters(features, nearest_neighbor_clusters(features))
    features = crop_extra_msa(features, config.max_extra_msa, rng)
    features = make_msa_feat(features)
    if features["extra_msa"].shape[0] == 0:
        # no extra sequences: one all-gap row with a zero mask, as AF2's padding gives
        n = features["aatype"].shape[0]
        features["extra_msa"] = np.full((1, n), rc.GAP_INDEX, dtype=np.int64)
        for key in ("extra_has_deletion", "extra_deletion_value", "extra_msa_mask"):
            features[key] = np.zeros((1, n), dtype=np.float32)
    return features


def build_features(
    sequence: str, msa: Msa, config: FeatureConfig, seed: int
) -> dict[str, np.ndarray]:
    """Model inputs for all recycling iterations: per-recycle arrays stacked on axis 0."""
    rng = np.random.default_rng(seed)
    base = target_features(sequence, msa)
    iterations = [recycle_features(base, config, rng) for _ in range(config.num_recycle + 1)]
    out = {key: iterations[0][key] for key in SHARED}
    for key in PER_RECYCLE:
        out[key] = np.stack([it[key] for it in iterations])
    out["num_alignments"] = np.array(msa_arrays(msa)[0].shape[0])
    return out


def recycle_batch(features, recycle: int) -> dict[str, np.ndarray]:
    """The model's inputs for one recycling iteration."""
    batch = {key: features[key] for key in SHARED}
    for key in PER_RECYCLE:
        batch[key] = features[key][recycle % features[key].shape[0]]
    return batch


def save_features(path, features: dict[str, np.ndarray]) -> None:
    """Write the features npz atomically."""
    from warpbio.io import atomic_write

    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **features)


def load_features(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
