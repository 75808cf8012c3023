"""jitlab's native launcher: a small C `cuLaunchKernel` caller for the jitcache hit path.

Triton 3.6's generated launcher costs ~9 us for 26 arguments on an H200 (PyArg_ParseTuple, one
cuPointerGetAttribute per pointer, the hook/metadata protocol); the bare cuLaunchKernel floor is
~5 us (notes: triton-launch.md 3.6, 4.7). `native_launcher.c` does only what that launcher does
per call for the kernels `plan()` accepts, and `make_launch()` returns a callable with the
signature of cache.py's `entry.launch(g0, g1, g2, stream, vals)`.

The C source is built on first use with the host C compiler (no libcuda link: it is dlopen'ed
when the first launcher is made), into $JITLAB_CACHE_DIR/native or ~/.cache/jitlab/native,
keyed by a hash of the source, the Python build and the compiler. Every failure is reported as
`(None/False, reason)`, never raised: jitlab then keeps Triton's launcher.

Only this module and adapter.py read Triton internals (CompiledKernel.metadata/src/asm/function).
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import _cbuild, record_layout
from . import probe

_SRC = Path(__file__).with_name("native_launcher.c")
_MODNAME = "_jitlab_native"

#: Triton signature type -> native type code. Integer codes are the PyArg_ParseTuple letters that
#: Triton 3.6's make_launcher generates (driver.py `format_of(ty_to_cpp(ty))`), so conversion and
#: overflow errors are the same; floats get Triton's storage packing (pack_fp16/bf16/fp32/fp64).
TYPE_CODES: dict[str, str] = {
    "constexpr": "x",
    "i1": "b", "i8": "b", "i16": "h", "i32": "i", "i64": "L",
    "u1": "B", "u8": "B", "u16": "H", "u32": "I", "u64": "K",
    "fp16": "e", "bf16": "E", "fp32": "f", "f32": "f", "fp64": "d",
}
#: Bytes each code occupies in the kernel's parameter list ('x' occupies none; 'P' is 8).
CODE_SIZES: dict[str, int] = {"P": 8, "b": 1, "h": 2, "i": 4, "L": 8, "B": 1, "H": 2, "I": 4, "K": 8,
                              "e": 2, "E": 2, "f": 4, "d": 8}


def code_of(ty: Any) -> str | None:
    """The native code for one `src.signature` entry, or None when the native path can't pass it."""
    if not isinstance(ty, str):  # tuples (flattened by Triton) are not handled here
        return None
    if ty.startswith("*"):  # "*fp32", "*kfp16" (pointer to const is still a runtime pointer)
        return "P"
    return TYPE_CODES.get(ty)


