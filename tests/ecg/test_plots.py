"""The report figures drawn in plotting processes match those drawn in process."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from warpbio.ecg import plots

REPO = Path(__file__).resolve().parents[2]


def _jobs(folder: Path) -> list[tuple]:
    rng = np.random.default_rng(1)
    beats = rng.normal(size=(500, 64)).astype(np.float32)
    anomaly = (rng.random(500) < 0.05).astype(int)
    scores = rng.random(500) + anomaly
    latent = rng.normal(size=(500, 2))
    groups = plots.beat_overlay_groups(beats, anomaly, scores, limit=50)
    return [
        (plots.plot_beats, groups, folder / "beats.png", (0.25, 0.45)),
        (plots.plot_latent, latent, scores, anomaly, folder / "latent.png"),
        (plots.plot_scores, scores, anomaly, folder / "scores.png", 0.9),
    ]


def test_workers_draw_the_same_pngs(tmp_path):
    for function, *args in _jobs(tmp_path / "here"):
        function(*args)
    with plots.PlotWorkers(2) as workers:
        futures = workers.draw(_jobs(tmp_path / "pooled"))
        assert len(futures) == 3  # really in the processes, not the fallback
        plots.wait_all(futures)
    for name in ("beats", "latent", "scores"):
        here = (tmp_path / "here" / f"{name}.png").read_bytes()
        assert here == (tmp_path / "pooled" / f"{name}.png").read_bytes(), name


def test_a_failing_figure_is_raised_with_its_traceback():
    with plots.PlotWorkers(2) as workers:
        futures = workers.draw([(np.zeros, -1), (np.ones, 3)])
        with pytest.raises(RuntimeError, match=r"zeros failed(.|\n)*negative dimensions"):
            plots.wait_all(futures)
        plots.wait_all(workers.draw([(np.ones, 3)]))  # the process serves on


def test_falls_back_to_drawing_here(tmp_path, monkeypatch, caplog):
    def no_processes():
        raise OSError("no processes on this node")

    monkeypatch.setattr(plots, "_start_server", no_processes)
    with plots.PlotWorkers(2) as workers:
        assert workers.draw(_jobs(tmp_path)) == []
    assert "no processes on this node" in caplog.text
    assert (tmp_path / "scores.png").stat().st_size > 10_000


def test_calling_script_is_not_rerun(tmp_path):
    """A top-level script (a Snakemake script: no __main__ guard) runs once; spawn and
    forkserver pools would re-run it in every process."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import numpy as np\n"
        "from warpbio.ecg import plots\n"
        "print('script body ran', flush=True)\n"
        "with plots.PlotWorkers(2) as workers:\n"
        "    plots.wait_all(workers.draw([(np.ones, 3)] * 4))\n"
    )
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=120, check=True)  # fmt: skip
    assert done.stdout.count("script body ran") == 1, done.stdout + done.stderr
