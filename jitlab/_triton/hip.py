"""Triton's HIP backend (ROCm, e.g. MI300X): the adapter, the key rule and the native launcher for it.

Checked offline only (no AMD GPU has run it: README "Support"), so jitcache uses it when the active
backend is "hip" AND the user opts in with JITLAB_HIP=1 (read by the core: `HipAdapter.opt_in_reason`);
otherwise HIP kernels stay in pass-through. The adapter itself (compile, load, Triton's launcher) also
serves the experiments' baselines and floor without the opt-in.

What differs from CUDA, per Triton 3.3-3.9's AMD backend (triton/backends/amd):
- The call contract of the launcher is the same: `run(gx, gy, gz, stream, function, packed_metadata,
  launch_metadata, enter_hook, exit_hook, *args)`, packed_metadata = (num_warps, num_ctas, shared).
- Specialization: a tensor gets "S" (compiled with `tt.pointer_range = 32`: 32-bit buffer offsets) when
  buffer ops are on (3.4+: `knobs.amd.use_buffer_ops`, default True; 3.3: AMDGCN_USE_BUFFER_OPS read once)
  and `HIPBackend.is_within_2gb(arg)`: its storage has at most 2**31 - 1 bytes (or `ptr_range()` says so).
  jitlab's CUDA key (dtype, 16-byte aligned) would launch a kernel built for a small storage on a view of
  a larger one, so on HIP each tensor's key item also carries Triton's own `is_within_2gb(arg)`
  (`HipAdapter.tensor_extra`, composed with keys.spec by the core), and the knob is a key item; `rules_reason()` refuses a HIP backend whose rules add anything else.
- The kernel launch: hipModuleLaunchKernel with blockDimX = warp_size * num_warps (64 on CDNA), the
  trailing scratch pointers differ per release (3.3/3.4: global_scratch; 3.5+: + profile_scratch), so the
  parameter list is read from the kernel's own code object metadata (`amdhsa.kernels[].args` in the
  amdgcn text) instead of guessed; see native_hip.h for the C side.
- HIP options (waves_per_eu, matrix_instr_nonkdim, kpack, schedule_hint, ...) are launch keywords like
  num_warps: they are in jitlab's key as options, as on CUDA.
- The stream and device getters are torch's (`torch._C._cuda_getCurrentRawStream` exists in ROCm builds
  too), exactly as on CUDA.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import _cbuild
from . import native, probe
from .adapter import Adapter, StateItem

log = logging.getLogger(__name__)

#: The parse_attr letters jitlab keys on HIP: "D" (16-byte divisibility), "S" (pointer range 32).
KEYED_LETTERS = frozenset("DS")


# -- gate and rules ----------------------------------------------------------------------------------------
OPT_IN_REASON = "backend 'hip' has not run on an AMD GPU yet (JITLAB_HIP=1 opts in to the offline-checked path)"


def unsupported_reason() -> str | None:
    """Why no HIP adapter can be built here (None when it can): a ROCm torch, and Triton's rules."""
    import torch

    if getattr(torch.version, "hip", None) is None:
        return "backend 'hip' without a ROCm build of torch"
    return rules_reason()


def _backend_class() -> Any:
    from triton.backends.amd.compiler import HIPBackend

    return HIPBackend


def rules_reason() -> str | None:
    """None when Triton's HIP specialization rules are the ones jitlab keys, else why not. Read from the
    backend's source: every attribute letter `parse_attr` turns into a compile attribute must be one jitlab
    keys, and every specialization method that adds "S" must do it through `is_within_2gb`."""
    import inspect

    try:
        hb = _backend_class()
    except ImportError as e:
        return f"triton has no AMD backend: {e}"
    if not callable(getattr(hb, "is_within_2gb", None)):
        return "triton's HIPBackend has no is_within_2gb (unknown buffer-ops rule)"
    letters = set()
    for cls in hb.__mro__:
        if "parse_attr" in vars(cls):
            letters |= set(re.findall(r"""["'](\w)["']\s+in\s+desc""", inspect.getsource(cls.parse_attr)))
    if letters - KEYED_LETTERS:
        return f"triton's HIP specialization has attributes {sorted(letters - KEYED_LETTERS)} that jitlab does not key"
    for name in vars(hb):
        if "specialization" in name and callable(getattr(hb, name)):
            src = inspect.getsource(getattr(hb, name))
            if re.search(r"""["']S["']""", src) and "is_within_2gb" not in src:
                return f"HIPBackend.{name} adds 'S' by a rule jitlab does not know"
    return None