# -- building ------------------------------------------------------------------------------------------
def _cuda_include() -> str | None:
    """The folder holding cuda.h: Triton ships one (backends/nvidia/include) next to its own launcher."""
    spec = importlib.util.find_spec("triton")
    cands = [os.path.join(p, "backends", "nvidia", "include") for p in (spec.submodule_search_locations or [])] \
        if spec else []
    cands += [os.path.join(os.environ[v], "include") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    cands.append("/usr/local/cuda/include")
    return next((d for d in cands if os.path.isfile(os.path.join(d, "cuda.h"))), None)


_HEADERS = (_SRC.with_name("native_launcher.h"), _SRC.with_name("native_key.h"))
# the recorder's hit block, written by the dispatcher as by the Python hit path's appender (jitlab/hit_block.h)
_HIT_BLOCK_H = Path(record_layout.__file__).with_name("hit_block.h")


def _build() -> Any:
    inc = _cuda_include()
    if inc is None:
        raise RuntimeError("cuda.h not found (Triton's backends/nvidia/include, $CUDA_HOME/include)")
    return _cbuild.build(_MODNAME, _SRC, "native", headers=_HEADERS, include_dirs=(inc,))


_LOCK = threading.Lock()
_MOD: Any = None
_STATE: tuple[bool, str] | None = None


def available() -> tuple[bool, str]:
    """(True, path) once the C module is built and imported here; else (False, why). Cached.
    libcuda is not needed for this; `make_launch` reports a missing driver."""
    global _MOD, _STATE
    if _STATE is None:
        with _LOCK:
            if _STATE is None:
                try:
                    _MOD = _build()
                    _STATE = (True, str(_MOD.__file__))
                except Exception as e:  # noqa: BLE001 - unavailable means Triton's launcher, never a crash
                    _STATE = (False, f"native launcher unavailable: {type(e).__name__}: {e}")
    return _STATE


def reset() -> None:
    """Forget the build decision (tests)."""
    global _MOD, _STATE
    with _LOCK:
        _MOD, _STATE = None, None


def module() -> Any:
    ok, reason = available()
    if not ok:
        raise RuntimeError(reason)
    return _MOD


# -- planning: what the kernel needs, or why we refuse ----------------------------------------------------
@dataclass(frozen=True)
class Plan:
    name: str
    codes: bytes  # one code per bound argument ('x' = constexpr slot)
    n_tail: int  # trailing NULL pointer params (global_scratch, profile_scratch)
    num_warps: int
    shared: int

    @property
    def param_sizes(self) -> list[int]:
        """The kernel's parameter sizes as the native launcher will pass them."""
        return [CODE_SIZES[c] for c in self.codes.decode() if c != "x"] + [8] * self.n_tail


def _kernel_of(obj: Any) -> Any:
    """A triton CompiledKernel from itself or from jitlab's adapter.Compiled."""
    if not hasattr(obj, "metadata") and hasattr(getattr(obj, "kernel", None), "metadata"):
        return obj.kernel
    return obj


def plan(compiled: Any, check_ptx: bool = True, backend: str = "cuda") -> tuple[Plan | None, str]:
    """Map a CompiledKernel to type codes, refusing anything the C launcher does not reproduce.
    Needs no GPU (works on `triton.compile(..., target=GPUTarget("cuda", 90, 32))` output)."""
    k = _kernel_of(compiled)
    md, src = getattr(k, "metadata", None), getattr(k, "src", None)
    if md is None or src is None or not isinstance(getattr(src, "signature", None), dict):
        return None, "not a triton CompiledKernel with metadata and src.signature"
    target = getattr(md, "target", None)
    if getattr(target, "backend", "cuda") != backend:  # hip.plan asks for "hip"
        return None, f"backend {target.backend!r} (only {backend})"
    # Each of these selects a cuLaunchKernelEx attribute or a per-launch allocation in Triton's launcher.
    if getattr(md, "num_ctas", 1) != 1:
        return None, f"num_ctas={md.num_ctas} (cluster launch)"
    cluster = tuple(getattr(md, "cluster_dims", None) or (1, 1, 1))
    if any(d != 1 for d in cluster):
        return None, f"cluster_dims={cluster}"
    if getattr(md, "launch_cooperative_grid", False):
        return None, "launch_cooperative_grid"
    if getattr(md, "launch_pdl", False):
        return None, "launch_pdl"
    for f in ("global_scratch_size", "profile_scratch_size"):
        if (getattr(md, f, 0) or 0) > 0:
            return None, f"{f}={getattr(md, f)} (needs a per-launch scratch allocation)"
    if getattr(md, "tensordesc_meta", None):
        return None, "tensor descriptor arguments"
    if getattr(md, "instrumentation_mode", "") not in ("", None):
        return None, f"instrumentation_mode={md.instrumentation_mode!r}"
    codes = []
    for name, ty in src.signature.items():
        c = code_of(ty)
        if c is None:
            return None, f"argument {name!r} of type {ty!r}"
        codes.append(c)
    # 3.3/3.4 kernels take a trailing global_scratch pointer, 3.5+ also profile_scratch; Triton
    # always passes both (NULL when unused). Their metadata fields mark which ones exist.
    n_tail = sum(hasattr(md, f) for f in ("global_scratch_size", "profile_scratch_size"))
    p = Plan(name=str(getattr(k, "name", "?")), codes="".join(codes).encode(), n_tail=n_tail,
             num_warps=int(md.num_warps), shared=int(md.shared))
    return (p, "ok") if not check_ptx else _check_ptx(k, p)


def _check_ptx(k: Any, p: Plan) -> tuple[Plan | None, str]:
    ptx = getattr(k, "asm", {}).get("ptx") if hasattr(k, "asm") else None
    if isinstance(ptx, str):
        sizes = ptx_param_sizes(ptx)
        if sizes is not None and sizes != p.param_sizes:
            return None, f"PTX parameters {sizes} differ from the planned {p.param_sizes}"
    return p, "ok"


_ENTRY = re.compile(r"\.entry\s+[\w$.]+\s*\((.*?)\)", re.S)
_PARAM = re.compile(r"\.param\s+(?:\.align\s+\d+\s+)?\.[a-z]+(\d+)\b[^,\[\n]*?(?:\[(\d+)\])?\s*(?:,|$)", re.M)


def ptx_param_sizes(ptx: str) -> list[int] | None:
    """Byte sizes of the kernel's parameters from its PTX `.entry` (None if it can't be read):
    `.param .u64 .ptr .global .align 1 k_param_0` -> 8, `.param .align 2 .b8 k_param_7[2]` -> 2."""
    m = _ENTRY.search(ptx)
    if m is None:
        return None
    body = m.group(1).strip()
    if not body:
        return []
    out = []
    for line in body.split(","):
        pm = _PARAM.search(line.strip() + ",")
        if pm is None:
            return None
        bits, count = int(pm.group(1)), int(pm.group(2) or 1)
        out.append(bits // 8 * count)
    return out


# -- the launcher -------------------------------------------------------------------------------------------
def make_launch(compiled: Any, frozen: dict[int, Any] | None = None, device: int | None = None,
                module: Any = None) -> tuple[Callable[[int, int, int, int, tuple], None] | None, str]:
    """A native `launch(g0, g1, g2, stream, vals)` for a loaded kernel, or (None, why not).

    `frozen` maps bound-argument indices to prepared values (jitlab's assume_const: an int address,
    None or an object with data_ptr() for a pointer; a number for a scalar), written once into the
    parameter template; those slots of `vals` are then ignored (cache.py's packer is not needed).
    `device` is the kernel's device, whose primary context is made current in a thread that has no
    context (Triton always uses device 0 there; None means 0 too). `module`: the dispatcher module, whose
    launchers the dispatcher calls without a Python call (default: the C module)."""
    other = probe.BACKENDS.get(getattr(getattr(getattr(_kernel_of(compiled), "metadata", None), "target", None),
                                       "backend", ""))
    if other is not None:  # hip: the HIP build of the same C launcher (HIP has no dispatcher: cache.py)
        return other.make_launch(compiled, frozen, device)
    p, reason = plan(compiled, check_ptx=False)  # the loaded kernel's own parameter list is checked below
    if p is None:
        return None, f"refused: {reason}"
    if module is None:
        ok, reason = available()
        if not ok:
            return None, reason
    mod = module or _MOD
    why = mod.driver_status()
    if why is not None:
        return None, f"no CUDA driver: {why}"
    k = _kernel_of(compiled)
    try:
        if k.function is None:  # after warmup the binary is not loaded yet: Triton's .run property loads it
            k.run  # noqa: B018
        function = int(k.function)
        # The driver's view of the loaded kernel (cuFuncGetParamInfo, 12.4+): the authoritative check
        # of the layout, trailing scratch pointers included. None/() means it can't tell (the PTX was checked).
        got = mod.param_sizes(function)
        if got and list(got) != p.param_sizes:
            return None, f"refused: loaded kernel has parameter sizes {list(got)}, planned {p.param_sizes}"
        n = len(p.codes)
        frozen = frozen or {}
        if any(not 0 <= i < n for i in frozen):
            return None, f"frozen indices {sorted(frozen)} out of range for {n} arguments"
        ftuple = tuple(frozen.get(i, mod.LIVE) for i in range(n))
        launcher = mod.make(function, p.num_warps, p.shared, p.codes, ftuple, p.n_tail,
                            0 if device is None else int(device))
    except Exception as e:  # noqa: BLE001 - any failure keeps Triton's launcher
        return None, f"native launcher not created: {type(e).__name__}: {e}"
    return launcher, f"native {p.codes.decode()}+{p.n_tail} tail"


# -- the dispatcher (dispatch.cpp): one C call per hit ----------------------------------------------------
_DISPATCH_SRC = _SRC.with_name("dispatch.cpp")


def _build_dispatch(bench: bool = False) -> Any:
    """Build dispatch.cpp against the installed torch (headers and libraries of torch's own wheel); `bench`:
    the build with the stage stops and A/B variants (-DJITLAB_BENCH_STOPS, module _jitlab_dispatch_bench)."""
    inc = _cuda_include()
    if inc is None:
        raise RuntimeError("cuda.h not found (Triton's backends/nvidia/include, $CUDA_HOME/include)")
    import torch
    from torch.utils import cpp_extension

    libs = cpp_extension.library_paths()
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))
    extra = (f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-DJITLAB_TORCH_VERSION={torch.__version__!r}",
             *(f"-L{d}" for d in libs), *(f"-Wl,-rpath,{d}" for d in libs),
             "-ltorch_python", "-ltorch", "-ltorch_cpu", "-lc10", *record_layout.c_defines(),
             *(("-DJITLAB_BENCH_STOPS",) if bench else ()))
    mod = _cbuild.build("_jitlab_dispatch_bench" if bench else "_jitlab_dispatch", _DISPATCH_SRC,
                        "dispatch-bench" if bench else "dispatch", headers=(*_HEADERS, _HIT_BLOCK_H), cxx=True,
                        include_dirs=(inc, *cpp_extension.include_paths(), str(_HIT_BLOCK_H.parent)), extra=extra,
                        timeout=600)
    from . import gridmeta

    mod.set_grid_reads(gridmeta.reads)  # what a callable grid reads (dispatch.cpp's GridReads)
    if bench:  # the grid memo A/B (AB_GRID_CACHE): which grids are pure, and the callables they may call
        mod.set_grid_purity(gridmeta.purity, gridmeta.pure_callables())
    return mod


