"""The feature pipeline against AlphaFold2's own (alphafold.data parsers and the
alphafold.model.tf transforms, which this fork runs on NumPy instead of
TensorFlow). Deterministic steps are compared exactly on the same inputs; the
random steps (TF Philox draws we do not reproduce) by their statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from warpbio.fold import features as ft
from warpbio.fold.msa import (
    InputError,
    deduplicate,
    parse_a3m,
    parse_stockholm,
    read_msa,
    read_targets,
    single_sequence_msa,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "folding"
KWC = SHARED / "6KWC"
needs_data = pytest.mark.skipif(not KWC.exists(), reason="shared folding data absent")


def kwc_target():
    return read_targets(KWC / "6kwc.fasta")[0]


@needs_data
def test_a3m_parsing_matches_reference_parser():
    parsers = pytest.importorskip("alphafold.data.parsers")
    text = (KWC / "bfd_uniref_hits.a3m").read_text()
    ours, ref = parse_a3m(text), parsers.parse_a3m(text)
    assert ours.sequences == list(ref.sequences)
    assert ours.deletion_matrix == [list(d) for d in ref.deletion_matrix]
    assert len(ours) == 1428  # the data README's count
    assert sum(map(sum, ours.deletion_matrix)) > 0


def test_stockholm_parsing_matches_reference_parser():
    parsers = pytest.importorskip("alphafold.data.parsers")
    text = "\n".join(
        [
            "# STOCKHOLM 1.0",
            "query      MK-LV--AG",
            "hit/1-9    MKALVQQAG",
            "hit2/3-8   -KA-VQ-A-",
            "",
            "query      TT",
            "hit/1-9    T-",
            "hit2/3-8   TS",
            "//",
        ]
    )
    ours, ref = parse_stockholm(text), parsers.parse_stockholm(text)
    assert ours.sequences == list(ref.sequences)
    assert ours.deletion_matrix == [list(d) for d in ref.deletion_matrix]
    assert ours.sequences[0] == "MKLVAGTT"


@needs_data
def test_dedup_keeps_first_copies_and_the_query():
    msa = read_msa(KWC / "bfd_uniref_hits.a3m", kwc_target().sequence)
    raw = parse_a3m((KWC / "bfd_uniref_hits.a3m").read_text())
    assert msa.sequences[0] == raw.sequences[0]
    assert len(set(msa.sequences)) == len(msa) == len(set(raw.sequences))


def reference_base(sequence, msa):
    """AF2's non-ensembled transforms on our parsed MSA (TF-free NumPy backend)."""
    from alphafold.data import parsers, pipeline
    from alphafold.model.tf import data_transforms as dt

    raw = {
        **pipeline.make_sequence_features(sequence, "t", len(sequence)),
        **pipeline.make_msa_features(
            [parsers.Msa(msa.sequences, msa.deletion_matrix, ["x"] * len(msa))]
        ),
    }
    protein = {
        "aatype": np.argmax(raw["aatype"], -1).astype(np.int32),
        "msa": raw["msa"],
        "deletion_matrix": raw["deletion_matrix_int"].astype(np.float32),
        "between_segment_residues": raw["between_segment_residues"],
    }
    protein = dt.correct_msa_restypes(protein)
    protein = dt.make_msa_mask(protein)
    protein = dt.make_hhblits_profile(protein)
    return raw, protein


@needs_data
def test_deterministic_steps_equal_reference():
    pytest.importorskip("alphafold.model.tf.data_transforms")
    from alphafold.model.tf import data_transforms as dt

    target = kwc_target()
    msa = read_msa(KWC / "bfd_uniref_hits.a3m", target.sequence)
    _, ref = reference_base(target.sequence, msa)
    base = ft.target_features(target.sequence, msa)
    np.testing.assert_array_equal(base["msa"], ref["msa"])
    np.testing.assert_allclose(base["hhblits_profile"], ref["hhblits_profile"], atol=1e-6)
    np.testing.assert_array_equal(base["aatype"], ref["aatype"])

    # same random choices on both sides: our sampling and masking, then the
    # reference's clustering, summaries and msa_feat on those very arrays
    rng = np.random.default_rng(0)
    config = ft.FeatureConfig(max_msa_clusters=64, max_extra_msa=200)
    ours = ft.make_masked_msa(ft.sample_msa(base, config.max_msa_clusters, rng), config, rng)
    theirs = {k: np.array(v) for k, v in ours.items()}
    theirs = dt.nearest_neighbor_clusters()(theirs)
    theirs = dt.summarize_clusters()(theirs)
    assignment = ft.nearest_neighbor_clusters(ours)
    np.testing.assert_array_equal(assignment, theirs["extra_cluster_assignment"])
    ours = ft.summarize_clusters(ours, assignment)
    np.testing.assert_allclose(ours["cluster_profile"], theirs["cluster_profile"], atol=1e-6)
    np.testing.assert_allclose(
        ours["cluster_deletion_mean"], theirs["cluster_deletion_mean"], atol=1e-5
    )
    ours = ft.make_msa_feat(ours)
    theirs = dt.make_msa_feat()(theirs)
    for key in ("msa_feat", "target_feat", "extra_has_deletion", "extra_deletion_value"):
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-6, err_msg=key)


