"""Generated code: the per-kernel, per-policy hit path, and the binder tests and tools use.

Like Triton's `create_function_from_signature`, we write Python source once (at decoration) with the
kernel's exact signature, so binding positional/keyword arguments and defaults costs one call. Ours
also computes jitlab's cache key inline, checking only what the policy keeps, and launches:

    def launch(_jl_grid, x_ptr, out_ptr, n, BLOCK=_jl_d_BLOCK, **_jl_options):
        ...
        _jl_key = (<one item per checked argument>, <options>, <Triton state>, <device>)

The key items are, in this order: each checked constexpr or runtime argument in parameter order, the
launch options, the Triton state `run()` reads on every launch (adapter.state_items: knobs that feed
the options, pre-run hooks), and the device. `KeyLayout` names each position for messages.

Every name the generated code uses besides the kernel's parameters (helpers, builtins, locals) carries
a prefix that no parameter starts with, so any valid parameter name works. The source is registered
in `linecache`, so tracebacks and debuggers show it; `JitCache.hit_source()` returns it and
`JITLAB_LOGS=+jitlab.hitpath` logs it.
"""

from __future__ import annotations

import builtins
import inspect
import itertools
import linecache
import logging
from dataclasses import dataclass
from typing import Any, Callable

from . import keys
from ._triton.adapter import Param, StateItem

log = logging.getLogger("jitlab.hitpath")
_P = inspect.Parameter
_SERIAL = itertools.count()
#: Builtins the generated code calls, reached through the prefix (a parameter may be named `len`).
_BUILTINS = ("int", "float", "bool", "str", "tuple", "len", "next", "callable", "type", "repr", "Exception")


