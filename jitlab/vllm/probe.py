"""Version probe: do the installed vLLM's kernels look exactly like the ones the plugin knows?

Compared per kernel: the module imports, the global exists and is a plain Triton kernel (not already
wrapped), and its parameters match `known.KERNELS` in order, name and constexpr-ness. Any
difference leaves every kernel unwrapped: the shipped policies encode what vLLM 0.26.0's wrappers
pass, so a kernel that changed, or a sibling of one that changed, is not one they were checked on.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from types import ModuleType
from typing import Any

from .known import KERNELS, Kernel


def vllm_installed() -> bool:
    """Whether a `vllm` package can be imported at all (found without importing it)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def signature(kernel: Any) -> tuple[str, ...] | None:
    """The kernel's parameters as `known` writes them, or None when it is not a Triton kernel."""
    from .._triton import inner_jit_function, params_of

    jit_fn = inner_jit_function(kernel)
    if jit_fn is not None:
        return tuple(p.name + (":constexpr" if p.constexpr else "") for p in params_of(jit_fn))
    fn = getattr(kernel, "fn", None)  # TRITON_INTERPRET=1: triton.jit gave an InterpretedFunction
    if type(kernel).__name__ != "InterpretedFunction" or not callable(fn):
        return None
    # Triton's own rule (KernelParam.is_constexpr): the annotation names constexpr.
    return tuple(p.name + (":constexpr" if "constexpr" in str(p.annotation) else "")
                 for p in inspect.signature(fn).parameters.values())


def _diff(known: tuple[str, ...], found: tuple[str, ...]) -> str:
    missing = [p for p in known if p not in found]
    extra = [p for p in found if p not in known]
    parts = ([f"missing {missing[:4]}"] if missing else []) + ([f"new {extra[:4]}"] if extra else [])
    return ", ".join(parts) or "parameters reordered"


def check(kernels: tuple[Kernel, ...] = KERNELS) -> tuple[dict[str, ModuleType], list[str]]:
    """(imported modules by name, differences as one-line strings; empty when everything matches)."""
    from ..cache import JitCache

    modules: dict[str, ModuleType] = {}
    problems: list[str] = []
    for k in kernels:
        if k.module not in modules:
            try:
                modules[k.module] = importlib.import_module(k.module)
            except Exception as e:  # noqa: BLE001 - any import failure means "not the vLLM we know"
                problems.append(f"{k.module}: cannot import ({type(e).__name__}: {e})")
                modules[k.module] = None  # type: ignore[assignment]
        mod = modules[k.module]
        if mod is None:
            continue
        obj = getattr(mod, k.name, None)
        if obj is None:
            problems.append(f"{k.module}.{k.name}: not found")
            continue
        found = signature(obj)
        if isinstance(obj, JitCache):
            problems.append(f"{k.module}.{k.name}: already wrapped by jitcache")
        elif found is None:
            problems.append(f"{k.module}.{k.name}: not a plain Triton kernel ({type(obj).__name__})")
        elif found != k.params:
            problems.append(f"{k.name}: signature differs ({_diff(k.params, found)})")
    return {n: m for n, m in modules.items() if m is not None}, problems
