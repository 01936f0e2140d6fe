"""The fold rules through Snakemake: bad inputs stop before any job with one
line; MSA search modes; single-sequence mode with several models ranked and
compared with a reference structure."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, SHARED_DATA, run_snakemake, write_config

pytestmark = pytest.mark.workflow

DEMO = REPO / "resources" / "fold"


def fold_only(**fold):
    base = {
        "fasta": str(DEMO / "demo.fasta"),
        "msa": {
            "mode": "files",
            "files": {
                "villin_hp36": str(DEMO / "villin_hp36.a3m"),
                "trp_cage": str(DEMO / "trp_cage.a3m"),
            },
            "max_msa_clusters": 8,
            "max_extra_msa": 16,
        },
        "weights": {"random_depth": 1},
        "num_recycle": 0,
        "dataset": "t",
    }
    base.update(fold)
    return {
        "singlecell": {"enabled": False},
        "genotype": {"enabled": False},
        "fold": {"enabled": True, "backend": "cpu", **base},
    }


def fails_with_one_line(tmp_path, config, expected):
    configfile = write_config(tmp_path, config)
    done = run_snakemake(tmp_path, "--cores", "1", "--configfile", str(configfile), check=False)
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


def test_non_amino_acid_letters(tmp_path):
    fasta = tmp_path / "bad.fasta"
    fasta.write_text(">trp_cage\nNLYIQWLKDGG1PSSGRPPPS\n")
    fails_with_one_line(
        tmp_path,
        fold_only(fasta=str(fasta), msa={"mode": "single_sequence"}),
        f"{fasta}, record 'trp_cage': the sequence has non-amino-acid character(s) '1'",
    )


def test_a3m_query_differs_from_fasta(tmp_path):
    config = fold_only()
    config["fold"]["msa"]["files"]["trp_cage"] = str(DEMO / "villin_hp36.a3m")
    fails_with_one_line(
        tmp_path, config, "villin_hp36.a3m: the MSA's first sequence is not the target sequence"
    )


def test_empty_msa(tmp_path):
    empty = tmp_path / "empty.a3m"
    empty.write_text("")
    config = fold_only()
    config["fold"]["msa"]["files"]["trp_cage"] = str(empty)
    fails_with_one_line(tmp_path, config, f"{empty}: the MSA is empty")


def test_weights_of_the_wrong_model(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    key = "alphafold/alphafold_iteration/evoformer/evoformer_iteration/x//weights"
    np.savez(folder / "params_model_1_ptm.npz", **{key: np.zeros((2, 3), np.float32)})
    config = fold_only(weights={"folder": str(folder)})
    fails_with_one_line(tmp_path, config, "these are non-pTM weights")


@pytest.mark.parametrize(("mode", "binary"), [("jackhmmer", "jackhmmer"), ("mmseqs2", "mmseqs")])
def test_msa_search_against_a_tiny_database(tmp_path, mode, binary):
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} not installed (Debian: apt-get install hmmer / mmseqs2)")
    # database: the demo alignments' sequences without gaps, plus unrelated decoys
    from warpbio.fold.msa import parse_a3m

    rows = parse_a3m((DEMO / "trp_cage.a3m").read_text())
    raw = [s.replace("-", "") for s in rows.sequences[1:20]]
    rng = np.random.default_rng(0)
    decoys = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 60)) for _ in range(30)]
    database = tmp_path / "db.fasta"
    database.write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(raw + decoys)))
    fasta = tmp_path / "t.fasta"
    fasta.write_text(">trp_cage\nNLYIQWLKDGGPSSGRPPPS\n")
    config = fold_only(fasta=str(fasta), msa={"mode": mode, "database": str(database)})
    configfile = write_config(tmp_path, config)
    target = "results/fold/t/trp_cage/msa.a3m"
    run_snakemake(tmp_path, "--cores", "1", target, "--configfile", str(configfile))
    msa = parse_a3m((tmp_path / target).read_text())
    assert msa.sequences[0] == "NLYIQWLKDGGPSSGRPPPS"
    assert len(msa) > 1 and all(len(s) == 20 for s in msa.sequences)


KWC = SHARED_DATA / "folding" / "6KWC"


@pytest.mark.slow
@pytest.mark.skipif(not KWC.exists(), reason="shared folding data absent")
def test_single_sequence_models_ranked_and_compared(tmp_path):
    reference = KWC / "6KWC_1_model_1_ptm_relaxed.pdb"
    config = fold_only(
        fasta=str(KWC / "6kwc.fasta"),
        msa={"mode": "single_sequence"},
        models=["model_1_ptm", "model_2"],
        references={"6KWC_1": str(reference)},
    )
    configfile = write_config(tmp_path, config)
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(configfile))
    ranking = pd.read_csv(tmp_path / "results/fold/t/6KWC_1/ranking.tsv", sep="\t")
    assert set(ranking["model"]) == {"model_1_ptm", "model_2"}
    assert ranking["mean_plddt"].is_monotonic_decreasing
    assert ranking["num_residues"].eq(191).all() and ranking["tm_score"].between(0, 1).all()
    assert ranking["ptm"].isna().tolist() == (ranking["model"] == "model_2").tolist()
