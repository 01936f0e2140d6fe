"""First import of every job script: this checkout's src/ first, thread caps set.

Snakemake appends the scripts folder to sys.path, so every script can import
this module before anything else. Jobs then run the warpbio that sits beside the
Snakefile, also in conda envs and on cluster nodes where it is not installed,
and BLAS/OpenMP/Numba pools (sized when NumPy or Numba loads) use the job's threads rather than
every core of a shared node.
"""

import os
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

_job = getattr(sys.modules.get("__main__"), "snakemake", None)
if _job is not None:
    for _name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMBA_NUM_THREADS",
    ):
        os.environ.setdefault(_name, str(_job.threads))
