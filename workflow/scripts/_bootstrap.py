"""Put this checkout's src/ first on sys.path.

Snakemake appends the scripts folder to sys.path, so every script can import
this module first; jobs then run the warpbio that sits beside the Snakefile,
also in conda envs and on cluster nodes where it is not installed.
"""

import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