class HipAdapter(Adapter):
    """The 3.3-3.9 launcher contract on Triton's HIP backend (see the module docstring)."""

    name = "triton-hip-launcher-3.3+"
    opt_in_reason = OPT_IN_REASON

    def __init__(self) -> None:
        super().__init__()
        # Each tensor's extra key item: Triton's own rule for "S", so it is exact in every release. Keyed also
        # where buffer ops are off or the parameter is not specialized: finer than Triton, an extra entry at most.
        self.tensor_extra = _backend_class().is_within_2gb

    def state_items(self, jit_fn: Any) -> tuple[StateItem, ...]:
        """CUDA's items plus the buffer-ops switch where it is a knob (3.4+): the binder reads it per launch."""
        items = super().state_items(jit_fn)
        try:
            from triton import knobs

            amd = knobs.amd
            amd.use_buffer_ops  # noqa: B018 - 3.4+
        except (ImportError, AttributeError):  # 3.3: read once from AMDGCN_USE_BUFFER_OPS (lru_cache)
            return items
        return items + (StateItem("<knobs.amd.use_buffer_ops>", "v", ((amd, "use_buffer_ops"),)),)


def offline_binder(jit_fn: Any, arch: str = "gfx942", warp_size: int = 64) -> Callable:
    """Triton's generated binder for a HIP target (MI300X: gfx942, wave64), without a GPU."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    return create_function_from_signature(jit_fn.signature, jit_fn.params,
                                          make_backend(GPUTarget("hip", arch, warp_size)))


# -- the kernel's parameter list ------------------------------------------------------------------------
_ARG = re.compile(r"^ *-? *\.(offset|size|value_kind): *(\S+)", re.M)


def kernel_args(amdgcn: str) -> list[tuple[int, int, str]] | None:
    """(offset, size, value_kind) of each explicit kernel argument, from the code object metadata in the
    amdgcn text (`amdhsa.kernels: - .args: - .offset/.size/.value_kind`); hidden_* arguments (filled by the
    runtime) are left out. None when there is no such list."""
    start = amdgcn.find("amdhsa.kernels:")
    if start < 0:
        return None
    block = amdgcn[start:]
    i = block.find(".args:")
    if i < 0:
        return []  # a kernel without arguments
    body = block[i + len(".args:"):]
    end = re.search(r"^ {4}\.\w+:", body, re.M)  # the next kernel-level key ends the list
    out = []
    for item in re.split(r"^ *- ", body[:end.start()] if end else body, flags=re.M)[1:]:
        fields = dict(_ARG.findall(item))
        if "offset" not in fields or "size" not in fields:
            return None
        if not fields.get("value_kind", "").startswith("hidden_"):
            out.append((int(fields["offset"]), int(fields["size"]), fields.get("value_kind", "")))
    return out


@dataclass(frozen=True)
class HipPlan(native.Plan):
    warp_size: int


def plan(compiled: Any) -> tuple[HipPlan | None, str]:
    """native.plan's type codes and refusals for a HIP kernel, with the trailing scratch pointers and the
    byte sizes taken from (and checked against) the kernel's own argument list. Needs no GPU."""
    p, why = native.plan(compiled, check_ptx=False, backend="hip")
    if p is None:
        return None, why
    k = native._kernel_of(compiled)
    amdgcn = (getattr(k, "asm", None) or {}).get("amdgcn")
    args = kernel_args(amdgcn) if isinstance(amdgcn, str) else None
    if args is None:
        return None, "no amdgcn argument list to check the parameter layout against"
    sizes = [s for _, s, _ in args]
    n_rt = len(p.param_sizes) - p.n_tail
    tail = sizes[n_rt:]
    if sizes[:n_rt] != p.param_sizes[:n_rt] or len(tail) > 2 or any(s != 8 for s in tail):
        return None, f"kernel arguments {sizes} differ from the planned {p.param_sizes[:n_rt]} + scratch pointers"
    m = re.search(r"\.wavefront_size:\s*(\d+)", amdgcn)
    warp = int(m.group(1)) if m else int(getattr(k.metadata, "warp_size", 0) or 0)
    if warp not in (32, 64) or warp != int(getattr(k.metadata, "warp_size", warp)):
        return None, f"wavefront size {warp} (metadata says {getattr(k.metadata, 'warp_size', None)})"
    return HipPlan(name=p.name, codes=p.codes, n_tail=len(tail), num_warps=p.num_warps, shared=p.shared,
                   warp_size=warp), "ok"


