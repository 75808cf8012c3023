"""What runs inside each process of a program under `jitlab run` (from jitlab/_autorun/sitecustomize.py).

`bootstrap()`:
  1. reads JITLAB_AUTO / JITLAB_AUTO_INCLUDE / JITLAB_AUTO_EXCLUDE (jitlab.settings; `jitlab run`
     validated them already; a bad value set by hand is one line on stderr and nothing installed);
  2. installs jitlab (jitlab.auto.install) right away if Triton is already imported, else once the
     `triton` package has finished importing (a one-shot import hook: jitlab never imports Triton
     for a program that does not use it);
  3. at exit prints, on stderr, the table of this process's kernels (JITLAB_TRACE at summary or
     above) and a warning per include pattern that matched no kernel; also in multiprocessing's
     forked children, which leave through os._exit.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.util
import logging
import os
import sys
import threading

from .. import auto, settings

log = logging.getLogger(__name__)
_DONE = [False]
_LOCK = threading.Lock()


def bootstrap() -> None:
    try:
        s = settings.SETTINGS
        if s.disable or s.auto == "off":
            return
        s.auto_include, s.auto_exclude, s.trace  # noqa: B018 - read now: a bad value is said before the program runs
    except settings.SettingError as e:
        sys.stderr.write(f"jitlab run: {e}; running without jitlab\n")
        return
    if "triton" in sys.modules and not _importing("triton"):
        _install()
    else:
        sys.meta_path.insert(0, _AfterTritonImport())
    atexit.register(exit_table)  # the table (trace summary and above); include warnings always
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forked)


def _importing(name: str) -> bool:
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _install() -> None:
    try:
        auto.install_from_settings()
    except Exception as e:  # noqa: BLE001 - inside the program's own import: never break it
        sys.stderr.write(f"jitlab run: not installed: {type(e).__name__}: {e}\n")


class _AfterTritonImport(importlib.abc.MetaPathFinder):
    """Installs jitlab when the `triton` package has been executed (all of it: its __init__ imports
    triton.runtime.jit and the autotuner), then leaves sys.meta_path. A finder only: the spec and
    loader are the ones the other finders give; only the loader's exec_module is wrapped."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "triton":
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            return None
        spec = importlib.util.find_spec(fullname)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _install()

        loader.exec_module = exec_module
        return spec


def _forked() -> None:
    """A forked child prints its own table. multiprocessing's fork children end with os._exit (no
    atexit) after running its finalizers; their bootstrap clears the finalizers inherited, then runs
    the after-fork hooks: so the finalizer is registered from one of those."""
    _DONE[0] = False
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util.register_after_fork(_AFTER_FORK, lambda _: util.Finalize(None, exit_table, exitpriority=0))


class _Token:
    """An object multiprocessing's after-fork registry can refer to weakly."""


_AFTER_FORK = _Token()


def exit_table() -> None:
    """Flush this process's trace and print its kernels' table to stderr (once per process)."""
    with _LOCK:
        if _DONE[0]:
            return
        _DONE[0] = True
    try:
        text = table()
    except Exception as e:  # noqa: BLE001 - the program is ending: one line, never a traceback
        text = f"jitlab: no kernel table: {type(e).__name__}: {e}"
    if text:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def table() -> str:
    """This process's kernel table and include warnings (empty when it launched no kernel, unless it
    is the program `jitlab run` started); with tracing off, the warnings only."""
    s = settings.SETTINGS
    launched = auto.launched_kernels()
    root = s.run_pid is None or s.run_pid == os.getpid()
    if not launched and not root:
        return ""
    unmatched = [f"jitlab: warning: include pattern {p!r} matched no kernel" for p in auto.unmatched_includes()]
    if s.trace == "off":
        return "\n".join(unmatched)
    stats = None
    proc = sys.modules.get("jitlab.telemetry.process")
    session = proc.current() if proc is not None else None
    if session is not None:  # export what is left, so every record reached the stats
        session.kernel_stats.wanted = True
        session.final_flush()
        stats = session.kernel_stats
    lines = []
    left = sorted(n for n, wrapped in launched.items() if not wrapped)
    if left:
        lines.append(f"left to plain Triton by include/exclude: {', '.join(left)}")
    state = auto.installed()
    policy = state.policy if state is not None else s.auto
    from ..telemetry.summary import format_table

    title = f"jitlab: kernels of pid {os.getpid()} ({' '.join(sys.argv) or 'python'}), policy {policy}"
    return "\n".join([format_table(kernel_rows(), stats, s.trace, title), *lines, *unmatched])


def kernel_rows() -> list[dict]:
    """One row per kernel name (module.qualname), summed over its kernel objects and scopes."""
    rows: dict[str, dict] = {}
    for cache in auto.caches():
        c = auto.counters_since_fork(cache)
        name = auto.name_of(cache)
        r = rows.setdefault(name, {"kernel": name, "name": cache.name, "launches": 0, "hit": 0, "miss": 0,
                                   "fallback": 0, "reasons": {}})
        for k in ("hit", "miss", "fallback"):
            r[k] += c.get(k, 0)
        r["launches"] += c.get("hit", 0) + c.get("miss", 0) + c.get("fallback", 0) + c.get("locked_miss", 0)
        for k, v in c.items():
            if k.startswith("fallback.") and v:
                why = k[len("fallback."):]
                if why == "passthrough" and cache.passthrough_reason:
                    why = f"pass-through: {cache.passthrough_reason}"
                r["reasons"][why] = r["reasons"].get(why, 0) + v
    return [r for r in rows.values() if r["launches"]]