class _Background:
    """A build that runs once, on a background thread (a C++ build against torch takes tens of seconds: the
    first launches go through the Python hit path meanwhile). `get(wait)` -> (module | None, reason);
    `on_ready(module | None, reason)` is called once the build ends, whether it built or not."""

    def __init__(self, build: Callable[[], Any], what: str):
        self._build, self._what = build, what
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._result: tuple[Any, str] | None = None
        self._ready: list[Callable[[Any], None]] = []
        self.seconds: float | None = None

    def get(self, wait: bool = False, on_ready: Callable[[Any], None] | None = None) -> tuple[Any, str]:
        with self._lock:
            if self._result is None and on_ready is not None:
                self._ready.append(on_ready)
            if self._result is None and self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"jitlab-build-{self._what}", daemon=True)
                self._thread.start()
            thread, result = self._thread, self._result
        if result is None and wait and thread is not None:
            thread.join()
            result = self._result
        return result if result is not None else (None, f"{self._what} is being built")

    def _run(self) -> None:
        import logging
        import time

        log = logging.getLogger(__name__)
        log.info("jitlab: building the %s (once per torch and Python; tens of seconds)", self._what)
        t0 = time.perf_counter()
        try:
            result = (self._build(), "built")
        except Exception as e:  # noqa: BLE001 - unavailable means the Python hit path, never a crash
            result = (None, f"{self._what} unavailable: {type(e).__name__}: {e}")
        self.seconds = time.perf_counter() - t0
        log.info("jitlab: %s: %s in %.1f s", self._what, result[1], self.seconds)
        with self._lock:
            self._result, ready, self._ready = result, self._ready, []
        for fn in ready:  # failed builds too: a waiting kernel says why it has no dispatcher
            fn(*result)


