"""The only package that touches Triton internals. See adapter.py for the contract."""

from __future__ import annotations

from typing import Any, Callable

from . import hip as _hip  # noqa: F401  registers the HIP backend with probe.BACKENDS (no import circle)
from .adapter import Adapter, Compiled, Param, get_adapter, inner_jit_function, offline_binder, params_of

__all__ = ["Adapter", "Compiled", "Param", "get_adapter", "inner_jit_function", "offline_binder", "params_of",
           "compiled_launcher", "function_handle"]


def function_handle(compiled: Any) -> int:
    """The driver's handle (CUfunction / hipFunction_t) of a loaded kernel, as an int (the bench's floors)."""
    return int(compiled.function)


def compiled_launcher(kernel: Any, grid: Any, args: tuple, kwargs: dict) -> Callable[[], None]:
    """The "stored compiled kernel called directly" baseline (the seed's approach): compile once through
    Triton, then call `CompiledKernel.run` with the bound arguments, the current stream and Triton's hooks."""
    ad, reason = get_adapter()
    if ad is None:
        raise RuntimeError(f"no compiled launch here: {reason}")
    fn = inner_jit_function(kernel)
    c = ad.compile(fn, grid, args, kwargs)
    device = ad.get_device()
    bound, _spec, _opts = ad.binder(fn, device)(*args, **kwargs, **ad.launch_options(fn, kwargs))
    vals = tuple(bound.values())
    g = grid(bound) if callable(grid) else grid
    g0, g1, g2 = (tuple(g) + (1, 1))[:3]
    run, function, packed, kern = c.run, c.function, c.packed_metadata, c.kernel
    get_stream, hooks = ad.get_stream, ad.hooks

    def launch() -> None:
        stream = get_stream(device)
        h = hooks()
        md = kern.launch_metadata(g, stream, *vals) if h else None
        run(g0, g1, g2, stream, function, packed, md, *(h or (None, None)), *vals)

    return launch
