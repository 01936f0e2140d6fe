"""Reruns from scratch give identical CPU outputs (make reproduce / warpbio reproduce)."""

import shutil
import subprocess
import sys

import pytest

from warpbio.reproduce import compare_results, output_checksums

pytestmark = pytest.mark.workflow


def test_rerun_from_scratch_gives_identical_checksums_for_every_cpu_output(finished_demo):
    workdir, _ = finished_demo
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "warpbio.cli",
            "reproduce",
            "--workdir",
            str(workdir),
            "--configfile",
            str(workdir / "config.yaml"),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    checked = len(output_checksums(workdir / "results"))
    assert checked >= 40  # tables, stores, plots of both workflows
    assert f"identical: {checked} outputs" in done.stdout
    assert "reproduced: every CPU output identical" in done.stdout
    assert "GPU outputs differ" not in done.stdout


def test_comparison_fails_on_a_changed_cpu_output_and_allows_gpu_differences(
    finished_demo, tmp_path
):
    workdir, _ = finished_demo
    first = workdir / "results"
    second = tmp_path / "results"
    shutil.copytree(first, second, symlinks=False)
    assert compare_results(first, second).failures() == []

    eigenvec = "genotype/demo/pca/genotypes.eigenvec"
    with open(second / eigenvec, "a") as handle:
        handle.write("\n")
    (second / "genotype/demo/qc/summary.tsv").unlink()
    comparison = compare_results(first, second)
    assert comparison.failures() == [eigenvec, "genotype/demo/qc/summary.tsv"]
    # the same difference made by a GPU job is reported, but allowed unless strict
    comparison.backends[eigenvec] = "gpu"
    assert comparison.failures() == ["genotype/demo/qc/summary.tsv"]
    assert eigenvec in comparison.failures(strict_gpu=True)
    # provenance records and the summary differ by design (times, hosts)
    record = second / "genotype/demo/provenance/pca.provenance.json"
    record.write_text(record.read_text().replace('"host"', '"host_"'))
    assert (
        "genotype/demo/provenance/pca.provenance.json" not in compare_results(first, second).differ
    )
