"""Snakemake entry point; the work is in warpbio.fold.batch_step.predict_batch_step.

The guard matters: the step starts one worker process per instance slot with the
spawn method, which re-imports this file in every worker.
"""

import _bootstrap  # noqa: F401 - this checkout's src/ first on sys.path

from warpbio.fold.batch_step import predict_batch_step
from warpbio.runner import run_step

if __name__ == "__main__":
    run_step(snakemake, predict_batch_step)  # noqa: F821 - snakemake is injected by the script directive
