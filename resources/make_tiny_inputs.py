"""Regenerate the tiny shipped inputs in resources/ (seeded; run from the repo root).

python resources/make_tiny_inputs.py
"""

from pathlib import Path

from warpbio.ecg.simulate import EcgSimulationSpec, simulate_ecg, write_annotations, write_csv
from warpbio.genotype.simulate import BaldingNicholsSpec, simulate_to_bed
from warpbio.singlecell.simulate import SimulationSpec, simulate_counts, to_anndata


def main() -> None:
    spec = BaldingNicholsSpec(n_samples=48, n_snps=400, n_populations=2, fst=0.1)
    simulate_to_bed("resources/genotype/tiny", spec, seed=2026)
    cells = SimulationSpec(n_cells=150, n_genes=120, n_cell_types=3, n_samples=1)
    for seed, name in enumerate(("ctrl", "treated")):
        adata = to_anndata(simulate_counts(cells, seed=seed))
        del adata.obs["sample"]
        adata.write_h5ad(f"resources/singlecell/tiny_{name}.h5ad", compression="gzip")
    ecg = simulate_ecg(
        EcgSimulationSpec(duration_s=60, fs=250, pvc_fraction=0.15, leads=("MLII",)), seed=2026
    )
    Path("resources/ecg").mkdir(exist_ok=True)
    write_csv(ecg, "resources/ecg/tiny.csv")
    write_annotations(ecg, "resources/ecg/tiny.annotations.tsv")
    Path("resources/ecg/samples.tsv").write_text(
        "recording\tpath\tformat\tfs\tlead\tannotations\n"
        "tiny\ttiny.csv\tcsv\t250\tMLII\ttiny.annotations.tsv\n"
    )


if __name__ == "__main__":
    main()
