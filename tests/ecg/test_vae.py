"""VAE: reproducible on the CPU for a seed; the demo's scores find the injected PVCs."""

import numpy as np
import pytest
import yaml

from warpbio.ecg.beats import beat_labels, embed_beats
from warpbio.ecg.io import Annotations, SheetRow
from warpbio.ecg.peaks import detect_r_peaks
from warpbio.ecg.pipeline import Settings, run_pipeline
from warpbio.ecg.simulate import EcgSimulationSpec, simulate_ecg, write_annotations, write_csv
from warpbio.ecg.vae import VaeSettings, auroc, score_beats, split_rows, train_vae

from .conftest import REPO


@pytest.fixture(scope="module")
def beats():
    sim = simulate_ecg(EcgSimulationSpec(duration_s=240), seed=1)
    peaks = detect_r_peaks(sim.signals[:, 0].copy(), sim.spec.fs)
    vectors, table = embed_beats(peaks).to_host()
    labels = beat_labels(table["sample"], Annotations(sim.r_peaks, sim.symbols), sim.spec.fs)
    return vectors, labels


def test_same_seed_same_model_and_scores_on_cpu(beats):
    """Acceptance 5 (first half): bit-identical weights and scores for one seed."""
    vectors, _ = beats
    settings = VaeSettings(epochs=2, batch_size=64)
    valid = np.ones(len(vectors), dtype=bool)
    first = train_vae(vectors, valid, settings, seed=7)
    second = train_vae(vectors, valid, settings, seed=7)
    other = train_vae(vectors, valid, settings, seed=8)
    for key, value in first.model.state_dict().items():
        assert (value == second.model.state_dict()[key]).all(), key
    assert not all(
        (value == other.model.state_dict()[key]).all()
        for key, value in first.model.state_dict().items()
    )
    assert (first.train == second.train).all() and not (first.train == other.train).all()
    scores = [score_beats(t.model, vectors, settings)[0].numpy() for t in (first, second)]
    np.testing.assert_array_equal(scores[0], scores[1])
    assert np.isfinite(scores[0]).all()


def test_split_is_75_25_of_valid_rows_only():
    import torch

    valid = torch.tensor([True] * 80 + [False] * 20)
    train, held_out, n_train = split_rows(valid, 0.75, seed=0)
    assert int(n_train) == 60 and int(train.sum()) == 60 and int(held_out.sum()) == 20
    assert not (train & ~valid).any() and not (held_out & ~valid).any()
    assert not (train & held_out).any()


def test_gpu_style_masked_training_equals_plain_training(beats):
    """The GPU's loop (padded buffer, no host counts, empty tail batches) gives the
    CPU's model bit for bit: padding and empty batches change nothing."""
    vectors, _ = beats
    settings = VaeSettings(epochs=2, batch_size=64)
    plain = train_vae(vectors, np.ones(len(vectors), bool), settings, seed=3)
    padded = np.concatenate([vectors, np.zeros((300, vectors.shape[1]), np.float32)])
    padded[len(vectors) :] = 7.0  # garbage in the padding must not leak in
    valid = np.arange(len(padded)) < len(vectors)
    masked = train_vae(padded, valid, settings, seed=3, host_counts=False)
    assert int(np.ceil(0.75 * len(padded) / 64)) > int(np.ceil(len(vectors) * 0.75 / 64))
    assert (masked.train[: len(vectors)] == plain.train).all() and not masked.train[-40:].any()
    for key, value in plain.model.state_dict().items():
        assert (value == masked.model.state_dict()[key]).all(), key
    np.testing.assert_array_equal(plain.epoch_losses.numpy(), masked.epoch_losses.numpy())


def test_auroc_matches_definition():
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)) == 0.75
    assert np.isnan(auroc(np.array([1.0, 2.0]), np.array([0, 0], bool)))


def test_demo_config_separates_pvcs(tmp_path):
    """Acceptance 2: the demo's recording and settings give AUROC >= 0.95 on held-out beats."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["ecg"]
    spec = EcgSimulationSpec(**config["simulate"])
    sim = simulate_ecg(spec, seed=config["seed"])
    write_csv(sim, tmp_path / "demo.csv")
    write_annotations(sim, tmp_path / "demo.tsv")
    row = SheetRow("synthetic", str(tmp_path / "demo.csv"), "csv", spec.fs, "MLII",
                   str(tmp_path / "demo.tsv"))  # fmt: skip
    result = run_pipeline([row], Settings.from_config(config), np, seed=config["seed"],
                          out_dir=tmp_path / "out")  # fmt: skip
    held_out = result.auroc["held_out"]
    print(f"demo AUROC (held-out): {held_out}")
    assert held_out["anomalies"] >= 5 and held_out["auroc"] >= 0.95
    for name in ("signal", "beats", "latent", "scores"):
        assert (tmp_path / f"out/plots/{name}.png").stat().st_size > 10_000
