"""Acceptance check of the PCA on a realistic cohort: msprime, three populations
split 2,000 generations ago, 3 x 500 diploids, >= 20k SNPs after QC, 1% missing."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("msprime")

from warpbio.genotype.coalescent import CoalescentSpec, simulate_coalescent_bed
from warpbio.genotype.pca import (
    PackedStandardizedMatrix,
    eigenvec_table,
    exact_pca,
    randomized_pca,
    standardization_table,
)
from warpbio.genotype.plink import read_bed
from warpbio.genotype.qc import QcThresholds, decide, write_filtered


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("msprime")
    simulate_coalescent_bed(folder / "raw", CoalescentSpec(), seed=7)
    raw = read_bed(folder / "raw")
    write_filtered(raw, decide(raw, QcThresholds()), str(folder / "qc"))
    bed = read_bed(folder / "qc")
    assert bed.n_samples == 1500 and bed.n_snps >= 20_000
    freq = decide(bed, QcThresholds(min_maf=0)).alt_freq
    matrix = PackedStandardizedMatrix(bed.packed, standardization_table(freq), bed.n_samples)
    return folder, bed, matrix, exact_pca(matrix, 10)


def test_default_randomized_pcs_match_exact(cohort):
    _, bed, matrix, exact = cohort
    approx = randomized_pca(matrix, 10, seed=0)  # defaults: oversampling 10, q = 2, krylov
    for i in range(2):
        assert abs(np.dot(exact.eigenvectors[:, i], approx.eigenvectors[:, i])) >= 0.9999
    # nearest population centroid on PC1-2 classifies every sample
    populations = bed.samples["fid"].to_numpy()
    points = approx.eigenvectors[:, :2]
    names = np.unique(populations)
    centroids = np.stack([points[populations == name].mean(0) for name in names])
    nearest = names[np.argmin(((points[:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    assert (nearest == populations).all()


def test_top10_eigenvalues_within_1e3(cohort):
    # PC3-10 lie in the noise bulk, with gaps of about 1%: the documented
    # accuracy setting (q = 6, oversampling 20) converges them.
    _, _, matrix, exact = cohort
    approx = randomized_pca(matrix, 10, oversampling=20, power_iterations=6, seed=0)
    relative = np.abs(approx.eigenvalues - exact.eigenvalues) / exact.eigenvalues
    assert relative.max() <= 1e-3, relative


@pytest.mark.skipif(shutil.which("plink2") is None, reason="plink2 is not installed")
def test_pcs_match_plink2(cohort):
    folder, bed, matrix, _ = cohort
    ours = eigenvec_table(bed.samples, randomized_pca(matrix, 10, seed=0))
    subprocess.run(
        ["plink2", "--bfile", str(folder / "qc"), "--pca", "4", "--out", str(folder / "p2")],
        check=True,
        capture_output=True,
    )
    theirs = pd.read_csv(folder / "p2.eigenvec", sep="\t")
    assert (theirs["IID"].to_numpy() == ours["IID"].to_numpy()).all()
    for pc in ("PC1", "PC2"):
        assert abs(np.corrcoef(ours[pc], theirs[pc])[0, 1]) >= 0.999
