"""A CUDA-graph IF node around a captured PyTorch graph, built through CUDA's driver API.

PyTorch 2.13 captures into IF nodes itself (``CUDAGraph.begin_capture_to_if_node``);
older builds (2.11 on the GPU image) can still keep a captured graph un-instantiated
(``CUDAGraph(keep_graph=True)``) and hand out its ``cudaGraph_t``. This module makes
a graph of its own: a one-thread kernel sets the condition from two device scalars
(``offset < limit``), and the IF node's body holds the PyTorch graph as a child graph.
The host never reads the scalars. The driver API comes from cuda-python
(``cuda.bindings``); CuPy compiles the kernel with NVRTC. Both are imported on use.
"""

from __future__ import annotations

import ctypes
import glob
import os
from functools import lru_cache

_KERNEL = "set_batch_condition"
_BODY = r"""
extern "C" __global__ void set_batch_condition(unsigned long long handle,
                                               const long long* offset,
                                               const long long* limit) {
    cudaGraphSetConditional((cudaGraphConditionalHandle)handle,
                            offset[0] < limit[0] ? 1u : 0u);
}
"""
# cudaGraphSetConditional is a builtin the driver resolves at module load; where no
# CUDA headers are found it is declared as the toolkit's header declares it
_DECLARATION = """
typedef unsigned long long cudaGraphConditionalHandle;
extern "C" __device__ __attribute__((cudart_builtin)) void
cudaGraphSetConditional(cudaGraphConditionalHandle handle, unsigned int value);
"""


def _driver():
    try:
        from cuda.bindings import driver
    except ImportError:  # cuda-python before 12.6
        from cuda import cuda as driver
    return driver


def _checked(result):
    """The values of a cuda-python call after its CUresult, raising on an error."""
    error, *values = result
    if int(error) != 0:
        name = _driver().cuGetErrorName(error)[1]
        raise RuntimeError(f"CUDA driver call failed: {name.decode() if name else error}")
    return values[0] if len(values) == 1 else values


def _include_dirs() -> list[str]:
    """CUDA header directories that hold cuda_device_runtime_api.h."""
    roots = [os.environ.get(name) for name in ("CUDA_HOME", "CUDA_PATH")]
    roots += ["/usr/local/cuda"]
    try:
        import cupy

        roots.append(cupy.cuda.get_cuda_path())
    except Exception:
        pass
    found = [os.path.join(root, "include") for root in roots if root]
    for package in glob.glob("/usr/local/lib/python3*/*-packages/nvidia/*/include"):
        found.append(package)
    return [d for d in found if os.path.exists(os.path.join(d, "cuda_device_runtime_api.h"))]


@lru_cache(maxsize=1)
def _condition_kernel():
    """The compiled condition-setting kernel (CuPy RawKernel)."""
    import cupy

    errors = []
    for include in [*_include_dirs()[:1], None]:
        if include is None:
            source, options = _DECLARATION + _BODY, ()
        else:
            source = "#include <cuda_device_runtime_api.h>\n" + _BODY
            options = (f"--include-path={include}",)
        try:
            kernel = cupy.RawKernel(source, _KERNEL, options=options)
            kernel.compile()
            return kernel
        except Exception as error:
            errors.append(f"{include or 'declared builtin'}: {error}")
    raise RuntimeError("could not compile the IF-node kernel: " + "; ".join(errors))


def _add_node(driver, graph, dependencies: list, params):
    try:  # CUDA 13 bindings: edge data before the count
        return _checked(driver.cuGraphAddNode(graph, dependencies, None, len(dependencies), params))
    except TypeError:
        return _checked(driver.cuGraphAddNode(graph, dependencies, len(dependencies), params))


class DriverIfGraph:
    """``replay()`` runs ``body`` (a cudaGraph_t) where ``offset < limit`` on the device.

    ``offset`` and ``limit`` are 0-d int64 CUDA tensors read at every replay; they
    and the graph behind ``body`` must outlive this object.
    """

    def __init__(self, body: int, offset, limit) -> None:
        driver = _driver()
        kernel = _condition_kernel()
        self._driver = driver
        context = _checked(driver.cuCtxGetCurrent())
        self._graph = _checked(driver.cuGraphCreate(0))
        handle = _checked(driver.cuGraphConditionalHandleCreate(self._graph, context, 0, 0))
        setter = driver.CUDA_KERNEL_NODE_PARAMS()
        setter.func = driver.CUfunction(kernel.kernel.ptr)
        setter.gridDimX = setter.gridDimY = setter.gridDimZ = 1
        setter.blockDimX = setter.blockDimY = setter.blockDimZ = 1
        setter.sharedMemBytes = 0
        setter.kernelParams = (
            (int(handle), offset.data_ptr(), limit.data_ptr()),
            (ctypes.c_ulonglong, ctypes.c_void_p, ctypes.c_void_p),
        )
        setter_node = _checked(driver.cuGraphAddKernelNode(self._graph, None, 0, setter))
        params = driver.CUgraphNodeParams()
        params.type = driver.CUgraphNodeType.CU_GRAPH_NODE_TYPE_CONDITIONAL
        params.conditional.handle = handle
        params.conditional.type = driver.CUgraphConditionalNodeType.CU_GRAPH_COND_TYPE_IF
        params.conditional.size = 1
        params.conditional.ctx = context
        _add_node(driver, self._graph, [setter_node], params)
        inside = params.conditional.phGraph_out[0]
        _checked(driver.cuGraphAddChildGraphNode(inside, None, 0, driver.CUgraph(body)))
        self._exec = _checked(driver.cuGraphInstantiate(self._graph, 0))

    def replay(self) -> None:
        import torch

        stream = self._driver.CUstream(torch.cuda.current_stream().cuda_stream)
        _checked(self._driver.cuGraphLaunch(self._exec, stream))

    def __del__(self) -> None:
        driver = getattr(self, "_driver", None)
        if driver is None:
            return
        if getattr(self, "_exec", None) is not None:
            driver.cuGraphExecDestroy(self._exec)
        if getattr(self, "_graph", None) is not None:
            driver.cuGraphDestroy(self._graph)
