"""Record which GPUs this job leased and saw, holding them for a while."""

import json
import os
import signal
import time

from warpbio.runner import run_step


def step(ctx):
    started = time.time()
    visible = os.environ["CUDA_VISIBLE_DEVICES"]
    if getattr(ctx.params, "kill", False):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(float(ctx.params.hold))
    record = {
        "ids": ctx.lease.ids,
        "visible": visible,
        "granted": int(snakemake.resources.gpu),  # noqa: F821
        "start": started,
        "end": time.time(),
        "pid": os.getpid(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    with open(ctx.output[0], "w") as handle:
        json.dump(record, handle)


run_step(snakemake, step)  # noqa: F821
