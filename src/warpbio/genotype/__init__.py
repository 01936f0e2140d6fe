"""Genotype PCA: PLINK/VCF/simulated genotypes, 2-bit storage, QC, randomized SVD."""
