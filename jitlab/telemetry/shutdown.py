"""Flush traces when the process ends: at interpreter exit, on SIGTERM and on SIGINT.

Sessions (`tracing.TraceSession`: a `process.ProcessSession` or a `session.Run`) register here. The handlers chain to whatever
was installed before, so a program's own handlers keep working:

* the previous handler is a Python function (Python's default SIGINT handler raises
  KeyboardInterrupt; a server's own SIGTERM handler starts its shutdown): each session is asked to
  export what it has now (without waiting), then that handler runs; if it ends the process, the
  atexit hook does the final flush.
* the previous disposition is the default (SIGTERM kills without running atexit): an open `Run`
  (an experiment) turns SIGTERM into `Terminated`, a SystemExit(143) raised where the main thread
  is, so its with-block ends and writes the trace; otherwise each session does its final flush
  (bounded by `FINAL_FLUSH_S`) and the signal is delivered again with the default disposition,
  so the process ends as it would have.
* ignored signals, handlers installed from C, and calls from a thread other than the main
  thread (only it can install handlers) are left alone: atexit still flushes.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from typing import Protocol

log = logging.getLogger("jitlab.telemetry")

FINAL_FLUSH_S = 10.0  # longest a SIGTERM/atexit flush waits for a session's exporter
SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGINT", None)) if s is not None)


class Terminated(SystemExit):
    """SIGTERM arrived during a `Run` (exit status 128 + SIGTERM, as a killed process reports)."""


class Flushable(Protocol):
    def nudge(self) -> None: ...  # export soon, never block (called from a signal handler)

    def final_flush(self, timeout_s: float) -> None: ...  # export everything and close

    def on_default_signal(self, signum: int) -> None: ...  # may raise (Run: Terminated)


_SESSIONS: list = []
_PREVIOUS: dict[int, object] = {}
_LOCK = threading.Lock()
_INSTALLED = [False]


def register(session: Flushable) -> None:
    with _LOCK:
        if session not in _SESSIONS:
            _SESSIONS.append(session)
        if not _INSTALLED[0]:
            _INSTALLED[0] = True
            atexit.register(_at_exit)
    _install_handlers()


def unregister(session: Flushable) -> None:
    with _LOCK:
        if session in _SESSIONS:
            _SESSIONS.remove(session)


def reset_after_fork() -> None:
    """In a forked child: the parent's sessions are not this process's to flush; the lock starts free
    (the handlers and the atexit hook stay installed, for the child's own sessions)."""
    global _LOCK
    _LOCK = threading.Lock()
    _SESSIONS.clear()


def _install_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal works on the main thread only; atexit still flushes
    for signum in SIGNALS:
        if signum in _PREVIOUS and signal.getsignal(signum) is _handle:
            continue
        prev = signal.getsignal(signum)
        if prev is None or prev == signal.SIG_IGN:  # installed from C, or ignored: leave it be
            continue
        try:
            signal.signal(signum, _handle)
        except (ValueError, OSError) as e:  # pragma: no cover - embedded interpreters
            log.debug("jitlab: cannot handle signal %s: %s", signum, e)
            continue
        _PREVIOUS[signum] = prev


def _handle(signum, frame) -> None:
    prev = _PREVIOUS.get(signum, signal.SIG_DFL)
    sessions = list(_SESSIONS)
    if callable(prev):
        for s in sessions:
            _quietly(s.nudge)
        prev(signum, frame)
        return
    for s in sessions:  # default disposition: a Run may unwind the main thread instead (Terminated)
        s.on_default_signal(signum)
    _at_exit()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _at_exit() -> None:
    for s in list(_SESSIONS):
        _quietly(s.final_flush, FINAL_FLUSH_S)


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - a failing flush must not stop the process from ending
        log.warning("jitlab: flushing traces at exit failed: %s: %s", type(e).__name__, e)