@dataclass(frozen=True)
class KeyLayout:
    """What each key position means: (parameter name or '<options>'/'<device>'/state name, kind), kind
    one of constexpr, runtime, options, state, device."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class KeySpec:
    """Which parts of a call the key covers (from the policy) and the Triton state it adds."""

    params: tuple[Param, ...]
    checked_runtime: frozenset[str]
    checked_constexpr: frozenset[str]
    state: tuple[StateItem, ...] = ()
    device: Callable[[], int] | int = 0
    tensor_extra: Callable[[Any], Any] | None = None  # Adapter.tensor_extra: one more item per tensor (HIP)

    def layout(self) -> KeyLayout:
        items = [(p.name, "constexpr" if p.constexpr else "runtime") for p in self.params if self._checked(p)]
        items += [("<options>", "options")] + [(s.name, "state") for s in self.state] + [("<device>", "device")]
        return KeyLayout(tuple(items))

    def _checked(self, p: Param) -> bool:
        return p.name in (self.checked_constexpr if p.constexpr else self.checked_runtime)

    def codes(self) -> str:
        """One native_key.h code per parameter (see there)."""
        out = []
        for p in self.params:
            if not self._checked(p):
                out.append("-")
            elif p.constexpr:
                out.append("c")
            else:
                out.append({(True, True): "r", (True, False): "a", (False, True): "u", (False, False): "v"}[
                    (p.specialize, p.align)])
        return "".join(out)


def check_signature(params: tuple[Param, ...] | list[Param]) -> None:
    """Raise keys.Unsupported for signatures the generated code cannot reproduce."""
    for p in params:
        if p.kind in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD, _P.POSITIONAL_ONLY):
            raise keys.Unsupported(f"parameter kind {p.kind} of {p.name!r}")


def prefix_for(names: list[str]) -> str:
    """`_jl_`, or `_jl1_`, `_jl2_`, ... : the first prefix no parameter name starts with."""
    prefix = "_jl_"
    for i in itertools.count(1):
        if not any(n.startswith(prefix) for n in names):
            return prefix
        prefix = f"_jl{i}_"
    raise AssertionError("unreachable")


class _Writer:
    """Source text for one kernel: its prefix, signature and value tuple, written once."""

    def __init__(self, params: tuple[Param, ...] | list[Param]):
        check_signature(params)
        self.params = list(params)
        self.names = [p.name for p in self.params]
        self.P = P = prefix_for(self.names)
        self.ns: dict[str, Any] = {P + b: getattr(builtins, b) for b in _BUILTINS}
        parts, kw_only = [], False
        for p in self.params:
            if p.kind is _P.KEYWORD_ONLY and not kw_only:
                parts.append("*")
                kw_only = True
            if p.default is _P.empty:
                parts.append(p.name)
            else:
                self.ns[f"{P}d_{p.name}"] = p.default
                parts.append(f"{p.name}={P}d_{p.name}")
        self.signature = parts + [f"**{P}options"]
        self.values = "(" + _wrap([f"{n}," for n in self.names], " " * 16, sep=" ") + ")"
        self.as_dict = "{" + _wrap([f"{n!r}: {n}," for n in self.names], " " * 12, sep=" ") + "}"

    def sub(self, template: str) -> str:
        """The template with its `_jl_` names moved to this kernel's prefix (before names are inserted)."""
        return template.replace("_jl_", self.P)

    def key_items(self, spec: KeySpec, hints: dict[str, str] | None = None) -> list[str]:
        P, hints = self.P, hints or {}
        items = [(_constexpr_item(p, P) if p.constexpr else _runtime_item(p, P, hints.get(p.name)))
                 for p in spec.params if spec._checked(p)]
        return items + self.tail_items(spec)

    def tail_items(self, spec: KeySpec) -> list[str]:
        """Options, Triton state and device: the items after the arguments' (also passed to the C keyer)."""
        P = self.P
        items = [f"{P}opts({P}options) if {P}options else ()"]  # typed: keys.options_item
        for i, s in enumerate(spec.state):
            expr, ns = s.python(f"{P}s{i}_")
            self.ns.update(ns)
            items.append(expr)
        items.append(str(spec.device) if isinstance(spec.device, int) else f"{P}device()")
        self.ns[P + "device"] = spec.device
        return items

    def define(self, src: str, kind: str, name: str) -> tuple[Callable, str]:
        """exec `src` (defining `kind`) with a linecache entry, so tracebacks show the generated lines."""
        filename = f"<jitlab {kind} for {name} #{next(_SERIAL)}>"
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        exec(compile(src, filename, "exec"), self.ns)  # noqa: S102 - from the kernel's own signature
        return self.ns[kind], src


def _lines(items: list[str], indent: str) -> str:
    return "".join(f"\n{indent}{it}," for it in items)


def _runtime_item(p: Param, P: str, hint: str | None = None) -> str:
    """Inline key expression for a runtime argument. Every branch is exact; `hint` (the kind of value
    the annotation or name suggests: "int", "tensor", "float", "none", "bool") only puts that branch
    first, so the common case costs one type test. Anything else goes to keys.spec."""
    v = p.name
    if p.specialize:
        int_expr = f"(1 if {v} == 1 else {'0 if ' + v + ' & 15 else 2' if p.align else '0'})"
    else:
        int_expr = "0"
    branches = {
        "none": f"None if {v} is None",
        "int": f"{int_expr} if {v}.__class__ is {P}int and -2147483648 <= {v} <= 2147483647",
        "tensor": (f"({v}.dtype, not {v}.data_ptr() & 15)" if p.align else f"({v}.dtype, True)")
                  + f" if {v}.__class__ is {P}Tensor",
        "float": f"'fp32' if {v}.__class__ is {P}float",
        "bool": f"'u1' if {v}.__class__ is {P}bool",
    }
    # With a hint, only that branch is inlined (shorter code compiles faster at the first launch);
    # keys.spec gives the same item for every other value.
    order = ([hint] + (["none"] if hint == "tensor" else [])  # optional pointers are often None
             if hint in branches else ["none", "int", "tensor", "float", "bool"])
    alts = [branches[k] for k in order] + [f"{P}spec({v}, {p.specialize}, {p.align})"]
    return "(" + "\n                 else ".join(alts) + ")" if len(alts) > 3 else "(" + " else ".join(alts) + ")"


