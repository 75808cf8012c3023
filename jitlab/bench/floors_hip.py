"""The floor on Triton's HIP backend (MI300X): floor_hip.c, a C loop of hipModuleLaunchKernel with a
prebuilt parameter array, launching the kernel Triton compiled and loaded (floors.py is the CUDA one).
It is reported as `c_floor`, so ratios read the same on both platforms; the cuda-python floor has no
HIP counterpart here and is skipped with that reason. The parameter layout comes from
jitlab._triton.hip.plan() (the kernel's own argument list), the block from its wavefront size.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

from .._triton import function_handle
from .floors import _prepared, _stream
from .runner import Variant

_LAUNCH_ARGTYPES = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                    ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]


def active() -> bool:
    """True when Triton's active backend is HIP (then these floors replace the CUDA ones)."""
    from .._triton import probe

    return probe.active_backend() == "hip"


def build() -> ctypes.CDLL:
    """floor_hip.c built with the host C compiler into $JITLAB_CACHE_DIR/floor (cached by source hash)."""
    from .._cbuild import compiler, shared_library
    from .._triton.hip import hip_include

    inc, cc = hip_include(), compiler()
    if inc is None or cc is None:
        raise RuntimeError("the HIP C floor needs Triton's HIP headers and a C compiler")
    out = shared_library(Path(__file__).with_name("floor_hip.c"), "floor", [cc, "-O2", "-shared", "-fPIC", f"-I{inc}"],
                         tag="-hip")
    lib = ctypes.CDLL(str(out))
    lib.jitlab_hip_floor_loop.restype = ctypes.c_longlong
    lib.jitlab_hip_floor_loop.argtypes = _LAUNCH_ARGTYPES
    return lib


def c_variant(case: Any) -> Variant:
    from .._triton import hip

    try:
        lib, entry = build(), hip.launch_entry()
        compiled, plan, params, (gx, gy, gz) = _prepared(case, hip.plan)
    except Exception as e:  # noqa: BLE001
        return Variant("c_floor", "floor", skip=f"HIP C floor: {e}")
    f, block, shared, addr = function_handle(compiled), plan.warp_size * plan.num_warps, plan.shared, params.address

    def timer(n: int) -> int:
        ns = lib.jitlab_hip_floor_loop(entry, f, gx, gy, gz, block, shared, _stream(), addr, n)
        if ns < 0:
            raise RuntimeError(f"hipModuleLaunchKernel failed with hipError_t {-ns}")
        return ns

    v = Variant("c_floor", "floor", lambda: timer(1), timer=timer)
    v.keep = params  # noqa: the parameter storage must outlive the variant
    return v


def variants(case: Any) -> list[Variant]:
    return [Variant("cuda_python_floor", "floor", skip="CUDA only (cuda-python); no Python floor on HIP"),
            c_variant(case)]
