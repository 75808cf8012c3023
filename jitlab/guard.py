"""Generated binders: the per-kernel, per-policy function the hit path calls.

Like Triton's `create_function_from_signature`, we generate Python source once (at decoration)
with the kernel's exact signature, so binding positional/keyword arguments and defaults costs
one call. Ours also computes jitlab's cache key inline, checking only what the policy keeps:

    def bind(out, q, ..., BLOCK=default_BLOCK, **options):
        return (<key items...>, tuple(options.items()) if options else (), device()), (out, q, ...)

The second element is every bound value in parameter order (Triton's launcher takes all of them,
constexprs included).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from . import keys
from .telemetry import recorder
from ._triton.adapter import Param

_P = inspect.Parameter


@dataclass(frozen=True)
class KeyLayout:
    """What each key position means, for messages: [(param name or '<options>'/'<device>', kind)]."""

    items: tuple[tuple[str, str], ...]


def check_signature(params: list[Param]) -> None:
    """Raise keys.Unsupported for signatures the generated code cannot reproduce."""
    _signature_source(params)


def _key_items(params: list[Param], checked_runtime: set[str], checked_constexpr: set[str],
               device: Callable[[], int] | int, hints: dict[str, str] | None = None
               ) -> tuple[list[str], KeyLayout]:
    """The key's item expressions (options and device last) and what each position means: the one
    definition of the key order, shared by the hit path, the test binder and LockedMiss messages."""
    hints = hints or {}
    items, layout = [], []
    for p in params:
        if p.constexpr and p.name in checked_constexpr:
            items.append(_constexpr_item(p))
            layout.append((p.name, "constexpr"))
        elif not p.constexpr and p.name in checked_runtime:
            items.append(_runtime_item(p, hints.get(p.name)))
            layout.append((p.name, "runtime"))
    items.append("tuple(options.items()) if options else ()")
    items.append(str(device) if isinstance(device, int) else "_device()")
    layout += [("<options>", "options"), ("<device>", "device")]
    return items, KeyLayout(tuple(layout))


def key_layout(params: list[Param], checked_runtime: set[str], checked_constexpr: set[str]) -> KeyLayout:
    """What each position of the key means."""
    return _key_items(params, checked_runtime, checked_constexpr, 0)[1]


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


def _runtime_item(p: Param, hint: str | None = None) -> str:
    """Inline key expression for a runtime argument. Every branch is exact; `hint` (the kind of value
    seen at the first launch: "int", "tensor", "float", "none", "bool") only puts that branch first,
    so the common case costs one type test. Anything else goes to keys.spec."""
    v = p.name
    if p.specialize:
        int_expr = f"(1 if {v} == 1 else {'0 if ' + v + ' & 15 else 2' if p.align else '0'})"
    else:
        int_expr = "0"
    branches = {
        "none": f"None if {v} is None",
        "int": f"{int_expr} if {v}.__class__ is int and -2147483648 <= {v} <= 2147483647",
        "tensor": (f"({v}.dtype, not {v}.data_ptr() & 15)" if p.align else f"({v}.dtype, True)")
                  + f" if {v}.__class__ is _Tensor",
        "float": f"'fp32' if {v}.__class__ is float",
        "bool": f"'u1' if {v}.__class__ is bool",
    }
    # With a hint, only that branch is inlined (shorter code compiles faster at the first launch);
    # keys.spec gives the same item for every other value.
    order = ([hint] + (["none"] if hint == "tensor" else [])  # optional pointers are often None
             if hint in branches else ["none", "int", "tensor", "float", "bool"])
    return "(" + " else ".join(branches[k] for k in order) + f" else _spec({v}, {p.specialize}, {p.align}))"


def static_hints(params: list[Param]) -> dict[str, str]:
    """The likely kind of each runtime argument from its annotation or name (an ordering hint only:
    `*fp16`/`*k...`/`..._ptr` -> tensor, int annotations and `stride...`/`num_...` -> int, fp -> float)."""
    out = {}
    for p in params:
        a, n = p.annotation, p.name.lower()
        if p.constexpr:
            continue
        if a.startswith("*") or n.endswith("ptr") or n.endswith("_cache") or n in ("x", "y", "out", "output"):
            out[p.name] = "tensor"
        elif a[:1] in ("i", "u") and a[1:].isdigit() or "stride" in n or n.startswith(("num_", "n_")) or n == "n":
            out[p.name] = "int"
        elif a.startswith(("fp", "bf")) or "scale" in n or n in ("eps", "softcap", "alpha"):
            out[p.name] = "float"
    return out


def _constexpr_item(p: Param) -> str:
    """A constexpr's key item: the value, typed where == would conflate types (1 == True == 1.0);
    inline for int/None/bool/float (keys.constexpr_item is the reference)."""
    v = p.name
    return (f"({v} if {v}.__class__ is int or {v} is None else (bool, {v}) if {v}.__class__ is bool "
            f"else (float, {v}) if {v}.__class__ is float else _cx({v}))")


def make_binder(name: str, params: list[Param], checked_runtime: set[str], checked_constexpr: set[str],
                device: Callable[[], int] | int) -> tuple[Callable, KeyLayout]:
    """`bind(*args, **kwargs) -> (key, values)` with the hit path's key items (for tests and tools),
    and the key layout. `device` is the current-device getter, or a constant with one visible device."""
    import torch

    sig, ns = _signature_source(params)
    items, layout = _key_items(params, checked_runtime, checked_constexpr, device)
    values = ", ".join(p.name for p in params)
    src = f"def bind({sig}):\n    return ({', '.join(items)},), ({values}{',' if len(params) == 1 else ''})\n"
    ns.update(_Tensor=torch.Tensor, _spec=keys.spec, _cx=keys.constexpr_item, _device=device)
    exec(compile(src, f"<jitlab binder for {name}>", "exec"), ns)  # noqa: S102 - from the kernel's own signature
    return ns["bind"], layout


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


# The hit path, generated per kernel and policy so arguments are bound exactly once (a `**kwargs`
# hop costs ~1 us per 36 keywords). Names the kernel could use are avoided with the _jl_ prefix.
_LAUNCH_TEMPLATE = '''
def launch(_jl_grid, {sig}):
    _jl_rec = _ACTIVE.recorder
    if _jl_rec is None:
        _jl_t0 = 0
    else:  # level "full" keeps every hit without a sampling call (or a counter: see Recorder.seen)
        _jl_t0 = _now() if _jl_rec.every_hit or _jl_rec.wants_hit() else 0
    _jl_table = _tables.get(_scope()) or _table()
    try:
        _jl_key = {key_expr}
        _jl_e = _jl_table.entries.get(_jl_key)
    except Exception as _jl_err:  # an argument jitlab does not key: Triton handles it, and its errors
        return _fallback(_jl_table, "bind:" + type(_jl_err).__name__, _jl_grid, (), {kw})
    if _jl_e is None:
        return _miss(_jl_table, _jl_key, ({vals},), _jl_grid, (), {kw})
    if _jl_e.verify and not next(_jl_e.tick) % _jl_e.verify:
        _verify(_jl_table, _jl_e, ({vals},), (), {kw})
    _jl_g = _jl_e.grid or (_jl_grid({as_dict}) if callable(_jl_grid) else _jl_grid)
    _jl_s = _stream(_jl_e.device)
    _jl_t1 = _now() if _jl_t0 else 0
    if _hooks() is None:
        _jl_e.launch(_jl_g[0], _jl_g[1] if len(_jl_g) > 1 else 1, _jl_g[2] if len(_jl_g) > 2 else 1, _jl_s, {vals})
    else:
        _hooked(_jl_e, _jl_g, _jl_s, ({vals},))
    next(_jl_table.hits)
    if _jl_t0:  # stamp t_exit, append a compact tuple (telemetry.recorder); nonzero: the buffer is full
        _jl_x = _append_hit(_jl_rec.records, _jl_rec.capacity, _jl_e.head, _jl_t0, _jl_t1)
        if _jl_x:
            _jl_rec.record_hit(_jl_e.head, _jl_t0, _jl_t1, _jl_x)
'''


def make_launch(name: str, params: list[Param], checked_runtime: set[str], checked_constexpr: set[str],
                device: Callable[[], int] | int, namespace: dict, hints: dict[str, str] | None = None) -> Callable:
    """The generated hit path `launch(grid, *args, **kwargs)`; `namespace` supplies the slow paths
    and readers it calls (_tables, _table, _fallback, _miss, _verify, _stream, _hooks, _hooked, ...).
    `hints` (param name -> likely value kind, see static_hints) orders each key expression's branches."""
    import torch

    keyer, _ = _native_keyer(params, checked_runtime, checked_constexpr)
    sig, ns = _signature_source(params)
    items, _ = _key_items(params, checked_runtime, checked_constexpr, device, hints)
    names = [p.name for p in params]
    vals = ", ".join(names) + ("," if len(names) == 1 else "")
    if keyer is not None:  # the same items, computed in C (native_key.h)
        key_expr = f"_keyer({items[-2]}, {items[-1]}, {vals})"
    else:
        key_expr = f"({', '.join(items)},)"
    src = _LAUNCH_TEMPLATE.format(
        sig=sig, key_expr=key_expr, vals=vals,
        kw="{" + ", ".join(f"{n!r}: {n}" for n in names) + ", **options}",
        as_dict="{" + ", ".join(f"{n!r}: {n}" for n in names) + "}")
    ns.update(namespace)
    ns.update(_Tensor=torch.Tensor, _spec=keys.spec, _cx=keys.constexpr_item, _device=device, _keyer=keyer,
              _append_hit=recorder.hit_appender()[0])
    exec(compile(src, f"<jitlab launch for {name}>", "exec"), ns)  # noqa: S102
    return ns["launch"]


def key_codes(params: list[Param], checked_runtime: set[str], checked_constexpr: set[str]) -> str:
    """One native_key.h code per parameter (see there)."""
    out = []
    for p in params:
        if p.constexpr:
            out.append("c" if p.name in checked_constexpr else "-")
        elif p.name in checked_runtime:
            out.append({(True, True): "r", (True, False): "a", (False, True): "u", (False, False): "v"}[
                (p.specialize, p.align)])
        else:
            out.append("-")
    return "".join(out)


def _native_keyer(params: list[Param], checked_runtime: set[str], checked_constexpr: set[str]) -> tuple:
    from . import settings

    if settings.SETTINGS.launcher == "triton":  # JITLAB_LAUNCHER=triton: no jitlab C code at all
        return None, "JITLAB_LAUNCHER=triton"
    # Passing every value to C costs more than a few inline checks: relaxed policies stay in Python.
    if len(checked_runtime) < 6:
        return None, "few checks: inline Python is cheaper"
    from ._triton import native

    return native.make_keyer(key_codes(params, checked_runtime, checked_constexpr))