def _constexpr_item(p: Param, P: str) -> str:
    """A constexpr's key item, inline for int/None/bool (keys.constexpr_item is the reference)."""
    v = p.name
    return (f"({v} if {v}.__class__ is {P}int or {v} is None else ({P}bool, {v}) if {v}.__class__ is {P}bool "
            f"else {P}cx({v}))")


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


def _common_ns(w: _Writer, spec: KeySpec) -> None:
    import torch

    tensor, spec_fn = ((keys.NoInlineTensor, keys.spec_with(spec.tensor_extra)) if spec.tensor_extra
                       else (torch.Tensor, keys.spec))
    w.ns.update({w.P + "Tensor": tensor, w.P + "spec": spec_fn, w.P + "cx": keys.constexpr_item,
                 w.P + "opts": keys.options_item})


_BINDER = '''
def bind({signature}):
    return ({key}
    ), {values}
'''


def make_binder(name: str, spec: KeySpec) -> tuple[Callable[..., tuple[tuple, tuple]], KeyLayout]:
    """`bind(*args, **kwargs) -> (key, values)` with the hit path's key items (for tests and tools),
    and the key layout."""
    w = _Writer(spec.params)
    _common_ns(w, spec)
    src = w.sub(_BINDER).format(signature=", ".join(w.signature), key=_lines(w.key_items(spec), " " * 8),
                                values=w.values)
    fn, _ = w.define(src, "bind", name)
    return fn, spec.layout()


def make_packer(params: list[Param], frozen: dict[int, Any]) -> Callable[..., tuple] | None:
    """For assume_const: a function mapping the bound values to the launch values with the frozen
    slots replaced by their prepare-time values (None when nothing is frozen)."""
    if not frozen:
        return None
    ns = {f"_f{i}": v for i, v in frozen.items()}
    args = ", ".join(f"a{p.index}" for p in params)
    out = "".join(f"_f{p.index}, " if p.index in frozen else f"a{p.index}, " for p in params)
    exec(compile(f"def pack({args}):\n    return ({out})\n", "<jitlab packer>", "exec"), ns)  # noqa: S102
    return ns["pack"]


# The hit path, generated per kernel and policy so arguments are bound exactly once (a `**kwargs`
# hop costs ~1 us per 36 keywords). Slow paths get the bound values and the options, never *args.
_LAUNCH = '''
def launch(_jl_grid, {signature}):
    _jl_rec = _jl_ACTIVE.recorder
    if _jl_rec is None:
        _jl_t0 = 0
    else:  # level "full" keeps every hit without a sampling call (or a counter: see Recorder.seen)
        _jl_t0 = _jl_now() if _jl_rec.every_hit or _jl_rec.wants_hit() else 0
    _jl_table = _jl_tables.get(_jl_scope()) or _jl_table_for()
    _jl_vals = {values}
    try:
        _jl_key = {key}
        _jl_e = _jl_table.entries.get(_jl_key)
    except _jl_Exception as _jl_err:  # an argument jitlab does not key: Triton handles it, and its errors
        return _jl_fallback(_jl_table, "bind:" + _jl_type(_jl_err).__name__, _jl_grid, _jl_vals, _jl_options)
    if _jl_e is None:
        return _jl_miss(_jl_table, _jl_key, _jl_grid, _jl_vals, _jl_options)
    if _jl_fn.{used_globals} and _jl_globals_changed(_jl_fn):  # Triton raises for this: let it
        return _jl_fallback(_jl_table, "globals_changed", _jl_grid, _jl_vals, _jl_options)
    _jl_e.used = _jl_next(_jl_table.hits)  # the hit count at its last hit: the least recently used is evicted
    if _jl_e.verify and not _jl_next(_jl_e.tick) % _jl_e.verify:
        _jl_verify(_jl_table, _jl_e, _jl_grid, _jl_vals, _jl_options)
    _jl_g = _jl_e.grid or (_jl_grid({as_dict}) if _jl_callable(_jl_grid) else _jl_grid)
    _jl_s = _jl_stream(_jl_e.device)
    _jl_t1 = _jl_now() if _jl_t0 else 0
    _jl_h = _jl_hooks()  # read per launch: a profiler may attach after the entry was prepared
    if _jl_h is None:
        _jl_n = _jl_len(_jl_g)
        _jl_e.launch(_jl_g[0], _jl_g[1] if _jl_n > 1 else 1, _jl_g[2] if _jl_n > 2 else 1, _jl_s, *_jl_vals)
    else:
        _jl_hooked(_jl_e, _jl_g, _jl_s, _jl_vals, _jl_h)
    if _jl_t0:  # stamp t_exit, write a row into the recorder's hit block; nonzero: the block is full
        _jl_x = _jl_append_hit(_jl_rec.hits, _jl_e.head, _jl_t0, _jl_t1)
        if _jl_x:
            _jl_rec.record_hit(_jl_e.head, _jl_t0, _jl_t1, _jl_x)
'''


