"""JitCache: compile once per cache entry through Triton's normal path, then launch the stored binary.

Lifecycle of a launch `kernel[grid](*args, **kwargs)`:
  hit      -> the generated hit path (codegen.py; `hit_source()` prints it) binds the arguments,
              computes the key (the checks the policy keeps, plus the Triton state run() reads),
              finds the entry and calls its launcher directly.
  miss     -> `_miss`: under the table's lock, Triton compiles/loads (its own caches apply), an
              Entry is built with everything a hit needs, then launched.
  locked   -> static mode after lock(): `LockedMiss`, naming the key parts that differ.
  fallback -> anything jitlab does not key (odd argument types, binding errors) goes to Triton's
              own `run`, so errors are exactly Triton's; counted with a reason.
Entries live in a per-scope Table (jitlab.scope). Nothing here imports OpenTelemetry.
Counters add up: every launch is exactly one of hit, miss, fallback, locked_miss.
A table holds at most JITLAB_MAX_ENTRIES entries: a new one past it evicts the least recently used.
"""

from __future__ import annotations

import copy
import functools
import inspect
import itertools
import logging
import threading
import time
import warnings
import weakref
from typing import Any, Callable

from . import keys, record_layout as _layout, settings
from ._triton import adapter as _adapter_mod
from ._triton import autoinstall as _autoinstall
from .codegen import KeySpec, check_signature, make_binder, make_launch, make_packer, static_hints
from .errors import AssumptionViolated, LockedMiss
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
                 "frozen", "verify", "tick", "compile_ns", "head", "used")  # used: the table's hit count at its last hit

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
        self.evictions = itertools.count()
        self.prepare_failures = itertools.count()  # misses that raised (compile, grid): retried next launch
        self.serial = itertools.count()  # entry ids (evicted ones are not reused)
        self.fallbacks: dict[str, itertools.count] = {}

    def fallback(self, reason: str) -> None:
        c = self.fallbacks.get(reason)
        if c is None:
            c = self.fallbacks.setdefault(reason, itertools.count())
        next(c)

    def counters(self) -> dict[str, int]:
        out = {"hit": _count(self.hits), "miss": _count(self.misses), "prepare": _count(self.prepares),
               "locked_miss": _count(self.locked_misses), "verify": _count(self.verifications),
               "evict": _count(self.evictions), "prepare_failed": _count(self.prepare_failures),
               "entries": len(self.entries)}
        out["fallback"] = sum(_count(c) for c in self.fallbacks.values())
        out.update({f"fallback.{r}": _count(c) for r, c in self.fallbacks.items()})
        return out