DISPATCH = _Background(_build_dispatch, "native dispatcher")
#: The bench's build of the same dispatcher, with stage stops and A/B variants (jitlab.bench.launch_parts only).
DISPATCH_BENCH = _Background(lambda: _build_dispatch(bench=True), "bench dispatcher")


def make_dispatcher(mod: Any, *, names: tuple[str, ...], defaults: tuple, required: Any, npositional: int,
                    codes: str, state: tuple, device: Any, get_stream: Callable, hook_holder: Any, hook_chain: Any,
                    active: Any, scope_var: Any, tables: dict, fn: Any, slow: Callable, tensor_type: type,
                    spec: Callable, constexpr_item: Callable) -> tuple[Callable | None, str]:
    """A Dispatcher (dispatch.cpp) from the dispatcher module `mod`, or (None, why not). `state` holds
    (op, obj, attr[, obj2, attr2]) reads; `defaults` one value per name, `required` for none."""
    try:
        keyer = mod.make_keyer(codes.encode(), tensor_type, spec, constexpr_item)
        return mod.make_dispatcher(tuple(names), tuple(defaults), npositional, keyer, tuple(state), device,
                                   get_stream, hook_holder, hook_chain, active, scope_var, tables, fn, slow,
                                   required), "native dispatcher"
    except Exception as e:  # noqa: BLE001 - the Python hit path stays
        return None, f"native dispatcher not created: {type(e).__name__}: {e}"