def make_launch(name: str, spec: KeySpec, namespace: dict, native_keyer: Callable[[str], Callable | None],
                hints: dict[str, str] | None = None, *, used_globals: str) -> tuple[Callable, str]:
    """The generated hit path `launch(grid, *args, **kwargs)` and its source. `namespace` supplies
    the slow paths and readers it calls (tables, table_for, fallback, miss, verify, stream, hooks,
    hooked, fn, globals_changed, ACTIVE, now), without the prefix. `native_keyer(codes)` returns the C
    keyer for these key codes, or None to compute the key inline. `hints` order the key expressions'
    branches (static_hints). `used_globals`: the kernel attribute holding the globals it read (the adapter's)."""
    w = _Writer(spec.params)
    _common_ns(w, spec)
    keyer = native_keyer(spec.codes()) if len(spec.checked_runtime) >= 6 and not spec.tensor_extra else None
    if keyer is not None:  # the same items, computed in C (native_key.h): keyer(*tail items, values)
        w.ns[w.P + "keyer"] = keyer
        key = f"{w.P}keyer(" + _lines(w.tail_items(spec) + [w.P + "vals"], " " * 12) + "\n        )"
    else:  # few checks: inline Python is cheaper than passing every value to C
        key = "(" + _lines(w.key_items(spec, hints), " " * 12) + "\n        )"
    w.ns.update({w.P + k: v for k, v in namespace.items()})
    w.ns[w.P + "append_hit"] = _lazy_appender(w.ns, w.P + "append_hit")
    src = w.sub(_LAUNCH).format(signature=_wrap([a + "," for a in w.signature], " " * 11, sep=" ").rstrip(","),
                                values=w.values, key=key, as_dict=w.as_dict, used_globals=used_globals)
    fn, src = w.define(src, "launch", name)
    log.debug("hit path of %s:\n%s", name, src)
    return fn, src


def _wrap(parts: list[str], indent: str, sep: str = " ", width: int = 100) -> str:
    """Parts joined by `sep`, broken into lines of about `width` characters (long signatures stay readable)."""
    lines, line = [], ""
    for part in parts:
        if line and len(line) + len(part) > width:
            lines.append(line.rstrip())
            line = ""
        line += part + sep
    lines.append(line.rstrip())
    return ("\n" + indent).join(lines)


def _lazy_appender(ns: dict, slot: str) -> Callable:
    """The recorder's hit appender, built (its C part compiled) at the first traced hit, not at
    decoration: with tracing off nothing of it is built."""

    def first_append(*a: Any) -> int:
        from .telemetry import recorder

        ns[slot] = real = recorder.hit_appender()[0]
        return real(*a)

    return first_append
