"""fold.schedule.mode batch through Snakemake: one fold_predict_batch job for the
demo's two fold targets on CPU with two pinned instances gives the per-target
mode's outputs (the finished demo's fold_predict files)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
from conftest import planned_jobs, run_snakemake, write_config

pytestmark = pytest.mark.workflow

MODEL = "model_1_ptm"


def batch_config(demo: dict) -> dict:
    config = copy.deepcopy(demo)
    for name in ("singlecell", "genotype", "ecg"):
        config[name]["enabled"] = False
    config["fold"].update(backend="cpu", relax=False)
    config["fold"]["schedule"] = {"mode": "batch", "cpu_instances": 2, "threads": 2}
    return config


def atoms(pdb_text: str) -> tuple[list[str], np.ndarray]:
    """(atom records without coordinates, coordinates) of a PDB file."""
    rows = [line for line in pdb_text.splitlines() if line.startswith("ATOM")]
    names = [line[:30] + line[54:] for line in rows]
    xyz = np.array([[float(line[i : i + 8]) for i in (30, 38, 46)] for line in rows])
    return names, xyz


def test_batch_mode_plans_one_job_and_matches_per_target(finished_demo, tmp_path):
    demo_dir, demo = finished_demo
    config = batch_config(demo)
    configfile = write_config(tmp_path, config)
    planned = planned_jobs(tmp_path, configfile)
    assert planned["fold_predict_batch"] == 1 and "fold_predict" not in planned
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(configfile))

    batch = tmp_path / "results" / "fold" / "demo"
    single = demo_dir / "results" / "fold" / "demo"
    for target, length in (("villin_hp36", 36), ("trp_cage", 20)):
        mine = json.loads((batch / target / MODEL / "scores.json").read_text())
        theirs = json.loads((single / target / MODEL / "scores.json").read_text())
        # one thread per instance here, two in fold_predict: float sums may round apart
        # in the last digit, so numbers compare to their printed precision
        assert mine.keys() == theirs.keys() and len(mine["plddt"]) == length
        for key in ("target", "model", "sequence", "real_prediction", "num_recycle", "device"):
            assert mine[key] == theirs[key], key
        assert np.allclose(mine["plddt"], theirs["plddt"], atol=0.011)
        assert np.allclose(mine["pae"], theirs["pae"], atol=0.011)
        assert mine["ptm"] == pytest.approx(theirs["ptm"], abs=2e-5)
        names, xyz = atoms((batch / target / MODEL / "unrelaxed.pdb").read_text())
        ref_names, ref_xyz = atoms((single / target / MODEL / "unrelaxed.pdb").read_text())
        assert names == ref_names and np.abs(xyz - ref_xyz).max() <= 0.0021
        ranking = pd.read_csv(batch / target / "ranking.tsv", sep="\t")
        assert ranking["model"].tolist() == [MODEL]
        record = json.loads(
            (batch / f"provenance/predict.{target}.{MODEL}.provenance.json").read_text()
        )
        assert record["rule"] == "fold_predict_batch"
        assert len(record["extra"]["cores"]) == 1  # pinned to its own core

    batch_record = json.loads((batch / "provenance/predict_batch.provenance.json").read_text())
    plan = batch_record["extra"]["plan"]
    assert plan["method"] == "ilp" and len(plan["slots"]) == 2
    assert sorted(t for s in plan["slots"] for t in s["targets"]) == [
        f"trp_cage/{MODEL}",
        f"villin_hp36/{MODEL}",
    ]
    cores = [tuple(s["cores"]) for s in plan["slots"]]
    assert len(set(cores)) == 2 and not set(cores[0]) & set(cores[1])
    log = (tmp_path / "logs/fold/predict_batch/demo.log").read_text()
    assert "plan (ilp): predicted makespan" in log and "done in" in log


def test_per_target_mode_keeps_fold_predict(demo_config, tmp_path):
    config = batch_config(demo_config)
    config["fold"]["schedule"]["mode"] = "per_target"
    planned = planned_jobs(tmp_path, write_config(tmp_path, config))
    assert planned["fold_predict"] == 2 and "fold_predict_batch" not in planned
