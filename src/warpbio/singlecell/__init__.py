"""Single-cell RNA-seq: simulate, ingest, QC, preprocess, embed, cluster, markers."""
