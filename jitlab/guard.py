"""Generated binders: the per-kernel, per-policy function the hit path calls.

Like Triton's `create_function_from_signature`, we generate Python source once (at decoration)
with the kernel's exact signature, so binding positional/keyword arguments and defaults costs
one call. Ours also computes jitlab's cache key inline, checking only what the policy keeps:

    def bind(out, q, ..., BLOCK=default_BLOCK, **options):
        return (<key items...>, tuple(options.items()) if options else (), device()), (out, q, ...)

The second element is every bound value in parameter order (Triton's launcher takes all of them,
constexprs included). A separate generated `as_dict` builds the dict a callable grid receives.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from . import keys
from ._triton.adapter import Param

_P = inspect.Parameter


@dataclass(frozen=True)
class KeyLayout:
    """What each key position means, for messages: [(param name or '<options>'/'<device>', kind)]."""

    items: tuple[tuple[str, str], ...]


def _signature_source(params: list[Param]) -> tuple[str, dict]:
    parts, ns = [], {}
    kw_only_started = False
    for p in params:
        if p.kind in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD, _P.POSITIONAL_ONLY):
            raise keys.Unsupported(f"parameter kind {p.kind} of {p.name!r}")
        if p.kind is _P.KEYWORD_ONLY and not kw_only_started:
            parts.append("*")
            kw_only_started = True
        if p.default is _P.empty:
            parts.append(p.name)
        else:
            ns[f"_d_{p.name}"] = p.default
            parts.append(f"{p.name}=_d_{p.name}")
    return ", ".join(parts + ["**options"]), ns


def _runtime_item(p: Param) -> str:
    """Inline key expression for a runtime argument; the common cases avoid any call."""
    v = p.name
    if p.specialize:
        int_expr = f"(1 if {v} == 1 else {'0 if ' + v + ' & 15 else 2' if p.align else '0'})"
    else:
        int_expr = "0"
    tensor_expr = f"({v}.dtype, not {v}.data_ptr() & 15)" if p.align else f"({v}.dtype, True)"
    return (
        f"(None if {v} is None else {int_expr} if {v}.__class__ is int and -2147483648 <= {v} <= 2147483647 else "
        f"{tensor_expr} if {v}.__class__ is _Tensor else "
        f"_spec({v}, {p.specialize}, {p.align}))"
    )


def _constexpr_item(p: Param) -> str:
    v = p.name
    return f"({v} if {v}.__class__ is int else _cx({v}))"


def make_binder(name: str, params: list[Param], checked_runtime: set[str], checked_constexpr: set[str],
                device: Callable[[], int] | int) -> tuple[Callable, Callable, KeyLayout]:
    """Return (bind, as_dict, layout) for this kernel and policy. `device` is the current-device
    getter, or a constant when only one device is visible."""
    import torch

    sig, ns = _signature_source(params)
    items, layout = [], []
    for p in params:
        if p.constexpr and p.name in checked_constexpr:
            items.append(_constexpr_item(p))
            layout.append((p.name, "constexpr"))
        elif not p.constexpr and p.name in checked_runtime:
            items.append(_runtime_item(p))
            layout.append((p.name, "runtime"))
    items.append("tuple(options.items()) if options else ()")
    layout.append(("<options>", "options"))
    items.append(str(device) if isinstance(device, int) else "_device()")
    layout.append(("<device>", "device"))
    values = ", ".join(p.name for p in params)
    src = (
        f"def bind({sig}):\n"
        f"    return ({', '.join(items)},), ({values}{',' if len(params) == 1 else ''})\n"
        f"def as_dict({sig}):\n"
        f"    return {{{', '.join(f'{p.name!r}: {p.name}' for p in params)}}}\n"
    )
    ns.update(_Tensor=torch.Tensor, _spec=keys.spec, _cx=keys.constexpr_item, _device=device)
    code = compile(src, f"<jitlab binder for {name}>", "exec")
    exec(code, ns)  # noqa: S102 - generated from the kernel's own signature, like Triton's binder
    return ns["bind"], ns["as_dict"], KeyLayout(tuple(layout))


def make_packer(params: list[Param], frozen: dict[int, Any]) -> Callable[..., tuple] | None:
    """For assume_const: a function mapping the bound values to the launch values with the frozen
    slots replaced by their prepare-time values (None when nothing is frozen)."""
    if not frozen:
        return None
    ns = {f"_f{i}": v for i, v in frozen.items()}
    args = ", ".join(f"a{p.index}" for p in params)
    out = ", ".join(f"_f{p.index}" if p.index in frozen else f"a{p.index}" for p in params)
    src = f"def pack({args}):\n    return ({out}{',' if len(params) == 1 else ''})\n"
    exec(compile(src, "<jitlab packer>", "exec"), ns)  # noqa: S102
    return ns["pack"]
