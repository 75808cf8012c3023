"""Process-wide install: every Triton kernel the program launches goes through jitlab, no code change.

    import jitlab
    jitlab.install()                     # safe policy: Triton's whole key
    kernel[grid](x, y, n, BLOCK=128)     # any @triton.jit / autotune / heuristics kernel: a JitCache now
    jitlab.uninstall()                   # Triton exactly as it was

`install()` patches Triton's `kernel[grid]` (jitlab._triton.autoinstall, the one place): the first
launch of a kernel object makes a `JitCache` for it, under a lock; later launches reuse it. The cache
lives in the kernel object's own `__dict__` (a private name), so it goes when the kernel goes: a
WeakKeyDictionary cannot hold it, because the cache holds the kernel and would keep its key alive.
`uninstall()` takes the caches off the kernels again and puts Triton's own `__getitem__` back.

Which kernels, and how:
- a kernel whose module.qualname fails `include` / matches `exclude` (fnmatch patterns) is left to
  plain Triton, uncounted;
- a kernel already under jitcache (decorator, vLLM plugin) is never reached here: a JitCache is not a
  Triton kernel, and a stack with one inside is left as it is;
- a kernel class outside Triton that defines its own launch path (its own `run`, say) is launched by
  that class, through a pass-through JitCache: counted and traced with the reason, one log line per
  class (jitlab never guesses what such a class would launch);
- `policy="observe"`: every kernel wrapped but launched by plain Triton, counted and traced like the
  others: the stock side of a comparison, measured by the same recorder;
- a policy from a file that does not fit a kernel's parameters: that kernel passes through, with
  the reason;
- under TRITON_INTERPRET=1 the caches pass through (JitCache does: one warning); with
  JITLAB_DISABLE=1 `install()` installs nothing.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from . import settings
from .policy import SAFE, Policy

log = logging.getLogger(__name__)


def _triton_patch() -> Any:
    """jitlab._triton.autoinstall, imported on first use: `import jitlab` loads nothing of jitlab._triton
    (the notebooks import jitlab.telemetry, and with it jitlab, on machines without Triton's GPU code)."""
    from ._triton import autoinstall

    return autoinstall

#: The policy name that wraps every kernel but launches it by plain Triton (counted and traced).
OBSERVE = "observe"
#: Where a kernel object keeps the JitCache made for it (in its own __dict__: see the module doc).
ATTR = "_jitlab_auto_cache"


@dataclass(frozen=True)
class Installed:
    policy: str  # "safe", "observe" or "file.toml:name", as given
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    resolved: Policy | None  # None for observe


_STATE: Installed | None = None
_LOCK = threading.Lock()  # install/uninstall, and the first launch of each kernel
_CACHES: "weakref.WeakSet" = weakref.WeakSet()  # every JitCache made here (for the exit summary)
_NAMES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # JitCache -> module.qualname of its kernel
_SEEN: dict[str, bool] = {}  # module.qualname of kernels launched since the first install -> ever wrapped
_WARNED_CLASSES: set[str] = set()
_FORK_BASE: dict[int, dict[str, int]] = {}  # counters a forked child inherited, by id(cache)


def install(policy: str | Policy = "safe", include: Iterable[str] | str | None = None,
            exclude: Iterable[str] | str | None = None) -> Installed | None:
    """Put jitlab under every Triton kernel launched with `kernel[grid](...)` from now on.

    policy: "safe" (Triton's whole key), "observe" (wrapped, counted and traced, launched by plain
    Triton) or "path.toml:name" / a Policy. include / exclude: shell patterns on the kernel's
    `module.qualname`. Returns what is installed; None with JITLAB_DISABLE=1 or a Triton whose
    launch surface this does not know (one warning). Bad input raises ValueError, installing nothing.
    Installing again with other arguments starts afresh: the previous install's caches are dropped."""
    global _STATE
    if settings.SETTINGS.disable:  # the kill switch, before anything else
        log.info("jitlab: JITLAB_DISABLE=1: install() installs nothing")
        return None
    inc, exc = _pattern_list(include, "include"), _pattern_list(exclude, "exclude")
    if isinstance(policy, str) and policy.strip().lower() == OBSERVE:
        name, resolved = OBSERVE, None
    else:
        try:
            resolved = Policy.named(policy)  # ValueError: one line naming the policy and what is valid
        except OSError as e:
            raise ValueError(f"policy {policy!r}: cannot read {e.filename}: {e.strerror}") from None
        name = policy if isinstance(policy, str) else resolved.name
    with _LOCK:
        why = _triton_patch().patch(_launcher)
        if why is not None:
            import warnings

            warnings.warn(f"jitlab: install() leaves Triton as it is: {why}", RuntimeWarning, stacklevel=2)
            return None
        new = Installed(name, inc, exc, resolved)
        if new == _STATE:
            return _STATE  # the same install again: its caches stay
        _forget_kernels()
        _STATE = new
    log.info("jitlab: installed under every Triton kernel (policy %s%s%s)", name,
             f", include {list(inc)}" if inc else "", f", exclude {list(exc)}" if exc else "")
    return _STATE


def uninstall() -> bool:
    """Give Triton back its own `kernel[grid]` (the identical function) and take the caches install()
    put on kernels off them again. False if nothing was installed."""
    global _STATE
    with _LOCK:
        _STATE = None
        _forget_kernels()
        return _triton_patch().unpatch()


def _forget_kernels() -> None:
    """Take every cache and marker this module put on a kernel off it (caller holds _LOCK)."""
    for mark in [*_CACHES, *_LEFT]:
        d = getattr(mark._top, "__dict__", None)
        if d is not None and d.get(ATTR) is mark:
            del d[ATTR]
    _LEFT.clear()


def installed() -> Installed | None:
    return _STATE


def cache_of(kernel: Any) -> Any:
    """The JitCache install() made for `kernel` (None before its first launch or when left alone)."""
    cache = getattr(kernel, "__dict__", {}).get(ATTR)
    return cache if cache is not None and cache._top is kernel and type(cache) is not _LeftAlone else None


def caches() -> list:
    """Every JitCache install() made that is still alive."""
    return list(_CACHES)


def name_of(cache: Any) -> str:
    """module.qualname of the kernel a cache made here belongs to."""
    return _NAMES.get(cache) or cache.name


def unmatched_includes() -> list[str]:
    """Include patterns that matched no kernel launched so far (the exit summary warns about them)."""
    state = _STATE
    if state is None or not state.include:
        return []
    return [p for p in state.include if not any(fnmatch.fnmatchcase(n, p) for n in _SEEN)]


def launched_kernels() -> dict[str, bool]:
    """module.qualname of every kernel launched since install -> whether jitlab wrapped it."""
    return dict(_SEEN)


def counters_since_fork(cache: Any) -> dict[str, int]:
    """`cache`'s counters summed over its scopes, less what a forked child inherited from its parent."""
    total = _total(cache)
    base = _FORK_BASE.get(id(cache))
    return {k: v - base.get(k, 0) for k, v in total.items()} if base else total


# -- the hook Triton's kernel[grid] calls while installed ---------------------------------------------
class _LeftAlone:
    """Stored on a kernel that this install leaves to plain Triton (include/exclude, a jitcache inside),
    so its later launches skip the lock and the patterns."""

    __slots__ = ("_top", "__weakref__")

    def __init__(self, kernel: Any):
        self._top = kernel


_LEFT: "weakref.WeakSet" = weakref.WeakSet()  # the markers, to take them off at uninstall
_partial = functools.partial


def _launcher(kernel: Any, grid: Any) -> Callable[..., Any]:
    """`kernel[grid]` while installed (this function is KernelInterface.__getitem__ then): every
    launch comes here, so the common case, a kernel with its cache, is two lookups and a partial."""
    try:
        cache = kernel.__dict__[ATTR]
        if cache._top is kernel and type(cache) is not _LeftAlone:
            return _partial(cache._launch, grid)  # what JitCache.__getitem__ returns
    except (KeyError, AttributeError):
        pass
    return _slow_launcher(kernel, grid)


def _slow_launcher(kernel: Any, grid: Any) -> Callable[..., Any]:
    cache = getattr(kernel, "__dict__", {}).get(ATTR)
    if cache is None or cache._top is not kernel:  # a copy.copy of a kernel carries its original's cache
        cache = _first_launch(kernel)
    if cache is None or type(cache) is _LeftAlone:
        return _triton_patch().plain_launcher(kernel, grid)
    return cache[grid]


def _first_launch(kernel: Any) -> Any:
    with _LOCK:
        d = getattr(kernel, "__dict__", None)
        cache = d.get(ATTR) if d is not None else None
        if cache is not None and cache._top is kernel:
            return cache  # another thread decided meanwhile
        state = _STATE
        if state is None or d is None:  # uninstalled meanwhile, or an object without a __dict__
            return None
        name = _triton_patch().qualified_name(kernel)
        cache = None
        if _selected(name, state) and not _has_jitcache(kernel):  # a jitcache inside: the user's cache launches
            try:
                cache = _make_cache(kernel, name, state)
            except Exception as e:  # noqa: BLE001 - jitlab may fall back, never fail where Triton would not
                log.warning("jitlab: %s left to plain Triton: cannot wrap it: %s: %s", name, type(e).__name__, e)
        if cache is None:
            _SEEN.setdefault(name, False)
            d[ATTR] = mark = _LeftAlone(kernel)
            _LEFT.add(mark)
            return mark
        d[ATTR] = cache
        _CACHES.add(cache)
        _NAMES[cache] = name
        _SEEN[name] = True
        return cache


def _make_cache(kernel: Any, name: str, state: Installed) -> Any:
    from .cache import JitCache
    from .telemetry.recorder import ensure_process_session

    ensure_process_session()  # JITLAB_TRACE not off: the process's tracing session (as at decoration)
    own = _triton_patch().own_launch_path(kernel)
    if own is not None:
        cls = type(kernel).__qualname__
        if cls not in _WARNED_CLASSES:
            _WARNED_CLASSES.add(cls)
            log.warning("jitlab: %s defines its own launch path (%s): its kernels are launched by that class, "
                        "not jitlab's cache (counted as pass-through)", cls, own)
        return JitCache(kernel, SAFE, passthrough=f"own launch path: {own}")
    if state.resolved is None:
        return JitCache(kernel, SAFE, passthrough=OBSERVE)
    pol = state.resolved
    from ._triton.adapter import kernel_parameters

    names = kernel_parameters(kernel)
    try:
        if names is None:
            raise ValueError(f"{type(kernel).__name__} is not a Triton kernel jitlab can read")
        pol.validate(name, *names)
    except ValueError as e:
        log.warning("jitlab: %s passes through: %s", name, e)
        return JitCache(kernel, pol, passthrough=f"policy {pol.name} does not fit: {e}")
    return JitCache(kernel, pol)


def _selected(name: str, state: Installed) -> bool:
    if state.include and not any(fnmatch.fnmatchcase(name, p) for p in state.include):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in state.exclude)


