"""Read a kernel's Python function and parameters, whatever wraps it (for the bench, kernels and tests).

A kernel here may be a `JITFunction`, an `InterpretedFunction`, an Autotuner/Heuristics stack, a
jitcache wrapper or `jitlab._triton.interpreter.InterpretedKernel`: each holds the next layer in
`.fn`, down to the plain Python function. Nothing here launches or compiles.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable


def python_fn(kernel: Any) -> Callable:
    """The plain Python function under `kernel` (unwraps `.fn` until it stops changing)."""
    fn = kernel
    for _ in range(16):  # decorator stacks are shallow; the bound only stops a cycle
        inner = getattr(fn, "fn", None)
        if inner is None or inner is fn:
            break
        fn = inner
    return fn


def jit_function(kernel: Any) -> Any:
    """A compiled-mode `JITFunction` view of `kernel`: the kernel itself when it is one, else a fresh
    one over its Python function (also under TRITON_INTERPRET=1). Only for reading; never launched."""
    from triton.runtime.jit import JITFunction

    if isinstance(kernel, JITFunction):
        return kernel
    return JITFunction(python_fn(kernel))


def parameter_names(kernel: Any) -> tuple[list[str], list[str]]:
    """(constexpr names, runtime argument names) of `kernel`, in parameter order."""
    params = jit_function(kernel).params
    return [p.name for p in params if p.is_constexpr], [p.name for p in params if not p.is_constexpr]


def signature(kernel: Any) -> inspect.Signature:
    """The Python signature a launch `kernel[grid](...)` binds against."""
    return inspect.signature(python_fn(kernel))
