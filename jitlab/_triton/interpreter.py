"""Run a `@triton.jit` kernel under Triton's CPU interpreter (tests and CPU demos on machines without a GPU).

This patches private interpreter internals (`interpreter._patch_lang`, `_patch_lang_tensor`,
`JITFunction.__call__`), which is why it lives in `jitlab._triton`; the kernels and the bench call
`interpreted()` and nothing else.

Three traps make "just set TRITON_INTERPRET=1" insufficient once Triton has been imported:

1. `triton.jit` reads `TRITON_INTERPRET` when it *decorates* a function, not when it launches it. A
   kernel decorated at import time on a GPU-less machine is a compiled `JITFunction` that cannot
   launch. `interpreted(kernel)` re-decorates the kernel's Python function (`kernel.fn`) with the
   variable set, giving an `InterpretedFunction`.
2. Every `@triton.jit` function the kernel *calls* was also decorated at import time: user helpers,
   and parts of `triton.language` itself (`tl.sum`, `tl.max`, `tl.zeros`, `tl.cdiv`, `tl.sigmoid`,
   ...; see `nested_jit_names()`). Called from interpreted code they raise "Cannot call @triton.jit'd
   outside of the scope of a kernel". So the launcher returned here routes `JITFunction.__call__` to an
   interpreted copy of the callee, for the duration of each interpreted launch only, and undoes the
   `triton.language` patching each nested call does (Triton's own nested-call path leaves it in place,
   which breaks any later real compile in the process).
3. With numpy >= 2.4, Triton 3.6's interpreter cannot use a runtime scalar as a Python int (for
   example `for j in range(start, n)` with tensor bounds): its `tensor.__index__` calls `int()` on a
   shape-(1,) array, which numpy 2.4 turned into a TypeError (triton-lang/triton#9171, fixed on
   Triton main by squeezing). The launcher installs the same fix for the launch's duration.

Not fixed here (Triton 3.6 interpreter limits; test in fp32/fp16, or with exactly representable data):
- `tl.dot` on bf16 operands returns garbage (it multiplies the raw bit patterns); fp16/fp32 are right;
- a bf16 tensor combined with a Python scalar (`x_bf16 + 1`) fails: no `get_bf16` constant builder;
- fp32 -> fp8e4m3 casts round wrongly where rounding carries into the exponent (1.96 -> 1.0).

Do not `monkeypatch.setenv("TRITON_INTERPRET", "1")` around code that may import a kernel module for
the first time: its kernels would be InterpretedFunctions for the rest of the process.

Usage (CPU tensors; launch options such as `num_warps` are accepted and ignored):

    interpreted(case.kernel)[case.grid](*case.args, **case.kwargs)
    case.launch(interpreted(case.kernel))
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from .introspect import python_fn

_INTERPRETED: dict[Any, "InterpretedKernel"] = {}
_NESTED: dict[Any, Any] = {}
_PATCH_LOCK = threading.RLock()


def _jit_interpreted(fn: Any) -> Any:
    """`triton.jit(fn)` with TRITON_INTERPRET=1 for the decoration only."""
    import triton

    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        wrapped = triton.jit(fn)
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old
    if type(wrapped).__name__ != "InterpretedFunction":  # pragma: no cover - a Triton change
        raise RuntimeError(f"triton.jit ignored TRITON_INTERPRET=1 (got {type(wrapped).__name__})")
    return wrapped


def _nested_call(self, *args, **kwargs):
    """Replacement for `JITFunction.__call__` during an interpreted launch.

    `InterpretedFunction.__call__` would patch `triton.language` for the callee's module and never
    undo it (harmless when everything is interpreted, fatal for later real compiles in the same
    process: `tl.core` builtins stay bound to the interpreter builder). So patch and restore here.
    """
    from triton.runtime import interpreter

    ifn = _NESTED.get(self.fn)
    if ifn is None:
        ifn = _NESTED[self.fn] = _jit_interpreted(self.fn)
    scope = interpreter._patch_lang(self.fn)
    try:
        return ifn.rewrite()(*args, **kwargs)
    finally:
        scope.restore()


def _index_fixed(patch_lang_tensor):
    """Wrap the interpreter's `_patch_lang_tensor` so `tensor.__index__` accepts shape-(1,) data."""

    def patched(tensor, scope):
        patch_lang_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    patched.__wrapped__ = patch_lang_tensor
    return patched


@contextlib.contextmanager
def nested_jit_calls_interpreted():
    """While active, calling any compiled-mode `JITFunction` runs it under the interpreter, and the
    interpreter's scalar `__index__` works with numpy >= 2.4."""
    from triton.runtime import interpreter
    from triton.runtime.jit import JITFunction

    with _PATCH_LOCK:
        original_call = JITFunction.__dict__.get("__call__")
        original_plt = getattr(interpreter, "_patch_lang_tensor", None)
        JITFunction.__call__ = _nested_call
        if original_plt is not None:
            interpreter._patch_lang_tensor = _index_fixed(original_plt)
        try:
            yield
        finally:
            if original_plt is not None:
                interpreter._patch_lang_tensor = original_plt
            if original_call is None:  # pragma: no cover - inherited in some Triton version
                del JITFunction.__call__
            else:
                JITFunction.__call__ = original_call


class InterpretedKernel:
    """An interpreter-mode kernel that launches like the original: `k[grid](*args, **kwargs)`."""

    def __init__(self, fn: Any):
        self.fn = _jit_interpreted(fn)  # the InterpretedFunction (its `.fn` is the Python function)

    def __getitem__(self, grid):
        launch = self.fn[grid]

        def run(*args, **kwargs):
            with nested_jit_calls_interpreted():
                return launch(*args, **kwargs)

        return run

    def run(self, *args, grid, warmup=False, **kwargs):
        with nested_jit_calls_interpreted():
            return self.fn.run(*args, grid=grid, warmup=warmup, **kwargs)

    def __repr__(self) -> str:
        return f"InterpretedKernel({getattr(self.fn.fn, '__qualname__', self.fn.fn)})"


def interpreted(jit_fn: Any) -> InterpretedKernel:
    """An interpreter-mode copy of `jit_fn` (memoized per Python function); see the module docstring."""
    fn = python_fn(jit_fn)
    cached = _INTERPRETED.get(fn)
    if cached is None:
        cached = _INTERPRETED[fn] = InterpretedKernel(fn)
    return cached


def nested_jit_names() -> list[str]:
    """`triton.language` names that are compiled-mode JITFunctions (need the nested-call routing)."""
    import triton.language as tl
    from triton.runtime.jit import JITFunction

    return sorted(n for n in dir(tl) if isinstance(getattr(tl, n), JITFunction))
