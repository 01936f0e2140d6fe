"""The oom_retry job's inputs, also built by the test for its full-memory answer."""

import numpy as np

from warpbio.genotype.pca import standardization_table


def packed_genotypes(n_snps: int, n_samples: int):
    """Random packed genotypes, their standardization table and 4 start vectors."""
    rng = np.random.default_rng(0)
    packed = rng.integers(0, 256, size=(n_snps, (n_samples + 3) // 4), dtype=np.uint8)
    freq = rng.uniform(0.05, 0.5, n_snps)
    vectors = rng.standard_normal((n_samples, 4))
    return packed, standardization_table(freq), vectors
