"""The one patch of Triton that process-wide install (jitlab.auto) needs: `KernelInterface.__getitem__`.

`kernel[grid]` of every Triton kernel object (JITFunction, Autotuner, Heuristics, the interpreter's
InterpretedFunction and their subclasses) resolves to `KernelInterface.__getitem__`, which returns a
closure over `self.run(grid=grid, warmup=False, ...)`. Replacing that one attribute reaches every
top-level launch; the launches an autotune/heuristics layer makes of its inner kernel call `.run`
directly, so they never come here (no double wrapping by construction).

`patch(hook)` makes `kernel[grid]` return `hook(kernel, grid)`; `unpatch()` puts back the identical
function object it replaced. `plain_launcher(kernel, grid)` is what `kernel[grid]` gave before the
patch: jitlab's own pass-through launches use it, so they never re-enter the hook.
Whether a kernel class may be wrapped is decided from what it defines (`own_launch_path`), not from
Triton's version. This module imports the rest of jitlab not at all: the hook is passed in.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

#: Methods of Triton's launch path: a class outside Triton that defines one of these launches (or
#: keys) its own way, which jitlab cannot know, so it is left to plain Triton.
LAUNCH_PATH = ("run", "create_binder", "_pack_args", "_do_compile")

_LOCK = threading.Lock()
#: (cls, original, patched) while installed, else None: one object, replaced whole, so a launch reads it in one
#: step (pass-through launches run plain_launcher on every launch: no copy, no lock)
_STATE: tuple | None = None


def kernel_interface() -> type | None:
    """Triton's KernelInterface, when it is the class whose __getitem__ every kernel inherits (probed:
    JITFunction and Autotuner reach it through their MRO and neither overrides it), else None."""
    try:
        from triton.runtime.autotuner import Autotuner
        from triton.runtime.jit import JITFunction, KernelInterface
    except ImportError:
        return None
    original = KernelInterface.__dict__.get("__getitem__")
    if not callable(original):
        return None
    if any(c.__getitem__ is not original for c in (JITFunction, Autotuner)):
        return None
    return KernelInterface


def patch(hook: Callable[[Any, Any], Callable[..., Any]]) -> str | None:
    """Make `kernel[grid]` return `hook(kernel, grid)` for every Triton kernel (`hook`, a plain
    function, becomes KernelInterface.__getitem__). None when done (or already done), else why it
    cannot be (the caller warns and installs nothing)."""
    global _STATE
    with _LOCK:
        if _STATE is not None:
            return None
        cls = kernel_interface()
        if cls is None:
            return "this Triton has no KernelInterface.__getitem__ shared by its kernel classes"
        original = cls.__dict__["__getitem__"]
        # the hook itself becomes the method (no wrapper frame: it runs on every launch)
        _STATE = (cls, original, hook)
        cls.__getitem__ = hook
        return None


def unpatch() -> bool:
    """Put back the exact `__getitem__` that `patch` replaced. False if nothing was patched."""
    global _STATE
    with _LOCK:
        if _STATE is None:
            return False
        cls, original, patched = _STATE
        if cls.__dict__.get("__getitem__") is patched:
            cls.__getitem__ = original
        _STATE = None
        return True


def is_patched() -> bool:
    return _STATE is not None


def plain_launcher(kernel: Any, grid: Any) -> Callable[..., Any]:
    """What `kernel[grid]` returned before the patch (the class's own __getitem__ when it has one)."""
    state = _STATE
    if state is not None and type(kernel).__getitem__ is state[2]:
        return state[1](kernel, grid)
    return kernel[grid]


def own_launch_path(kernel: Any) -> str | None:
    """"Class.method" for the first layer of `kernel`'s stack (the object, then its `.fn` chain) whose
    launch path is not Triton's own: a method of LAUNCH_PATH defined by a class outside the `triton`
    package, or set on the instance. None when every layer launches as Triton does."""
    layer = kernel
    for _ in range(64):  # decorator stacks are shallow; the bound only stops a cycle
        if layer is None:
            return None
        for name in LAUNCH_PATH:
            if name in getattr(layer, "__dict__", {}):
                return f"{type(layer).__qualname__}.{name} (set on the instance)"
            for klass in type(layer).__mro__:
                if name in klass.__dict__:
                    if not (klass.__module__ or "").startswith("triton."):
                        return f"{klass.__module__}.{klass.__qualname__}.{name}"
                    break
        layer = getattr(layer, "fn", None)
    return None


def qualified_name(kernel: Any) -> str:
    """`module.qualname` of the Python function under `kernel` (through autotune/heuristics layers):
    the name include/exclude patterns match."""
    layer = kernel
    for _ in range(64):
        inner = getattr(layer, "fn", None)
        if inner is None or not hasattr(inner, "__dict__"):
            break
        layer = inner
    module = getattr(layer, "__module__", None) or getattr(kernel, "__module__", "?")
    name = getattr(layer, "__qualname__", None) or getattr(layer, "__name__", None) or type(kernel).__name__
    return f"{module}.{name}"
