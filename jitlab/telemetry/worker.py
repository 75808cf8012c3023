"""The background exporter: launching threads hand it full record buffers; it builds and exports
spans on its own daemon thread, in batches, periodically and when told to.

A launch never waits on an exporter: `hand_off` appends to a bounded queue and returns (raising
`Backlog` when `max_pending` buffers already wait, which the recorder counts as dropped records),
so a collector that is down or slow costs the exporter thread time, not the program.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

log = logging.getLogger("jitlab.telemetry")


class Backlog(RuntimeError):
    """The exporter is `max_pending` buffers behind: this buffer is dropped (and counted)."""


class ExportWorker:
    """Calls `work(chunks, tick)` on a daemon thread: `chunks` are the buffers handed off since the
    last call; `tick` is True every `period_s` (None: never), after `request_flush()` and at `stop()`
    (the session then drains its recorder too). `work` runs on this thread only."""

    def __init__(self, name: str, work: Callable[[list, bool], None], period_s: float | None = None,
                 max_pending: int = 4, prepare: Callable[[], None] | None = None):
        self.name = name
        self._work = work
        self._prepare = prepare  # run first on the thread (early: at interpreter exit executors refuse work)
        self.period_s = period_s
        self.max_pending = max_pending
        self._pending: deque = deque()
        self._cv = threading.Condition(threading.Lock())
        self._flush = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.errors = 0
        # > 0: touch nothing but this worker's own lock until woken or this many seconds passed. A thread
        # started in a forked child's at-fork hook must not take a lock another module's later hook
        # re-initializes (concurrent.futures' would deadlock it): nothing can wake it before the hooks end.
        self.quiet_start_s = 0.0

    def start(self) -> "ExportWorker":
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def hand_off(self, chunk: list, wait: bool = False) -> None:
        """From a launching thread: queue `chunk` for export (O(1)); `Backlog` when too far behind, or,
        with `wait` (back-pressure), wait until the exporter took a buffer (`Backlog` only once it stops)."""
        with self._cv:
            while wait and len(self._pending) >= self.max_pending and not self._stopping and self.alive:
                self._cv.wait(0.1)
            if len(self._pending) >= self.max_pending or self._stopping:
                raise Backlog(f"{self.name}: {len(self._pending)} buffers waiting for export")
            self._pending.append(chunk)
            self._cv.notify_all()

    def request_flush(self) -> None:
        """Export soon. Never blocks (callable from a signal handler that interrupted `hand_off`)."""
        if self._cv.acquire(timeout=0.05):
            try:
                self._flush = True
                self._cv.notify_all()
            finally:
                self._cv.release()

    def stop(self, timeout_s: float | None = None) -> bool:
        """Export what is queued plus a final tick, then end the thread; False if it is still busy
        after `timeout_s` (its daemon thread then dies with the process)."""
        if self._cv.acquire(timeout=1.0 if timeout_s is None else min(timeout_s, 1.0)):
            try:
                self._stopping = True
                self._cv.notify_all()
            finally:
                self._cv.release()
        else:
            self._stopping = True
        if self._thread is None:
            return True
        if self._thread is threading.current_thread():
            return False
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        if self._prepare is not None and not self.quiet_start_s:
            try:
                self._prepare()
            except Exception as e:  # noqa: BLE001 - work() retries it and reports
                log.debug("jitlab: exporter preparation failed: %s", e)
        next_tick = time.monotonic() + max(self.period_s or 0, self.quiet_start_s)
        while True:
            with self._cv:
                while not (self._pending or self._flush or self._stopping):
                    wait = None if self.period_s is None else next_tick - time.monotonic()
                    if wait is not None and wait <= 0:
                        break
                    self._cv.wait(wait)
                chunks = list(self._pending)
                self._pending.clear()
                self._cv.notify_all()  # launches waiting to hand off a buffer (back-pressure)
                stopping = self._stopping
                tick = self._flush or stopping or (self.period_s is not None and time.monotonic() >= next_tick)
                self._flush = False
            if tick and self.period_s is not None:
                next_tick = time.monotonic() + self.period_s
            try:
                if chunks or tick:
                    self._work(chunks, tick)
            except Exception as e:  # noqa: BLE001 - the exporter thread must survive a bad batch
                self.errors += 1
                if self.errors == 1:
                    log.warning("jitlab: trace export failed: %s: %s", type(e).__name__, e, exc_info=True)
            if stopping:
                with self._cv:
                    if not self._pending:
                        return
