"""The files/bed data sources through Snakemake, on the tiny inputs in resources/."""

import pandas as pd
import pytest
import yaml
from conftest import REPO, assert_negative_count_refused, run_snakemake, write_config

pytestmark = pytest.mark.workflow


def test_files_and_bed_sources(tmp_path):
    config = yaml.safe_load((REPO / "config" / "test-sources.yaml").read_text())
    config["singlecell"]["samples"] = {
        name: str(REPO / path) for name, path in config["singlecell"]["samples"].items()
    }
    config["genotype"]["bed"] = str(REPO / config["genotype"]["bed"])
    config["ecg"]["samples"] = str(REPO / config["ecg"]["samples"])
    configfile = write_config(tmp_path, config)
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(configfile))
    cells = pd.read_csv(tmp_path / "results/singlecell/tiny/qc/cells.tsv", sep="\t")
    assert cells["sample"].value_counts().to_dict() == {"ctrl": 150, "treated": 150}
    import anndata as ad

    adata = ad.read_h5ad(tmp_path / "results/singlecell/tiny/preprocessed.h5ad")
    assert set(adata.obs["sample"]) == {"ctrl", "treated"} and adata.n_obs > 250
    assert adata.var["highly_variable"].sum() == 60 and adata.obsm["X_pca"].shape[1] == 20
    assert "highly_variable_rank" in adata.var and adata.uns["hvg"]["flavor"] == "seurat_v3"
    assert adata.uns["hvg"]["batch_key"] == "sample"
    assert adata.var["highly_variable_nbatches"].between(0, 2).all()
    afreq = pd.read_csv(tmp_path / "results/genotype/tiny/stats/genotypes.afreq", sep="\t")
    assert len(afreq) == 400 and afreq["ALT_FREQS"].between(0, 1).all()
    summary = pd.read_csv(tmp_path / "results/summary/outputs.tsv", sep="\t")
    assert summary["bytes"].notna().all() and (summary["bytes"] > 0).all()
    assert not (tmp_path / "results/genotype/tiny/simulated.bed").exists()
    peaks = pd.read_csv(tmp_path / "results/ecg/tiny/peaks/tiny.tsv", sep="\t")
    reference = pd.read_csv(REPO / "resources/ecg/tiny.annotations.tsv", sep="\t")
    assert len(peaks) == len(reference)
    offset = abs(peaks["sample"].to_numpy() - reference["sample"].to_numpy()) / 250
    assert (offset <= 0.04).all()  # PVCs: the peak of the wide QRS comes up to 30 ms late
    scores = pd.read_csv(tmp_path / "results/ecg/tiny/scores/beats.tsv", sep="\t")
    assert scores["anomaly"].sum() >= 8 and scores["score"].notna().all()
    assert not (tmp_path / "results/ecg/tiny/simulated").exists()


def test_bad_counts_stop_preprocessing_with_no_output(tmp_path):
    """Negative counts: one message naming the file; no preprocessed.h5ad left."""
    import anndata as ad

    adata = ad.read_h5ad(REPO / "resources/singlecell/tiny_ctrl.h5ad")
    adata.X = adata.X.copy()
    adata.X.data[5] = -2
    bad = tmp_path / "bad.h5ad"
    adata.write_h5ad(bad)
    config = {
        "genotype": {"enabled": False},
        "singlecell": {
            "dataset": "bad",
            "source": "files",
            "samples": {"bad": str(bad)},
            "preprocess": {"min_genes": 50},
        },
    }
    configfile = write_config(tmp_path, config)
    target = "results/singlecell/bad/preprocessed.h5ad"
    done = run_snakemake(
        tmp_path, target, "--cores", "1", "--configfile", str(configfile), check=False
    )
    assert_negative_count_refused(done, tmp_path)


def test_vcf_source(tmp_path):
    """A VCF written from the shipped tiny fileset runs through import, QC and PCA."""
    import numpy as np

    from warpbio.genotype.plink import decode_genotypes, read_bed

    bed = read_bed(REPO / "resources/genotype/tiny")
    dosage = decode_genotypes(bed.packed, bed.n_samples)
    calls = {-1: "./.", 0: "0/0", 1: "0/1", 2: "1/1"}
    lines = ["##fileformat=VCFv4.2"]
    lines.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO",
                            "FORMAT", *bed.samples["iid"]]))  # fmt: skip
    for (_, v), row in zip(bed.variants.iterrows(), dosage, strict=True):
        fixed = [v["chrom"], str(v["pos"]), v["id"], v["a2"], v["a1"], ".", "PASS", ".", "GT"]
        lines.append("\t".join(fixed + [calls[int(g)] for g in row]))
    (tmp_path / "tiny.vcf").write_text("\n".join(lines) + "\n")
    config = {
        "singlecell": {"enabled": False},
        "ecg": {"enabled": False},
        "genotype": {
            "dataset": "fromvcf",
            "source": "vcf",
            "vcf": str(tmp_path / "tiny.vcf"),
            "pca": {"loadings": True},
        },
    }
    configfile = write_config(tmp_path, config)
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(configfile))
    imported = read_bed(tmp_path / "results/genotype/fromvcf/imported")
    np.testing.assert_array_equal(decode_genotypes(imported.packed, imported.n_samples), dosage)
    eigenvec = pd.read_csv(tmp_path / "results/genotype/fromvcf/pca/genotypes.eigenvec", sep="\t")
    assert eigenvec["IID"].tolist() == bed.samples["iid"].tolist()
    loadings = pd.read_csv(
        tmp_path / "results/genotype/fromvcf/pca/genotypes.eigenvec.var", sep="\t"
    )
    assert len(loadings) > 300 and list(loadings.columns[:4]) == ["#CHROM", "ID", "REF", "ALT"]
    np.testing.assert_allclose((loadings[["PC1", "PC2"]] ** 2).sum(), 1.0, rtol=1e-3)
