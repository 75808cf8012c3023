"""The floors: the same compiled kernel and arguments launched with a prebuilt parameter array,
(1) from Python through cuda-python's cuLaunchKernel, (2) from C (floor.c, built with nvcc) in a
loop timed in C. Both reuse the kernel Triton compiled and loaded, so they launch exactly the binary
the other variants launch; the parameter layout comes from jitlab._triton.native.plan().
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

from .._triton import function_handle
from .runner import Variant

_C_TYPES = {"b": ctypes.c_int8, "h": ctypes.c_int16, "i": ctypes.c_int32, "L": ctypes.c_int64,
            "B": ctypes.c_uint8, "H": ctypes.c_uint16, "I": ctypes.c_uint32, "K": ctypes.c_uint64,
            "f": ctypes.c_float, "d": ctypes.c_double, "P": ctypes.c_uint64}


class Params:
    """A void** parameter array for one launch (keeps its ctypes storage alive)."""

    def __init__(self, codes: str, n_tail: int, values: tuple):
        self.slots = []
        for c, v in zip(codes, values):
            if c == "x":
                continue
            if c in ("e", "E"):
                raise ValueError("fp16/bf16 scalar arguments are not built by the floor")
            if c == "P":
                v = 0 if v is None else (v if isinstance(v, int) else v.data_ptr())
            self.slots.append(_C_TYPES[c](v))
        self.slots += [ctypes.c_uint64(0) for _ in range(n_tail)]
        self.array = (ctypes.c_void_p * max(1, len(self.slots)))(*[ctypes.addressof(s) for s in self.slots])

    @property
    def address(self) -> int:
        return ctypes.addressof(self.array)


def loaded(case: Any) -> tuple[Any, tuple, tuple[int, int, int]]:
    """`case`'s kernel compiled and loaded through Triton (jitlab's adapter), with every bound argument
    value in parameter order and the 3D grid of its launch."""
    from .._triton import get_adapter, inner_jit_function

    ad, reason = get_adapter()
    if ad is None:
        raise RuntimeError(reason)
    fn = inner_jit_function(case.kernel)
    compiled = ad.compile(fn, case.grid, case.args, case.kwargs)
    bound, _, _ = ad.binder(fn, ad.get_device())(*case.args, **case.kwargs, **ad.launch_options(fn, case.kwargs))
    g = case.grid(bound) if callable(case.grid) else case.grid
    return compiled, tuple(bound.values()), (tuple(g) + (1, 1))[:3]


def _prepared(case: Any, plan_of: Any = None) -> tuple[Any, Any, Params, tuple[int, int, int]]:
    """The loaded kernel, its launch plan (`plan_of`, default the CUDA planner), parameters and grid."""
    from .._triton import native

    compiled, vals, grid = loaded(case)
    plan, why = (plan_of or native.plan)(compiled)
    if plan is None:
        raise RuntimeError(f"kernel not launchable with a flat parameter array: {why}")
    return compiled, plan, Params(plan.codes.decode(), plan.n_tail, vals), grid


def _stream() -> int:
    import torch

    return torch.cuda.current_stream().cuda_stream


def cuda_python_variant(case: Any) -> Variant:
    try:
        from cuda.bindings import driver as cu
    except ImportError:
        try:
            from cuda import cuda as cu  # cuda-python < 12.6 layout
        except ImportError:
            return Variant("cuda_python_floor", "floor", skip="cuda-python is not installed")
    try:
        compiled, plan, params, (gx, gy, gz) = _prepared(case)
    except Exception as e:  # noqa: BLE001
        return Variant("cuda_python_floor", "floor", skip=str(e))
    f = cu.CUfunction(init_value=function_handle(compiled))
    stream = cu.CUstream(init_value=_stream())
    block, shared, addr, launch = 32 * plan.num_warps, plan.shared, params.address, cu.cuLaunchKernel

    def run() -> None:
        err, = launch(f, gx, gy, gz, block, 1, 1, shared, stream, addr, 0)
        if err != 0:
            raise RuntimeError(f"cuLaunchKernel: {err}")

    v = Variant("cuda_python_floor", "floor", run)
    v.keep = params  # noqa: the parameter storage must outlive the variant
    return v


def _build_c_floor() -> ctypes.CDLL:
    from .. import _cbuild

    nvcc = _cbuild.nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found: the C floor is skipped")
    out = _cbuild.shared_library(Path(__file__).with_name("floor.c"), "floor",
                                 [nvcc, "-O2", "-shared", "-Xcompiler", "-fPIC", "-x", "cu"], after=("-lcuda",))
    lib = ctypes.CDLL(str(out))
    lib.jitlab_floor_loop.restype = ctypes.c_longlong
    lib.jitlab_floor_loop.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                                      ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return lib


def c_variant(case: Any) -> Variant:
    try:
        lib = _build_c_floor()
        compiled, plan, params, (gx, gy, gz) = _prepared(case)
    except Exception as e:  # noqa: BLE001
        return Variant("c_floor", "floor", skip=str(e))
    f, block, shared, addr = function_handle(compiled), 32 * plan.num_warps, plan.shared, params.address

    def timer(n: int) -> int:
        ns = lib.jitlab_floor_loop(f, gx, gy, gz, block, shared, _stream(), addr, n)
        if ns < 0:
            raise RuntimeError(f"cuLaunchKernel failed with CUresult {-ns}")
        return ns

    v = Variant("c_floor", "floor", lambda: timer(1), timer=timer)
    v.keep = params  # noqa
    return v


def variants(case: Any) -> list[Variant]:
    return [cuda_python_variant(case), c_variant(case)]