# The parts of a dispatcher hit in order (dispatch.cpp's STOP_*, in the bench build only): the bench times
# hits stopped after each (jitlab.bench.launch_parts); the difference between consecutive stops is what
# that part costs.
STAGES = ("bind", "key", "checks", "prep", "pack")
#: The bench build's A/B variants of a launch (native_launcher.h's AB_* bits): what each changes.
AB_VARIANTS = {
    "no-gil-release": (1, "the GIL kept around the driver call"),
    "launch-ex": (2, "cuLaunchKernelEx with no attributes (as Triton's launcher) instead of cuLaunchKernel"),
    "params-once": (4, "parameter pointer array built once per entry, not per launch"),
    "stream-once": (8, "the stream read once, not per launch"),
    "grid-whole-dict": (16, "a callable grid gets Triton's whole dict, not the items it reads"),
    "grid-cache": (32, "a pure callable grid's last result reused while what it reads is equal (gridmeta.purity)"),
}


def _bench_module(mod: Any) -> Any:
    if not hasattr(mod, "set_stop"):
        raise ValueError("stage stops and A/B variants exist only in the bench build (native.DISPATCH_BENCH)")
    return mod


def stop_hits(mod: Any, dispatcher: Any, stage: str | None) -> None:
    """Make `dispatcher` (of the bench build `mod`) stop its hits after `stage` (one of STAGES; None: whole
    launches again). A stopped dispatcher launches nothing: for jitlab.bench.launch_parts only."""
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES} or None, got {stage!r}")
    _bench_module(mod).set_stop(dispatcher, 0 if stage is None else STAGES.index(stage) + 1)


def ab_launches(mod: Any, dispatcher: Any, variants: tuple[str, ...] | list[str] = ()) -> None:
    """Make `dispatcher` (of the bench build `mod`) launch with the A/B `variants` (names of AB_VARIANTS;
    none: as the shipping dispatcher)."""
    bad = [v for v in variants if v not in AB_VARIANTS]
    if bad:
        raise ValueError(f"unknown A/B variant(s) {bad}; choose from {tuple(AB_VARIANTS)}")
    _bench_module(mod).set_ab(dispatcher, sum(AB_VARIANTS[v][0] for v in set(variants)))


def make_keyer(codes: str, tensor_type: type, spec: Callable, constexpr_item: Callable) -> tuple[Callable | None, str]:
    """jitlab's cache key computed in C (native_key.h): `keyer(*tail_items, values)`, or (None, why)
    when the module is unavailable. Codes per bound argument: '-' unchecked, 'c' constexpr, 'r'/'a'/'u'/'v'
    runtime (specialize/align combinations). `spec` and `constexpr_item` are the Python references
    (jitlab.keys) the keyer calls for values it has no C branch for."""
    ok, reason = available()
    if not ok:
        return None, reason
    try:
        return _MOD.make_keyer(codes.encode(), tensor_type, spec, constexpr_item), "native"
    except Exception as e:  # noqa: BLE001
        return None, f"native keyer not created: {type(e).__name__}: {e}"