# -- building and launching ---------------------------------------------------------------------------------
_SRC = Path(__file__).with_name("native_launcher_hip.c")
_LOCK = threading.Lock()
_STATE: tuple[Any, str] | None = None


def hip_include() -> str | None:
    """The folder with hip/hip_runtime_api.h that Triton's AMD backend ships for its own launcher."""
    spec = importlib.util.find_spec("triton")
    for root in (spec.submodule_search_locations or []) if spec else []:
        d = os.path.join(root, "backends", "amd", "include")
        if os.path.isfile(os.path.join(d, "hip", "hip_runtime_api.h")):
            return d
    return None


def module() -> tuple[Any, str]:
    """(the built `_jitlab_native_hip` module, its path) or (None, why). Built once per process."""
    global _STATE
    with _LOCK:
        if _STATE is None:
            inc = hip_include()
            try:
                if inc is None:
                    raise RuntimeError("hip/hip_runtime_api.h not found (Triton's backends/amd/include)")
                here = _SRC.parent
                mod = _cbuild.build("_jitlab_native_hip", _SRC, "native", include_dirs=(inc,), headers=tuple(
                    here / n for n in ("native_launcher.c", "native_launcher.h", "native_key.h", "native_hip.h")))
                _STATE = (mod, str(mod.__file__))
            except Exception as e:  # noqa: BLE001 - unavailable means Triton's launcher, never a crash
                _STATE = (None, f"native HIP launcher unavailable: {type(e).__name__}: {e}")
    return _STATE


def driver_reason(mod: Any) -> str | None:
    """None once `mod` has loaded the libamdhip64.so Triton's HIP driver uses, else why not."""
    why = mod.driver_status()
    if why is not None and "no libamdhip64.so path" in why:
        try:
            from triton.backends.amd.driver import _get_path_to_hip_runtime_dylib

            mod.use_driver(_get_path_to_hip_runtime_dylib())
        except Exception as e:  # noqa: BLE001
            return f"no HIP runtime: {type(e).__name__}: {e}"
        why = mod.driver_status()
    return None if why is None else f"no HIP runtime: {why}"


def launcher_for(p: HipPlan, mod: Any, function: int, frozen: dict[int, Any] | None = None,
                 device: int | None = None) -> Callable[..., None]:
    """The C launcher of plan `p` for loaded function handle `function` (frozen: see native.make_launch)."""
    frozen = frozen or {}
    n = len(p.codes)
    if any(not 0 <= i < n for i in frozen):
        raise ValueError(f"frozen indices {sorted(frozen)} out of range for {n} arguments")
    ftuple = tuple(frozen.get(i, mod.LIVE) for i in range(n))
    return mod.make(function, p.num_warps, p.shared, p.codes, ftuple, p.n_tail, device or 0, p.warp_size)


def make_launch(compiled: Any, frozen: dict[int, Any] | None = None,
                device: int | None = None) -> tuple[Callable[..., None] | None, str]:
    """native.make_launch for a HIP kernel: (launch, how) or (None, why not)."""
    p, reason = plan(compiled)
    if p is None:
        return None, f"refused: backend 'hip': {reason}"
    mod, reason = module()
    if mod is None:
        return None, reason
    why = driver_reason(mod)
    if why is not None:
        return None, why
    k = native._kernel_of(compiled)
    try:
        if k.function is None:
            k.run  # noqa: B018 - Triton's .run property loads the binary
        launch = launcher_for(p, mod, int(k.function), frozen, device)
    except Exception as e:  # noqa: BLE001 - any failure keeps Triton's launcher
        return None, f"native HIP launcher not created: {type(e).__name__}: {e}"
    return launch, f"native-hip {p.codes.decode()}+{p.n_tail} tail, block {p.warp_size}x{p.num_warps}"


def launch_entry() -> int:
    """The address of hipModuleLaunchKernel in the libamdhip64.so Triton's HIP driver uses (the C floor)."""
    import ctypes

    from triton.backends.amd.driver import _get_path_to_hip_runtime_dylib

    return ctypes.cast(ctypes.CDLL(_get_path_to_hip_runtime_dylib()).hipModuleLaunchKernel, ctypes.c_void_p).value


def reset() -> None:
    """Forget the build (tests)."""
    global _STATE
    with _LOCK:
        _STATE = None


ADAPTER = HipAdapter
probe.BACKENDS["hip"] = sys.modules[__name__]  # found by probe, adapter and native (see probe.BACKENDS)
