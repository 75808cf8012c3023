"""Kernel workloads: each `make_case(device, dtype=..., **shape) -> Case` (see `case.py`).

`CASES` maps a workload name to its builder. Modules are imported on first use, so an import error in
one workload (or a missing optional one) never breaks the others, and importing this package does not
import Triton.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from jitlab.kernels.case import Case

# name -> (module under jitlab.kernels, builder names tried in order)
_BUILDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tiny": ("tiny", ("make_case",)),
    "paged_attention_2d": ("paged_attention", ("make_case",)),
    "cache_write": ("cache_write", ("make_case",)),
    "unified_attention_2d": ("unified_attention", ("make_case_2d",)),
    "unified_attention_3d": ("unified_attention", ("make_case_3d",)),
    "rms_norm": ("layers", ("make_rms_norm_case",)),
    "rope": ("layers", ("make_rope_case",)),
    "silu_and_mul": ("layers", ("make_silu_and_mul_case",)),
}


def builder(name: str) -> Callable[..., Case]:
    """The `make_case` callable for workload `name` (imports its module now)."""
    module, attrs = _BUILDERS[name]
    mod = importlib.import_module(f"jitlab.kernels.{module}")
    for attr in attrs:
        fn = getattr(mod, attr, None)
        if fn is not None:
            return fn
    raise AttributeError(f"jitlab.kernels.{module} has none of {attrs}")


def _lazy(name: str) -> Callable[..., Case]:
    def make_case(device, *args: Any, **kwargs: Any) -> Case:
        return builder(name)(device, *args, **kwargs)

    make_case.__name__ = make_case.__qualname__ = f"make_case[{name}]"
    make_case.__doc__ = f"Build the {name!r} case (imports jitlab.kernels.{_BUILDERS[name][0]} on first call)."
    return make_case


CASES: dict[str, Callable[..., Case]] = {name: _lazy(name) for name in _BUILDERS}


def available() -> dict[str, str | None]:
    """name -> None when its module imports, else the import error (for reports and skips)."""
    out: dict[str, str | None] = {}
    for name in CASES:
        try:
            builder(name)
            out[name] = None
        except Exception as e:  # noqa: BLE001 - any import failure just marks it unavailable
            out[name] = f"{type(e).__name__}: {e}"
    return out


__all__ = ["CASES", "Case", "available", "builder"]