@needs_data
def test_random_steps_match_reference_statistics():
    """Whole pipeline, ours vs the reference's (its own seeded draws)."""
    pytest.importorskip("alphafold.model.features")
    from alphafold.model import features as af_features

    from fold.af2_reference import reference_config

    target = kwc_target()
    msa = read_msa(KWC / "bfd_uniref_hits.a3m", target.sequence)
    raw, _ = reference_base(target.sequence, msa)
    cfg = reference_config()
    cfg.data.eval.max_msa_clusters = 128
    cfg.data.common.max_extra_msa = 512
    cfg.data.common.num_recycle = 1
    theirs = af_features.np_example_to_features(raw, cfg, random_seed=0)
    config = ft.FeatureConfig(max_msa_clusters=128, max_extra_msa=512, num_recycle=1)
    ours = ft.build_features(target.sequence, msa, config, seed=0)

    assert ours["msa_feat"].shape == theirs["msa_feat"].shape  # [2, 128, 191, 49]
    assert ours["extra_msa"].shape == theirs["extra_msa"].shape  # [2, 512, 191]
    np.testing.assert_array_equal(ours["target_feat"], theirs["target_feat"][0])
    # BERT masking: 15% of centre positions, both sides
    for name, bert in (("ours", ours["bert_mask"]), ("reference", theirs["bert_mask"])):
        assert abs(bert.mean() - 0.15) < 0.01, (name, bert.mean())
    # the query row stays first; its true residues are the target
    np.testing.assert_array_equal(ours["true_msa"][:, 0], theirs["true_msa"][:, 0])
    # cluster profiles and feature means agree statistically
    for channel in (slice(0, 23), slice(23, 25), slice(25, 48), slice(48, 49)):
        a, b = ours["msa_feat"][..., channel].mean(), theirs["msa_feat"][..., channel].mean()
        assert abs(a - b) < 0.02 * max(abs(b), 1e-3) + 2e-3, (channel, a, b)
    # resampling: the recycles see different centres, on both sides
    for feats in (ours, theirs):
        assert not np.array_equal(feats["msa_feat"][0], feats["msa_feat"][1])


def test_same_seed_same_features_and_new_seed_differs():
    msa = single_sequence_msa("MKTAYIAKQRQISFVKSHFSRQ")
    msa.sequences += ["MKTAYIAKQR-ISFVKSHFSRQ", "MKSAYIAKQRQISFVKSHF-RQ", "M-TAYLAKQRQISFVKSHFSRQ"]
    msa.deletion_matrix += [[0] * 22, [1] + [0] * 21, [0] * 22]
    config = ft.FeatureConfig(max_msa_clusters=2, max_extra_msa=8, num_recycle=2)
    a = ft.build_features("MKTAYIAKQRQISFVKSHFSRQ", msa, config, seed=3)
    b = ft.build_features("MKTAYIAKQRQISFVKSHFSRQ", msa, config, seed=3)
    c = ft.build_features("MKTAYIAKQRQISFVKSHFSRQ", msa, config, seed=4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a[k], c[k]) for k in ft.PER_RECYCLE)
    assert a["msa_feat"].shape == (3, 2, 22, 49) and a["extra_msa"].shape == (3, 2, 22)
    assert len(deduplicate(msa)) == 4


def test_single_sequence_mode_has_one_masked_extra_row():
    features = ft.build_features(
        "ACDEFGHIK", single_sequence_msa("ACDEFGHIK"), ft.FeatureConfig(), 0
    )
    assert features["msa_feat"].shape == (4, 1, 9, 49)
    assert features["extra_msa_mask"].sum() == 0


@pytest.mark.parametrize(
    ("fasta", "message"),
    [
        (">t\nMKT1AY\n", "non-amino-acid character(s) '1' (first at position 4)"),
        (">t\nMK-AY\n", "non-amino-acid character(s) '-'"),
        (">t\n\n", "the sequence is empty"),
        ("MKT\n", "not a FASTA file"),
    ],
)
def test_bad_fasta_gets_one_clear_message(tmp_path, fasta, message):
    path = tmp_path / "bad.fasta"
    path.write_text(fasta)
    with pytest.raises(InputError) as error:
        read_targets(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_msa_query_mismatch_and_empty_msa(tmp_path):
    a3m = tmp_path / "t.a3m"
    a3m.write_text(">query\nMKTAYI\n>hit\nMKTAYV\n")
    with pytest.raises(InputError, match="first sequence is not the target sequence"):
        read_msa(a3m, "MKTAYA")
    empty = tmp_path / "empty.a3m"
    empty.write_text("")
    with pytest.raises(InputError, match="the MSA is empty"):
        read_msa(empty, "MKTAYA")