def _has_jitcache(kernel: Any) -> bool:
    layer = kernel
    for _ in range(64):
        if getattr(layer, "_jitlab_wrapper", False):
            return True
        layer = getattr(layer, "fn", None)
        if layer is None:
            return False
    return False


def _pattern_list(value: Iterable[str] | str | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    for p in items:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"{what}: patterns are non-empty strings (shell patterns on module.qualname), got {p!r}")
    return tuple(p.strip() for p in items)


def _total(cache: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for table in list(cache._tables.values()):
        for k, v in table.counters().items():
            out[k] = out.get(k, 0) + v
    return out


def install_from_settings() -> Installed | None:
    """install() with JITLAB_AUTO / JITLAB_AUTO_INCLUDE / JITLAB_AUTO_EXCLUDE (what `jitlab run` sets);
    None when JITLAB_AUTO is off. A bad value raises settings.SettingError before anything is patched."""
    s = settings.SETTINGS
    if s.disable or s.auto == "off":
        return None
    return install(s.auto, include=s.auto_include, exclude=s.auto_exclude)


def _after_fork_in_child() -> None:
    """A forked child counts its own launches: remember what its caches inherited. The lock is made
    anew: a thread of the parent may have held it at the fork, and that thread is not in the child."""
    global _LOCK
    _LOCK = threading.Lock()
    _FORK_BASE.clear()
    for cache in list(_CACHES):
        _FORK_BASE[id(cache)] = _total(cache)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
