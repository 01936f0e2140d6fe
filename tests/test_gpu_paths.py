"""GPU paths agree with their CPU twins. Run on a CUDA machine; skipped elsewhere."""

import numpy as np
import pytest

from warpbio.device import gpu_available

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU and CuPy"),
]


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


def test_auto_backend_is_gpu():
    from warpbio.device import resolve_backend

    assert resolve_backend("auto") == "gpu"


def test_singlecell_qc_metrics_gpu_equals_cpu(cp):
    from warpbio.singlecell.qc import mito_mask, qc_metrics
    from warpbio.singlecell.simulate import SimulationSpec, simulate_counts
    from warpbio.singlecell.sparse import from_scipy

    sim = simulate_counts(SimulationSpec(n_cells=2000, n_genes=800), seed=3)
    mito = mito_mask(sim.gene_names)
    cpu = qc_metrics(sim.counts, mito, np)
    gpu = qc_metrics(from_scipy(sim.counts, cp), mito, cp)
    for name in vars(cpu):
        np.testing.assert_allclose(cp.asnumpy(getattr(gpu, name)), getattr(cpu, name), rtol=1e-6)


def test_genotype_pack_decode_and_counts_gpu_equal_cpu(cp, tmp_path):
    from warpbio.genotype.plink import decode_genotypes, pack_genotypes, read_bed
    from warpbio.genotype.simulate import BaldingNicholsSpec, simulate_to_bed
    from warpbio.genotype.stats import count_genotypes

    rng = np.random.default_rng(0)
    dosage = rng.integers(-1, 3, size=(300, 1001)).astype(np.int8)
    packed_cpu = pack_genotypes(dosage, np)
    packed_gpu = pack_genotypes(dosage, cp)
    np.testing.assert_array_equal(cp.asnumpy(packed_gpu), packed_cpu)
    np.testing.assert_array_equal(cp.asnumpy(decode_genotypes(packed_gpu, 1001, cp)), dosage)

    spec = BaldingNicholsSpec(n_samples=500, n_snps=5000, fst=0.1, missing_rate=0.01)
    simulate_to_bed(tmp_path / "gpu", spec, seed=1, xp=cp)
    bed = read_bed(tmp_path / "gpu")
    on_cpu, on_gpu = count_genotypes(bed, np), count_genotypes(bed, cp, block_snps=1024)
    for name in vars(on_cpu):
        np.testing.assert_array_equal(getattr(on_gpu, name), getattr(on_cpu, name))
    missing = 1 - on_cpu.variant_called.sum() / (spec.n_snps * spec.n_samples)
    assert abs(missing - spec.missing_rate) < 0.001


def test_provenance_records_the_gpu(cp, monkeypatch):
    import time

    from warpbio.provenance import build_record

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    block = cp.ones((1 << 20,), dtype=cp.float32)
    assert float(block.sum()) == 1 << 20
    record = build_record(rule="t", outputs=[], started=time.time(), gpu_ids=["0"])
    assert record["gpu"]["devices"] and record["gpu"]["devices"][0]["name"]
    assert record["gpu"]["cuda_runtime"] > 0 and record["gpu"]["cupy_pool_reserved_bytes"] > 0
