"""The Numba CUDA kernels equal their CPU twins, run in Numba's CUDA simulator.

NUMBA_ENABLE_CUDASIM must be set before Numba loads, so the kernels run in a
child process. The simulator executes the CUDA kernels' Python source thread
by thread on the CPU: same indexing, bounds and tie rules as on a GPU.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from warpbio.ecg.filter import filter_ecg
from warpbio.ecg.kernels import embed_beats_kernel, nms_flags
from warpbio.ecg.peaks import capacity_for, compact
from warpbio.ecg.simulate import EcgSimulationSpec, simulate_ecg

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from numba import config, cuda
    from warpbio.ecg.kernels import cuda_kernels, launch_embed_beats

    assert config.ENABLE_CUDASIM  # the kernels below run in the simulator
    data = np.load(sys.argv[1])
    nms, embed = cuda_kernels()
    y, half = data["y"], int(data["half"])
    flags = np.zeros(y.size, dtype=np.uint8)
    nms[(y.size + 127) // 128, 128](y, half, np.float32(0.0), flags)
    peaks, count = data["peaks"], data["count"]
    out = np.zeros((peaks.size, 32), dtype=np.float32)
    launch_embed_beats(embed, y, peaks, count, float(data["start"]), float(data["step"]), out)
    np.save(sys.argv[2], flags)
    np.save(sys.argv[3], out)
    print(json.dumps({"simulator": bool(config.ENABLE_CUDASIM and cuda.is_available())}))
    """
)


def test_cuda_kernels_equal_cpu_twins_in_simulator(tmp_path):
    sim = simulate_ecg(EcgSimulationSpec(duration_s=12, fs=250.0, pvc_fraction=0.2), seed=5)
    y = filter_ecg(sim.signals[:, 0].copy(), 250.0).response
    half = 50
    cpu_flags = nms_flags(y, half, 0.0)
    candidates, count = compact(cpu_flags, capacity_for(y.size, half))
    start, step = -0.25 * 250.0, 0.7 * 250.0 / 32
    cpu_beats = embed_beats_kernel(y, candidates, count, start, step, 32)
    np.savez(tmp_path / "in.npz", y=y, half=half, peaks=candidates,
             count=np.asarray([count]), start=start, step=step)  # fmt: skip
    environment = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "in.npz"), str(tmp_path / "flags.npy"),
         str(tmp_path / "beats.npy")],
        env=environment, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["simulator"]
    assert cpu_flags.sum() > 20  # the recording has beats (and T waves) to find
    np.testing.assert_array_equal(np.load(tmp_path / "flags.npy"), cpu_flags)
    np.testing.assert_array_equal(np.load(tmp_path / "beats.npy"), cpu_beats)
