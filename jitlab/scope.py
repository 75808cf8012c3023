"""Scopes and cache locks: where prepared entries are visible, and when misses may still compile.

vLLM's reviewers asked that caches be scoped to the model (PR #16606); dejavu's lock was
process-global. Here every entry lives in the scope that was current when it was prepared, so
one process can serve two models with different head counts through the same kernel, each
with relaxed keys that are only valid for its own model.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from typing import Iterator


class CacheLock:
    """Static mode's switch: after `lock()`, a miss raises `jitlab.LockedMiss` instead of compiling.
    A plain state flag (reads are atomic under the GIL; it is only read on misses)."""

    def __init__(self, name: str = "lock"):
        self.name = name
        self.is_locked = False

    def lock(self) -> None:
        self.is_locked = True

    def unlock(self) -> None:
        self.is_locked = False

    def __repr__(self) -> str:
        return f"CacheLock({self.name!r}, locked={self.is_locked})"


class Scope:
    """A named cache scope. Entries prepared while it is current are only visible while it is current.

    `scope.cache_lock` locks every jitcache kernel inside this scope (static or not)."""

    def __init__(self, name: str):
        self.name = name
        self.cache_lock = CacheLock(f"scope:{name}")
        self._kernels: "weakref.WeakSet" = weakref.WeakSet()
        # Held while a kernel makes its table here (JitCache._table) and while clear() runs, so clear() is
        # linearizable with a first launch: a table made meanwhile is either dropped by it or made after it
        # (never registered after clear() took its list, and then forgotten by every later clear()).
        self.tables_lock = threading.Lock()

    def lock(self) -> None:
        self.cache_lock.lock()
        _LOCKED.add(self)  # a locked scope stays registered even with no entries and no holder

    def unlock(self) -> None:
        self.cache_lock.unlock()
        _LOCKED.discard(self)

    def clear(self) -> None:
        """Drop every entry (and counters) prepared in this scope and unlock it. Once nothing refers to
        a cleared scope, it leaves the registry (which holds scopes weakly): per-request scope names
        do not accumulate."""
        with self.tables_lock:
            kernels = list(self._kernels)
            self._kernels.clear()
            for k in kernels:
                k._drop_scope(self)
        self.unlock()

    def __repr__(self) -> str:
        return f"Scope({self.name!r})"


GLOBAL = Scope("global")
_CURRENT: contextvars.ContextVar[Scope] = contextvars.ContextVar("jitlab_scope", default=GLOBAL)
# Scopes by name, held weakly: a scope lives while a kernel has entries in it (JitCache tables hold it),
# someone holds it (a `with scope(...)` block, a variable) or it is locked.
_REGISTRY: "weakref.WeakValueDictionary[str, Scope]" = weakref.WeakValueDictionary({"global": GLOBAL})
_LOCKED: set[Scope] = set()
_REGISTRY_LOCK = threading.Lock()

current = _CURRENT.get  # the hot path calls this


def get_scope(name: str) -> Scope:
    if not isinstance(name, str) or not name:
        raise ValueError(f"scope name must be a non-empty str, got {name!r}")
    with _REGISTRY_LOCK:
        s = _REGISTRY.get(name)
        if s is None:
            s = _REGISTRY[name] = Scope(name)
        return s


@contextlib.contextmanager
def scope(name: str) -> Iterator[Scope]:
    """`with jitlab.scope("llama-8b") as s:` makes `s` current in this thread/task."""
    s = get_scope(name)
    token = _CURRENT.set(s)
    try:
        yield s
    finally:
        _CURRENT.reset(token)