class JitCache:
    """A Triton kernel behind jitlab's launch cache. Launch it like the kernel: `k[grid](...)`."""

    #: Marks jitlab's wrappers, so `jitcache(jitcache(k))` can be refused at decoration.
    _jitlab_wrapper = True

    def __init__(self, fn: Any, policy: Policy, cache_lock: CacheLock | None = None, passthrough: str | None = None):
        """`passthrough`: a reason to launch every call through plain Triton from the start (counted
        and traced as pass-through; jitlab.auto uses it for observe mode and kernels it must not wrap)."""
        self.policy = policy
        self.cache_lock = cache_lock if cache_lock is not None else (CacheLock() if policy.static else None)
        self.passthrough_reason: str | None = None
        self._top = fn  # what the user decorated (a JITFunction, or an autotune/heuristics stack); never written to
        self._tables: dict[Scope, Table] = {}
        self._tables_lock = threading.Lock()
        self._source = ""
        self.dispatcher_reason = "pass-through"
        self.fn = _adapter_mod.inner_jit_function(fn)
        self.name = getattr(self.fn or fn, "__name__", type(fn).__name__)
        self.verify_every = policy.verify or settings.SETTINGS.verify
        # read at decoration, so a bad value raises here, not after a compile
        self.max_entries, self.max_scopes = settings.SETTINGS.max_entries, settings.SETTINGS.max_scopes
        self._launch = self._passthrough  # until setup() succeeds
        if passthrough is not None:
            self.passthrough_reason = passthrough
            return
        self._setup()

    # -- construction ----------------------------------------------------------------------
    def _setup(self) -> None:
        if self.fn is None:
            self._disable("interpreted kernel (TRITON_INTERPRET=1)" if _adapter_mod.is_interpreted(self._top)
                          else f"{type(self._top).__name__} wraps no triton.JITFunction")
            return
        params = _adapter_mod.params_of(self.fn)
        self._params = params
        self._names = [p.name for p in params]
        ad, reason = _adapter_mod.get_adapter()
        if ad is not None and ad.opt_in_reason and not settings.SETTINGS.hip:  # HIP: checked offline only
            ad, reason = None, ad.opt_in_reason
        if ad is None:
            self._disable(reason)
            return
        self._ad = ad
        pol = self.policy
        constexprs = [p.name for p in params if p.constexpr]
        runtime = [p.name for p in params if not p.constexpr]
        checked_rt = set(runtime if pol.check_specialization is None else pol.check_specialization)
        try:
            check_signature(params)
        except keys.Unsupported as e:
            self._disable(f"unsupported signature: {e}")
            return
        device = ad.device_constant if ad.device_constant is not None else ad.get_device
        self._spec = KeySpec(tuple(params), frozenset(checked_rt - set(pol.assume_const)),
                             frozenset(constexprs if pol.check_keys is None else pol.check_keys),
                             ad.state_items(self.fn), device, ad.tensor_extra)
        self._layout = self._spec.layout()
        self._hooks, self._stream = ad.hooks, ad.get_stream
        self._frozen_idx = [p.index for p in params if p.name in pol.assume_const]
        # The hit path, generated here for this kernel's signature and this policy (codegen.py), so the
        # first launch pays only for compiling and loading, as in Triton. Each key item tests first the
        # type its annotation or name suggests (static_hints); every branch order is exact.
        self._hit, self._source = make_launch(self.name, self._spec, dict(
            ACTIVE=_ACTIVE, now=_now, scope=_current_scope, tables=self._tables, table_for=self._table,
            fallback=self._fallback, miss=self._miss, verify=self._verify, stream=ad.get_stream,
            hooks=ad.hooks, hooked=self._launch_hooked, fn=self.fn, globals_changed=ad.used_globals_changed),
            _native_keyer, hints=static_hints(params), used_globals=ad.used_globals_attr)
        self._entry_point = self._hit  # the dispatcher replaces it once built (_use_dispatcher)
        self._dispatch_module: Any = None  # the dispatcher's build, whose launchers it calls directly
        if self._top is not self.fn:  # autotune/heuristics above us: a copy of their stack calls our run()
            stack = _adapter_mod.restack(self._top, self)
            self._launch = functools.partial(_run_stack, stack)
        else:
            self._launch = self._hit
        self.dispatcher_reason = self._start_dispatcher()

    def _start_dispatcher(self) -> str:
        """Ask for the C++ dispatcher (built once, in the background); until it is there, and where it
        cannot be, launches take the generated Python hit path, which stays the reference."""
        if not settings.native_parts().dispatcher:
            return f"JITLAB_LAUNCHER={settings.SETTINGS.launcher}"
        if self._spec.tensor_extra is not None:  # the dispatcher keys tensors as keys.spec does (HIP differs)
            return "the backend's tensor key rule (HIP buffer ops) is keyed by the Python hit path only"
        if any(s.native() is None for s in self._spec.state):
            return "Triton state only the Python hit path reads (Triton 3.3's TRITON_DEBUG)"
        from ._triton import native

        ref = weakref.WeakMethod(self._use_dispatcher)
        mod, why = native.DISPATCH.get(on_ready=lambda m, why: (f := ref()) is not None and f(m, why))
        if mod is None and why.endswith("being built"):
            return why
        return self._use_dispatcher(mod, why)

    def _use_dispatcher(self, mod: Any, why: str = "built") -> str:
        """Put the built dispatcher module's dispatcher in front of the hit path; `mod` None: its build
        failed (`why`), which JITLAB_LAUNCHER=native warns about."""
        if mod is None:
            self.dispatcher_reason = why
            (log.warning if settings.native_parts().warn else log.debug)("jitlab: %s: %s", self.name, why)
            return why
        import torch

        from ._triton import native
        from .scope import _CURRENT

        p0 = self._params
        kw_only = [p.index for p in p0 if p.kind is inspect.Parameter.KEYWORD_ONLY]
        holder, chain = _adapter_mod.hook_location()
        d, why = native.make_dispatcher(
            mod, names=tuple(self._names), defaults=tuple(p.default for p in p0), required=inspect.Parameter.empty,
            npositional=kw_only[0] if kw_only else len(p0), codes=self._spec.codes(),
            state=tuple(s.native() for s in self._spec.state), device=self._spec.device, get_stream=self._stream,
            hook_holder=holder, hook_chain=chain, active=_ACTIVE, scope_var=_CURRENT, tables=self._tables,
            fn=self.fn, slow=self._hit, tensor_type=torch.Tensor, spec=keys.spec, constexpr_item=keys.constexpr_item)
        self.dispatcher_reason = why
        if d is None:
            (log.warning if settings.native_parts().warn else log.debug)("jitlab: %s: %s", self.name, why)
            return why
        old, self._entry_point, self._dispatch_module = self._entry_point, d, mod
        if self._launch is self._hit or self._launch is old:
            self._launch = d
        return why

    def use_dispatcher_build(self, mod: Any) -> str:
        """Launch through a dispatcher of another build of dispatch.cpp, `mod`, whose module also makes the
        launchers of entries made from now on (its dispatcher calls only its own launchers without a Python
        call): for the bench's stage stops and A/B variants (native.DISPATCH_BENCH), before the first launch.
        Returns the dispatcher's reason (as `dispatcher_reason`)."""
        if self.passthrough_reason is not None:
            return self.passthrough_reason
        return self._use_dispatcher(mod)

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
        return self._entry_point(grid, *args, **kwargs)

    def bind(self, *args: Any, **kwargs: Any) -> tuple[tuple, tuple]:
        """(cache key, launch values) of a call, as the hit path computes them (for tests and tools)."""
        bind, _ = make_binder(self.name, self._spec)
        return bind(*args, **kwargs)

    def python_hit_path(self) -> Callable[..., Any]:
        """The generated Python hit path, `f(grid, *args, **kwargs)`: what `k[grid](...)` runs without
        the native dispatcher (JITLAB_LAUNCHER=python), the reference the dispatcher is tested against."""
        if self.passthrough_reason is not None:
            raise RuntimeError(f"{self.name}: no hit path in pass-through ({self.passthrough_reason})")
        return self._hit

    def native_dispatcher(self) -> Any:
        """The native dispatcher `k[grid](...)` reaches (dispatch.cpp), or None while there is none
        (`dispatcher_reason` says why): for the bench's per-part timing (jitlab.bench.launch_parts)."""
        if self.passthrough_reason is not None:
            return None
        return self._entry_point if self._entry_point is not self._hit else None

    def hit_source(self) -> str:
        """The generated hit path of this kernel and policy (empty in pass-through)."""
        return self._source

    def warmup(self, *args: Any, grid: Any, **kwargs: Any) -> Any:
        return self._top.warmup(*args, grid=grid, **kwargs)

    # -- slow paths ---------------------------------------------------------------------------------
    def _table(self) -> Table:
        scope = _current_scope()
        with scope.tables_lock, self._tables_lock:  # in this order, as Scope.clear() takes them
            table = self._tables.get(scope)
            if table is None:
                table = self._tables[scope] = Table(scope)
                scope._kernels.add(self)
                if len(self._tables) == self.max_scopes + 1:
                    _warn_once(f"jitlab: {self.name} has cache entries in more than {self.max_scopes} scopes "
                               f"(JITLAB_MAX_SCOPES); a scope's entries are dropped only by Scope.clear(): clear "
                               f"per-request scopes when the request ends")
        return table

    def _drop_scope(self, scope: Scope) -> None:
        with self._tables_lock:
            self._tables.pop(scope, None)

    def _kwargs(self, vals: tuple, options: dict) -> dict:
        """The bound values as Triton's keyword arguments (every parameter by name), plus the options."""
        kw = dict(zip(self._names, vals))
        kw.update(options)
        return kw

    def _passthrough(self, grid: Any, *args: Any, **kwargs: Any) -> Any:
        """Pass-through mode: what the user decorated, launched as they launch it."""
        table = self._tables.get(_current_scope()) or self._table()
        # the launcher `self._top[grid]` gave before any process-wide install (jitlab.auto patches
        # __getitem__, whose hook would lead back here)
        launch = _autoinstall.plain_launcher(self._top, grid)
        return self._through_triton(table, "passthrough", lambda: launch(*args, **kwargs))

    def _fallback(self, table: Table, reason: str, grid: Any, vals: tuple, options: dict) -> Any:
        """Launch through Triton's JITFunction.run (an autotuner above us already chose the config),
        so results and errors are exactly Triton's."""
        return self._through_triton(table, reason, lambda: self._ad.run_triton(self.fn, grid, self._kwargs(vals, options)))

    def _through_triton(self, table: Table, reason: str, launch: Callable[[], Any]) -> Any:
        """A launch by plain Triton, counted and recorded as a fallback with its reason."""
        table.fallback(reason)
        rec = _ACTIVE.recorder
        t0 = _now()
        out = launch()
        if rec is not None:
            rec.record(self.name, table.scope.name, self.policy.name, _rec.FALLBACK, -1, t0, t0, _now(), 0, reason)
        return out

    def _locked(self, table: Table) -> bool:
        return (self.cache_lock is not None and self.cache_lock.is_locked) or table.scope.cache_lock.is_locked

    def _miss(self, table: Table, key: tuple, grid: Any, vals: tuple, options: dict) -> Any:
        t0 = _now()
        outcome = _rec.MISS
        if self._ad.used_globals_changed(self.fn):
            return self._fallback(table, "globals_changed", grid, vals, options)  # Triton raises
        with table.lock:
            entry = table.entries.get(key)
            if entry is not None:  # another thread prepared it while we waited for the lock
                entry.used = next(table.hits)
                outcome = _rec.HIT
            else:
                reason = table.fallback_keys.get(key)
                if reason is not None:
                    return self._fallback(table, reason, grid, vals, options)
                if self._locked(table):
                    next(table.locked_misses)
                    rec = _ACTIVE.recorder
                    if rec is not None:
                        rec.record(self.name, table.scope.name, self.policy.name, _rec.LOCKED_MISS, -1,
                                   t0, t0, _now())
                    raise LockedMiss(self.name, table.scope.name, self._differences(table, key))
                try:
                    entry = self._prepare(table, key, grid, vals, options)
                except BaseException:
                    # Triton's own compile error, or the grid's: a miss that raised, as in Triton; nothing
                    # is kept, so the next launch of this key prepares again
                    next(table.misses)
                    next(table.prepare_failures)
                    raise
                if entry is None:
                    return self._fallback(table, table.fallback_keys[key], grid, vals, options)
                next(table.misses)
                table.entries[key] = entry
                if len(table.entries) > self.max_entries:
                    self._evict(table, key)
        g = entry.grid or (grid(dict(zip(self._names, vals))) if callable(grid) else grid)
        t1 = _now()
        self._launch_hooked(entry, g, self._stream(entry.device), vals, self._hooks())
        rec = _ACTIVE.recorder
        if rec is not None:
            rec.record(self.name, table.scope.name, self.policy.name, outcome, entry.index, t0, t1, _now(),
                       entry.compile_ns if outcome == _rec.MISS else 0, device=entry.device)
        return None

    def _prepare(self, table: Table, key: tuple, grid: Any, vals: tuple, options: dict) -> Entry | None:
        ad, device = self._ad, key[-1]
        kwargs = self._kwargs(vals, options)
        t0 = _now()
        compiled = ad.compile(self.fn, grid, (), kwargs)  # Triton's errors propagate unchanged
        compile_ns = _now() - t0
        next(table.prepares)
        why = ad.needs_triton(self.fn)
        if why is not None:  # keyed (codegen state items): launches in this state go through Triton
            table.fallback_keys[key] = why
            return None
        cached_grid = None
        if self.policy.cache_launch_grid:  # the user's grid: its error is this launch's, as in Triton (not the key's)
            cached_grid = _grid3(grid(dict(zip(self._names, vals))) if callable(grid) else grid)
        try:
            spec, full_options = ad.specialization(self.fn, device, (), kwargs)
            frozen = {i: _freeze(vals[i]) for i in self._frozen_idx}
            pack = make_packer(self._params, frozen)
            launch, how = self._native_launch(compiled, frozen, device)
            if launch is None:
                launch = ad.triton_launch(compiled, pack)
        except Exception as e:  # noqa: BLE001 - fall back to Triton for this key, never fail differently
            log.warning("jitlab: %s: cannot prepare a fast launch (%s); using Triton for this key", self.name, e)
            table.fallback_keys[key] = f"prepare:{type(e).__name__}"
            return None
        index = next(table.serial)
        log.debug("jitlab: %s: prepared entry %d in scope %s (%.1f ms)", self.name, index, table.scope.name,
                  compile_ns / 1e6)
        return Entry(index=index, key=key, compiled=compiled, launch=launch,
                     pack=pack, grid=cached_grid, device=device, spec=spec,
                     options=full_options, frozen=frozen, verify=self.verify_every, tick=itertools.count(1),
                     compile_ns=compile_ns, used=_count(table.hits),
                     head=_layout.head(self.name, table.scope.name, self.policy.name, _rec.HIT, index, device))

    def _evict(self, table: Table, new_key: tuple) -> None:
        """The table holds one entry more than JITLAB_MAX_ENTRIES (caller holds table.lock): drop the least
        recently used one but `new_key`'s, count and trace it, and warn once per kernel and scope, naming
        the key parts that keep changing (one that changes on almost every launch is the usual cause)."""
        old = min((e for k, e in table.entries.items() if k != new_key), key=lambda e: e.used)
        if _count(table.evictions) == 0:
            distinct = [len({k[i] for k in table.entries}) for i in range(len(self._layout.items))]
            worst = sorted(range(len(distinct)), key=lambda i: -distinct[i])[:3]
            parts = ", ".join(f"{self._layout.items[i][0]} ({distinct[i]} values)" for i in worst if distinct[i] > 1)
            _warn_once(f"jitlab: {self.name} has more than {self.max_entries} cache entries in scope "
                       f"{table.scope.name!r} (JITLAB_MAX_ENTRIES): the least recently used are evicted; the key "
                       f"parts that keep changing: {parts or 'none'} (a value that should be checked differently, "
                       f"e.g. do_not_specialize or assume_const, is the usual cause)")
        del table.entries[old.key]
        next(table.evictions)
        rec = _ACTIVE.recorder
        if rec is not None:
            t = _now()
            rec.record(self.name, table.scope.name, self.policy.name, _rec.EVICT, old.index, t, t, t)
        # A table whose entries shrink is a new table object (sharing every dict, counter and lock): the
        # native dispatcher's last hit is only reused while its table is the scope's table (dispatch.cpp)
        with self._tables_lock:
            now = self._tables.get(table.scope)  # (`table` may be an earlier copy: compare what they share)
            if now is not None and now.entries is table.entries:
                self._tables[table.scope] = copy.copy(now)

    def _native_launch(self, compiled: Any, frozen: dict, device: int) -> tuple[Callable | None, str]:
        """jitlab's C launcher for this entry when settings allow and the kernel qualifies, else
        (None, why): Triton's own launcher is then used (never an error)."""
        parts = settings.native_parts()
        if not parts.c_code:
            return None, "JITLAB_LAUNCHER=triton"
        from ._triton import native

        # The dispatcher launches its own module's launchers without a Python call: use that module once built.
        module = self._dispatch_module if self._entry_point is not self._hit else None
        launch, how = native.make_launch(compiled, frozen, device=device, module=module)
        if launch is None:
            (log.warning if parts.warn else log.debug)("jitlab: %s: Triton's launcher: %s", self.name, how)
        return launch, how

    def _launch_hooked(self, entry: Entry, g: tuple, stream: int, vals: tuple, hooks: Any) -> None:
        """Launch with Triton's launcher and hooks (profilers see the same metadata Triton gives them)."""
        if hooks is None:
            g = _grid3(g)
            entry.launch(g[0], g[1], g[2], stream, *vals)
            return
        if entry.pack is not None:
            vals = entry.pack(*vals)
        self._ad.launch_hooked(entry.compiled, g, stream, vals, hooks)

    # -- verification and messages -------------------------------------------------------------------
    def _verify(self, table: Table, entry: Entry, grid: Any, vals: tuple, options: dict) -> None:
        """Re-derive Triton's full key for this launch and compare it with the entry's (verify=N)."""
        next(table.verifications)
        spec, full_options = self._ad.specialization(self.fn, entry.device, (), self._kwargs(vals, options))
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
        if full_options != entry.options:
            raise AssumptionViolated(self.name, "<launch options>", "options", f"{entry.options} -> {full_options}")
        changed = self._ad.used_globals_changed(self.fn)
        if changed:
            raise AssumptionViolated(self.name, changed, "unchanged globals", "a global the kernel reads changed")
        if entry.grid is not None:
            now = _grid3(grid(dict(zip(self._names, vals))) if callable(grid) else grid)
            if now != entry.grid:
                raise AssumptionViolated(self.name, "<grid>", "cache_launch_grid",
                                         f"prepared with grid {entry.grid}, now {now}")

    def _differences(self, table: Table, key: tuple) -> list[str]:
        """Key parts of `key` that differ from the nearest cached entry, for LockedMiss."""
        if not table.entries:
            return []
        layout = self._layout.items
        nearest = min(table.entries, key=lambda k: sum(a != b for a, b in zip(k, key)))
        return [f"{name}: cached {keys.describe(a, kind)}, got {keys.describe(b, kind)}"
                for (name, kind), a, b in zip(layout, nearest, key) if a != b]

    # -- introspection ------------------------------------------------------------------------------------
    def counters(self, scope: Scope | str | None = None) -> dict[str, int]:
        """Counters of this kernel in `scope` (default: the current scope), as a plain dict."""
        from .scope import get_scope

        s = _current_scope() if scope is None else (get_scope(scope) if isinstance(scope, str) else scope)
        table = self._tables.get(s)
        return table.counters() if table is not None else Table(s).counters()

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


def _run_stack(stack: Any, grid: Any, *args: Any, **kwargs: Any) -> Any:
    """A launch through our copy of the user's autotune/heuristics stack (its innermost `.fn` is us)."""
    return stack.run(*args, grid=grid, warmup=False, **kwargs)


def _grid3(g: Any) -> tuple[int, int, int]:
    g = tuple(g)
    return (g[0], g[1] if len(g) > 1 else 1, g[2] if len(g) > 2 else 1)


def _native_keyer(codes: str) -> Callable | None:
    """The C keyer for these key codes, or None (JITLAB_LAUNCHER=triton: no jitlab C code at all)."""
    if not settings.native_parts().c_code:
        return None
    import torch

    from ._triton import native

    return native.make_keyer(codes, torch.Tensor, keys.spec, keys.constexpr_item)[0]


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



