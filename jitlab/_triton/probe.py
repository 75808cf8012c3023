"""Capability probes for Triton's launch internals.

Each probe answers one question about the installed Triton and names the upstream change it
exists for, so a reader knows when it can go. Probes never parse the version as a float
(dejavu's `major + minor/10` turns 3.10 into 4.0); they look for the thing itself. Each is
cached: they run once, when the first kernel is decorated.
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

#: Backends other than CUDA, by Triton's name, each the module that implements it (`unsupported_reason()`,
#: its Adapter class `ADAPTER`, `make_launch()`): jitlab._triton.hip registers itself here when jitlab._triton
#: is imported, so the modules it builds on (adapter, native, this one) never import it: no import circle.
BACKENDS: dict[str, Any] = {}


@functools.cache
def triton_version() -> str:
    import triton

    return getattr(triton, "__version__", "unknown")


@functools.cache
def has_device_caches() -> bool:
    """triton-lang/triton 3.3 replaced `JITFunction.cache` + `binder` by per-device
    `device_caches[device] = (..., binder)`; 3.5 inserted a kernel-key cache in the middle of that
    tuple (so we only ever use its last element, the binder)."""
    from triton.runtime.jit import JITFunction

    return "device_caches" in JITFunction.__init__.__code__.co_names


@functools.cache
def binder_returns_specialization() -> bool:
    """3.3+ binders return `(bound_args, specialization, options)`; 3.2 returned five values
    with only non-constexpr values for the launcher (triton-lang/triton#5187 era). We support the former."""
    from triton.runtime import jit

    src = inspect.getsource(jit.create_function_from_signature)
    return "return params, specialization, options" in src


@functools.cache
def hook_source() -> str:
    """Where launch hooks live:
    - "knobs-chain": 3.5+ `knobs.runtime.launch_enter_hook` is a HookChain, empty by default
      (triton-lang/triton#7866); an empty chain still costs a LazyDict + 2 calls per launch in Triton.
    - "knobs": 3.4 `knobs.runtime.launch_enter_hook`, Optional, None by default (triton-lang/triton#6467).
    - "compiled-kernel": 3.2/3.3 class attributes on `CompiledKernel`.
    """
    try:
        from triton import knobs

        hook = knobs.runtime.launch_enter_hook
        if hasattr(knobs, "HookChain") and isinstance(hook, knobs.HookChain):
            return "knobs-chain"
        return "knobs"
    except (ImportError, AttributeError):
        return "compiled-kernel"


_INJECTED = re.compile(r"""kwargs\[["'](\w+)["']\]\s*=""")


@functools.cache
def run_injected_options() -> tuple[str, ...]:
    """Option names `JITFunction.run` writes into its kwargs before binding, read from its source:
    each comes from Triton state (a knob or the environment) and so is part of Triton's cache key.
    3.3: `debug` (from TRITON_DEBUG); 3.4 (triton-lang/triton#6641, knobs): `debug` from
    `knobs.runtime.debug`; 3.6+: also `instrumentation_mode`; 3.9: also `fpsan_homomorphic_casts`. A
    later release may add more: an option jitlab has no reader for turns the fast path off
    (adapter.get_adapter), so an unknown input to Triton's key is never ignored."""
    from triton.runtime.jit import JITFunction

    return tuple(dict.fromkeys(_INJECTED.findall(inspect.getsource(JITFunction.run))))


@functools.cache
def run_calls_stages_hook() -> bool:
    """3.7+ `run()` calls `knobs.runtime.add_stages_inspection_hook` on every launch when it is set and
    appends its hash to the key (`("custom_pipeline", hash)`); 3.6 reads it only when compiling."""
    from triton.runtime.jit import JITFunction

    return "add_stages_inspection_hook" in inspect.getsource(JITFunction.run)


@functools.cache
def interpreter_active() -> bool:
    try:
        from triton import knobs
    except ImportError:  # 3.3: no knobs module yet (triton-lang/triton#6641 added it in 3.4)
        import os

        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    return bool(knobs.runtime.interpret)


@functools.cache
def active_backend() -> str | None:
    """"cuda", "hip", or None when no GPU driver is active (CPU-only machines, interpreter)."""
    try:
        from triton.runtime.driver import driver

        return driver.active.get_current_target().backend
    except Exception:  # noqa: BLE001 - "0 active drivers" on CPU-only machines
        return None


#: The pass-through reason without a GPU driver: plain Triton cannot launch either, so say what to do.
NO_DRIVER = ("no active GPU driver, so Triton itself cannot launch here (it raises '0 active drivers'): "
             "on a machine without a GPU set TRITON_INTERPRET=1 and pass CPU tensors to run kernels in "
             "Triton's interpreter")


def _interpreter_needs() -> str:
    """What Triton's interpreter needs and lacks here (numpy: Triton does not install it)."""
    import importlib.util

    try:
        missing = importlib.util.find_spec("numpy") is None
    except (ImportError, ValueError):
        missing = True
    if missing:
        return "; Triton's interpreter needs numpy, which is not installed: pip install numpy"
    return ""


def unsupported_reason() -> str | None:
    """Why the fast path cannot be used here (None when it can)."""
    if not has_device_caches() or not binder_returns_specialization():
        return f"triton {triton_version()} predates the 3.3 launcher contract"
    if interpreter_active():
        return "TRITON_INTERPRET=1 (kernels run in Triton's interpreter)" + _interpreter_needs()
    backend = active_backend()
    if backend is None:
        return NO_DRIVER
    if backend in BACKENDS:  # hip, checked offline only: jitcache also needs JITLAB_HIP=1 (HipAdapter.opt_in_reason)
        return BACKENDS[backend].unsupported_reason()
    if backend != "cuda":
        return f"backend {backend!r} is not checked yet"
    return None
