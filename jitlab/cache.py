"""JitCache: compile once per cache entry through Triton's normal path, then launch the stored binary.

Lifecycle of a launch `kernel[grid](*args, **kwargs)`:
  hit      -> generated `bind` computes the key (only the checks the policy keeps) and the
              launch values; the entry's launcher is called directly. `_launch` below, one screen.
  miss     -> `_miss`: under the table's lock, Triton compiles/loads (its own caches apply), an
              Entry is built with everything a hit needs, then launched.
  locked   -> static mode after lock(): `LockedMiss`, naming the key parts that differ.
  fallback -> anything jitlab does not key (odd argument types, binding errors) goes to Triton's
              own `run`, so errors are exactly Triton's; counted with a reason.
Entries live in a per-scope Table (jitlab.scope). Nothing here imports OpenTelemetry.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
import warnings
from typing import Any, Callable

from . import keys, settings
from ._triton import adapter as _adapter_mod
from .errors import AssumptionViolated, LockedMiss
from .guard import check_signature, key_layout, make_binder, make_launch, make_packer, static_hints
from .policy import Policy
from .scope import CacheLock, Scope
from .scope import current as _current_scope
from .telemetry import recorder as _rec

log = logging.getLogger(__name__)
_now = time.perf_counter_ns
_ACTIVE = _rec.ACTIVE
_WARNED: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _count(c: itertools.count) -> int:
    """itertools.count's current value, without advancing it: its repr is "count(N)" (pickle
    support, `__reduce__`, is deprecated since Python 3.12 and removed in 3.14)."""
    return int(repr(c)[6:-1])


class Entry:
    """One prepared launch: a compiled binary on one device plus what a hit needs. No user tensors."""

    __slots__ = ("index", "key", "compiled", "launch", "pack", "grid", "device", "spec", "options",
                 "frozen", "verify", "tick", "compile_ns", "head")

    def __init__(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)


class Table:
    """Entries and counters of one kernel in one scope."""

    def __init__(self, scope: Scope):
        self.scope = scope
        self.entries: dict[tuple, Entry] = {}
        self.fallback_keys: dict[tuple, str] = {}
        self.lock = threading.RLock()
        self.hits = itertools.count()
        self.misses = itertools.count()
        self.prepares = itertools.count()
        self.locked_misses = itertools.count()
        self.verifications = itertools.count()
        self.fallbacks: dict[str, itertools.count] = {}

    def fallback(self, reason: str) -> None:
        c = self.fallbacks.get(reason)
        if c is None:
            c = self.fallbacks.setdefault(reason, itertools.count())
        next(c)

    def counters(self) -> dict[str, int]:
        out = {"hit": _count(self.hits), "miss": _count(self.misses), "prepare": _count(self.prepares),
               "locked_miss": _count(self.locked_misses), "verify": _count(self.verifications),
               "entries": len(self.entries)}
        out["fallback"] = sum(_count(c) for c in self.fallbacks.values())
        out.update({f"fallback.{r}": _count(c) for r, c in self.fallbacks.items()})
        return out


class JitCache:
    """A Triton kernel behind jitlab's launch cache. Launch it like the kernel: `k[grid](...)`."""

    def __init__(self, fn: Any, policy: Policy, cache_lock: CacheLock | None = None):
        self.policy = policy
        self.cache_lock = cache_lock if cache_lock is not None else (CacheLock() if policy.static else None)
        self.passthrough_reason: str | None = None
        self._top = fn  # what the user decorated (a JITFunction, or an autotune/heuristics stack)
        self._tables: dict[Scope, Table] = {}
        self._tables_lock = threading.Lock()
        self.fn = _adapter_mod.inner_jit_function(fn)
        self.name = getattr(self.fn or fn, "__name__", type(fn).__name__)
        self.verify_every = policy.verify or settings.SETTINGS.verify
        self._launch = self._passthrough  # until setup() succeeds
        self._setup()

    # -- construction ----------------------------------------------------------------------
    def _setup(self) -> None:
        if self.fn is None:
            self._disable("interpreted kernel (TRITON_INTERPRET=1)" if _adapter_mod.is_interpreted(self._top)
                          else f"{type(self._top).__name__} wraps no triton.JITFunction")
            return
        params = _adapter_mod.params_of(self.fn)
        constexprs = [p.name for p in params if p.constexpr]
        runtime = [p.name for p in params if not p.constexpr]
        self.policy.validate(self.name, constexprs, runtime)  # bad input raises even when passing through
        self._params = params
        ad, reason = _adapter_mod.get_adapter()
        if ad is None:
            self._disable(reason)
            return
        self._ad = ad
        pol = self.policy
        checked_cx = set(constexprs if pol.check_keys is None else pol.check_keys)
        checked_rt = set(runtime if pol.check_specialization is None else pol.check_specialization)
        checked_rt -= set(pol.assume_const)
        try:
            check_signature(params)
        except keys.Unsupported as e:
            self._disable(f"unsupported signature: {e}")
            return
        device = ad.device_constant if ad.device_constant is not None else ad.get_device
        self._checked = (checked_rt, checked_cx, device)
        self._layout = key_layout(params, checked_rt, checked_cx)
        self._hooks, self._stream = ad.hooks, ad.get_stream
        self._frozen_idx = [p.index for p in params if p.name in pol.assume_const]
        # The hit path, generated here for this kernel's signature and this policy (guard.py), so the
        # first launch pays only for compiling and loading, as in Triton. Each key item tests first the
        # type its annotation or name suggests (static_hints); every branch order is exact.
        self._hit = make_launch(self.name, params, checked_rt, checked_cx, device, dict(
            _ACTIVE=_ACTIVE, _now=_now, _scope=_current_scope, _tables=self._tables, _table=self._table,
            _fallback=self._fallback, _miss=self._miss, _verify=self._verify, _stream=ad.get_stream,
            _hooks=ad.hooks, _hooked=self._launch_hooked, _name=self.name, _policy=pol.name),
            hints=static_hints(params))
        if self._top is not self.fn:  # autotune/heuristics above us: they call our run() per launch
            parent = self._top
            while parent.fn is not self.fn:
                parent = parent.fn
            parent.fn = self
            self._launch = self._via_top
        else:
            self._launch = self._hit

    def _disable(self, reason: str) -> None:
        self.passthrough_reason = reason
        self._launch = self._passthrough
        _warn_once(f"jitlab: kernels run through plain Triton (pass-through): {reason}")

    # -- the launch surface -------------------------------------------------------------------
    def __getitem__(self, grid: Any) -> Callable[..., Any]:
        return functools.partial(self._launch, grid)

    def run(self, *args: Any, grid: Any, warmup: bool = False, **kwargs: Any) -> Any:
        """Triton's KernelInterface.run, so autotune/heuristics stacked above us can call it."""
        if warmup or self.passthrough_reason is not None:
            return self.fn.run(*args, grid=grid, warmup=warmup, **kwargs)
        return self._hit(grid, *args, **kwargs)

    def bind(self, *args: Any, **kwargs: Any) -> tuple[tuple, tuple]:
        """(cache key, launch values) of a call, as the hit path computes them (for tests and tools)."""
        bind, _ = make_binder(self.name, self._params, *self._checked)
        return bind(*args, **kwargs)

    def _param_dict(self, args: tuple, kwargs: dict) -> dict:
        """Parameter name -> value with defaults applied (what a callable grid receives from Triton)."""
        names = {p.name for p in self._params}
        bound = self.fn.signature.bind(*args, **{k: v for k, v in kwargs.items() if k in names})
        bound.apply_defaults()
        return dict(bound.arguments)

    def warmup(self, *args: Any, grid: Any, **kwargs: Any) -> Any:
        return self._top.warmup(*args, grid=grid, **kwargs)

    def _via_top(self, grid: Any, *args: Any, **kwargs: Any) -> Any:
        return self._top.run(*args, grid=grid, warmup=False, **kwargs)

    # -- slow paths ---------------------------------------------------------------------------------
    def _table(self) -> Table:
        scope = _current_scope()
        with self._tables_lock:
            table = self._tables.get(scope)
            if table is None:
                table = self._tables[scope] = Table(scope)
                scope._kernels.add(self)
        return table

    def _drop_scope(self, scope: Scope) -> None:
        with self._tables_lock:
            self._tables.pop(scope, None)

    def _passthrough(self, grid: Any, *args: Any, **kwargs: Any) -> Any:
        table = self._tables.get(_current_scope()) or self._table()
        return self._fallback(table, "passthrough", grid, args, kwargs)

    def _fallback(self, table: Table, reason: str, grid: Any, args: tuple, kwargs: dict) -> Any:
        """Launch through plain Triton. In pass-through mode that is what the user decorated; on the
        fast path's behalf it is the JITFunction (an autotuner above us already chose the config)."""
        table.fallback(reason)
        rec = _ACTIVE.recorder
        t0 = _now()
        if self.passthrough_reason is not None:
            out = self._top[grid](*args, **kwargs)
        else:
            out = self.fn.run(*args, grid=grid, warmup=False, **kwargs)
        if rec is not None:
            t1 = _now()
            rec.record(self.name, table.scope.name, self.policy.name, _rec.FALLBACK, -1, t0, t0, t1, 0,
                       reason)
        return out

    def _locked(self, table: Table) -> bool:
        return (self.cache_lock is not None and self.cache_lock.is_locked) or table.scope.cache_lock.is_locked

    def _miss(self, table: Table, key: tuple, vals: tuple, grid: Any, args: tuple, kwargs: dict) -> Any:
        t0 = _now()
        with table.lock:
            entry = table.entries.get(key)
            if entry is None:
                if key in table.fallback_keys:
                    return self._fallback(table, table.fallback_keys[key], grid, args, kwargs)
                if self._locked(table):
                    next(table.locked_misses)
                    rec = _ACTIVE.recorder
                    if rec is not None:
                        rec.record(self.name, table.scope.name, self.policy.name, _rec.LOCKED_MISS, -1,
                                   t0, t0, _now())
                    raise LockedMiss(self.name, table.scope.name, self._differences(table, key))
                next(table.misses)
                entry = self._prepare(table, key, vals, grid, args, kwargs)
                if entry is None:
                    return self._fallback(table, table.fallback_keys[key], grid, args, kwargs)
                table.entries[key] = entry
        g = entry.grid or (grid(self._param_dict(args, kwargs)) if callable(grid) else grid)
        t1 = _now()
        self._launch_hooked(entry, g, self._stream(entry.device), vals, self._hooks())
        rec = _ACTIVE.recorder
        if rec is not None:
            rec.record(self.name, table.scope.name, self.policy.name, _rec.MISS, entry.index, t0, t1, _now(),
                       entry.compile_ns)
        return None

    def _prepare(self, table: Table, key: tuple, vals: tuple, grid: Any, args: tuple,
                 kwargs: dict) -> Entry | None:
        ad, device = self._ad, key[-1]
        t0 = _now()
        compiled = ad.compile(self.fn, grid, args, kwargs)  # Triton's errors propagate unchanged
        compile_ns = _now() - t0
        next(table.prepares)
        try:
            spec, options = ad.specialization(self.fn, device, args, kwargs)
            frozen = {i: _freeze(vals[i]) for i in self._frozen_idx}
            cached_grid = None
            if self.policy.cache_launch_grid:
                g = grid(self._param_dict(args, kwargs)) if callable(grid) else grid
                cached_grid = tuple(g) + (1,) * (3 - len(g))
            pack = make_packer(self._params, frozen)
            launch, how = self._native_launch(compiled, frozen, device)
            if launch is None:
                launch = _triton_launch(compiled, pack)
        except Exception as e:  # noqa: BLE001 - fall back to Triton for this key, never fail differently
            log.warning("jitlab: %s: cannot prepare a fast launch (%s); using Triton for this key", self.name, e)
            table.fallback_keys[key] = f"prepare:{type(e).__name__}"
            return None
        log.debug("jitlab: %s: prepared entry %d in scope %s (%.1f ms)", self.name, len(table.entries),
                  table.scope.name, compile_ns / 1e6)
        return Entry(index=len(table.entries), key=key, compiled=compiled, launch=launch,
                     pack=pack, grid=cached_grid, device=device, spec=spec,
                     options=options, frozen=frozen, verify=self.verify_every, tick=itertools.count(1),
                     compile_ns=compile_ns,
                     head=(self.name, table.scope.name, self.policy.name, _rec.HIT, len(table.entries)))

    def _native_launch(self, compiled: Any, frozen: dict, device: int) -> tuple[Callable | None, str]:
        """jitlab's C launcher for this entry when settings allow and the kernel qualifies, else
        (None, why): Triton's own launcher is then used (never an error)."""
        choice = settings.SETTINGS.launcher
        if choice == "triton":
            return None, "JITLAB_LAUNCHER=triton"
        from ._triton import native

        launch, how = native.make_launch(compiled, frozen, device=device)
        if launch is None:
            (log.warning if choice == "native" else log.debug)("jitlab: %s: Triton's launcher: %s", self.name, how)
        return launch, how

    def _launch_hooked(self, entry: Entry, g: tuple, stream: int, vals: tuple, hooks: Any = True) -> None:
        """Launch with Triton's launcher and hooks (profilers see the same metadata Triton gives them)."""
        c = entry.compiled
        g0, g1, g2 = g[0], g[1] if len(g) > 1 else 1, g[2] if len(g) > 2 else 1
        hooks = self._hooks() if hooks is True else hooks
        if hooks is None:
            entry.launch(g0, g1, g2, stream, *vals)
            return
        if entry.pack is not None:
            vals = entry.pack(*vals)
        md = self._ad.launch_metadata(c, g, stream, vals)
        c.run(g0, g1, g2, stream, c.function, c.packed_metadata, md, hooks[0], hooks[1], *vals)

    # -- verification and messages -------------------------------------------------------------------
    def _verify(self, table: Table, entry: Entry, vals: tuple, args: tuple, kwargs: dict) -> None:
        next(table.verifications)
        spec, options = self._ad.specialization(self.fn, entry.device, args, kwargs)
        pol = self.policy
        for p, old, new in zip(self._params, entry.spec, spec):
            if p.index in entry.frozen and _freeze(vals[p.index]) != entry.frozen[p.index]:
                raise AssumptionViolated(self.name, p.name, "assume_const",
                                         f"prepared with {entry.frozen[p.index]!r}, now {_freeze(vals[p.index])!r}")
            if old == new:
                continue
            if p.constexpr:
                why = "check_keys (unchecked constexpr changed)"
            elif p.index in entry.frozen:
                why = "assume_const"
            elif pol.check_specialization is not None and p.name not in pol.check_specialization:
                why = "check_specialization (unchecked specialization changed)"
            else:
                why = "jitlab's key (a jitlab bug: please report)"
            raise AssumptionViolated(self.name, p.name, why, f"prepared as {_show(old)}, now {_show(new)}")
        if options != entry.options:
            raise AssumptionViolated(self.name, "<launch options>", "options", f"{entry.options} -> {options}")
        changed = self._ad.used_globals_changed(self.fn)
        if changed:
            raise AssumptionViolated(self.name, changed, "unchanged globals", "a global the kernel reads changed")

    def _differences(self, table: Table, key: tuple) -> list[str]:
        """Key parts of `key` that differ from the nearest cached entry, for LockedMiss."""
        if not table.entries:
            return []
        layout = self._layout.items
        nearest = min(table.entries, key=lambda k: sum(a != b for a, b in zip(k, key)))
        return [f"{name}: cached {keys.describe(a)}, got {keys.describe(b)}"
                for (name, _), a, b in zip(layout, nearest, key) if a != b]

    # -- introspection ------------------------------------------------------------------------------------
    def counters(self, scope: Scope | str | None = None) -> dict[str, int]:
        """Counters of this kernel in `scope` (default: the current scope), as a plain dict."""
        from .scope import get_scope

        s = _current_scope() if scope is None else (get_scope(scope) if isinstance(scope, str) else scope)
        table = self._tables.get(s)
        return table.counters() if table is not None else Table(s).counters()

    def all_counters(self) -> dict[str, dict[str, int]]:
        return {s.name: t.counters() for s, t in list(self._tables.items())}

    def entries(self, scope: Scope | None = None) -> list[Entry]:
        table = self._tables.get(scope or _current_scope())
        return list(table.entries.values()) if table else []

    def lock(self) -> None:
        if self.cache_lock is None:
            self.cache_lock = CacheLock(self.name)
        self.cache_lock.lock()

    def __repr__(self) -> str:
        mode = f"pass-through: {self.passthrough_reason}" if self.passthrough_reason else self.policy.name
        return f"<jitcache {self.name} ({mode})>"


def _freeze(v: Any) -> Any:
    """assume_const values are stored without keeping tensors alive: a tensor becomes its address."""
    if hasattr(v, "data_ptr") and not isinstance(v, (int, float)):
        return int(v.data_ptr())
    return v


def _show(spec_item: Any) -> str:
    kind, value = spec_item if isinstance(spec_item, tuple) and len(spec_item) == 2 else (spec_item, None)
    hints = {"D": "16-divisible/aligned", "": "not 16-divisible/aligned", None: ""}
    if kind == "constexpr":
        return f"constexpr {value!r}"
    return f"{kind} {hints.get(value, repr(value))}".strip()


def _triton_launch(c: Any, pack: Callable | None) -> Callable[..., None]:
    """`launch(g0, g1, g2, stream, *values)` through Triton's own launcher (no hooks: the hit path
    routes hooked launches through `_launch_hooked`). assume_const slots get their frozen values."""
    run, function, packed = c.run, c.function, c.packed_metadata
    if pack is None:
        def launch(g0: int, g1: int, g2: int, stream: int, *vals: Any) -> None:
            run(g0, g1, g2, stream, function, packed, None, None, None, *vals)
    else:
        def launch(g0: int, g1: int, g2: int, stream: int, *vals: Any) -> None:
            run(g0, g1, g2, stream, function, packed, None, None, None, *pack(*vals))
    return launch

