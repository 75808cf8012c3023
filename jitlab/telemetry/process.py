"""Tracing in any process: set `JITLAB_TRACE`, get every jitlab launch as a span, no code needed.

    JITLAB_TRACE=full JITLAB_TRACE_FILE=trace.jsonl python my_program.py
    JITLAB_TRACE=sampled OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 python my_server.py

When `JITLAB_TRACE` is not `off`, the first `@jitcache` decoration (or `telemetry.span`) starts
one session for the process (`start`): a recorder the hot path appends to, and an exporter thread
(`telemetry.worker`) that turns records into spans and exports them in batches to
`JITLAB_TRACE_FILE` and/or the OTLP collector the standard `OTEL_EXPORTER_OTLP_*` variables name:
every `JITLAB_TRACE_FLUSH_S` seconds, whenever the recorder's buffer fills, and at exit (atexit,
SIGTERM, SIGINT: `telemetry.shutdown`). Launching threads never build or export spans.

`span("name", **attrs)` (`jitlab.telemetry.span`) puts a program's own steps around launches:
launches nest under the innermost span open on their thread; a top-level span nests under the
program's own OpenTelemetry span when one is current. Launches outside any span go under one
`jitlab.launches` span per export batch. Inside an experiment's `Run`, `span` opens a step of the
run instead. Records dropped (full buffer with the exporter behind) are counted and reported at
exit in the final line, "recorded R launch records = W written + D dropped", always R = W + D.

After `os.fork()` the child starts its own clean session (`_after_fork_in_child`): none of the parent's
records, exporter thread or held locks; the process that forks waits for an export in progress to end
(`_before_fork`) so that no exporter lock is held across the fork.

The session is a `telemetry.tracing.TraceSession`, as a `Run` is. This module imports nothing from
OpenTelemetry at import time; the session imports it when it starts. The core starts it only when
tracing is on, after checking the [trace] extra (`recorder.ensure_process_session`, through the starter
`jitlab.telemetry` registers), so a missing extra is one clear line.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from .. import record_layout as _layout
from .. import settings as _settings
from . import recorder as _rec
from . import shutdown, tracing
from .summary import KernelStats

log = logging.getLogger("jitlab.telemetry")

BATCH_SPAN = "jitlab.launches"  # parent of the launches of one export batch that ran outside any span
KEEP_FRAMES_NS = 120 * 10**9  # closed spans kept this long for launches still in flight (a compile)
FORK_WAIT_S = 30.0  # longest a fork waits for an export in progress to end
AFTER_FORK_QUIET_S = 1.0  # a forked child's exporter does nothing this long unless woken (worker.quiet_start_s)

_perf_ns = time.perf_counter_ns
_get_ident = threading.get_ident
_SESSION: "ProcessSession | None" = None
_LOCK = threading.Lock()
_OPEN_RUNS: list = []  # telemetry.Run objects inside their with-block (span() opens steps there)
_ABANDONED: list = []  # in a forked child: the parent's sessions, kept referenced, never finalized here


def start(**overrides) -> "ProcessSession | None":
    """The process session the environment asks for (`overrides`: ProcessSession arguments instead of the
    settings), started once; None when `JITLAB_TRACE` is off or tracing cannot start (said once, in a
    warning: the program goes on untraced)."""
    global _SESSION
    with _LOCK:
        if _SESSION is not None:
            return _SESSION
        s = _settings.SETTINGS
        # JITLAB_TRACE_SAMPLE is read only at `sampled`: at another level it is unused, so never an error;
        # under `jitlab run` each child process writes its own file (settings.trace_file_for_process)
        kw = dict(level=s.trace, sample_every=s.trace_sample if s.trace == "sampled" else 100,
                  capacity=s.recorder_capacity, trace_file=_settings.trace_file_for_process(),
                  flush_s=s.trace_flush_s, on_full=s.trace_on_full)
        kw.update(overrides)
        if kw["level"] == "off":
            return None
        _SESSION = ProcessSession(**kw).start()
        return _SESSION


def current() -> "ProcessSession | None":
    return _SESSION


def _export_lock():
    export = sys.modules.get("jitlab.telemetry.export")
    return getattr(export, "_CAPTURE_LOCK", None)


_FORK_HELD: list = []


def _before_fork() -> None:
    """The forking thread takes the exporter's lock, so no export is in progress across the fork (an export
    holds it; the child would inherit it held by a thread it does not have, and gRPC mid-call)."""
    lock = _export_lock()
    if lock is not None and lock.acquire(timeout=FORK_WAIT_S):
        _FORK_HELD.append(lock)


def _after_fork_in_parent() -> None:
    while _FORK_HELD:
        _FORK_HELD.pop().release()


def _after_fork_in_child() -> None:
    """A forked child gets its own clean session: the parent's sessions (their records, exporter threads,
    targets) stay the parent's; this process's locks start free; the child traces at the level of the
    innermost session that was open, to the same file and collector."""
    global _SESSION, _LOCK
    _FORK_HELD.clear()
    _LOCK = threading.Lock()
    export = sys.modules.get("jitlab.telemetry.export")
    if export is not None:
        export._CAPTURE_LOCK = threading.RLock()
    shutdown.reset_after_fork()
    _rec.reset_after_fork()
    _OPEN_RUNS.clear()
    old = tracing.abandon_all_in_child()
    _ABANDONED.extend(old)
    _SESSION = None
    parent = next((s for s in reversed(old) if s.recorder is not None), None)
    if parent is None:
        return
    try:
        start(**parent.child_session_args(), after_fork=True)
    except Exception as e:  # noqa: BLE001 - a child must not die of tracing
        log.warning("jitlab: no tracing in forked child %d: %s", os.getpid(), e)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


class _NoSpan:
    """What `span()` gives when nothing is traced: a context manager that does nothing."""

    def set(self, mapping: dict | None = None, /, **attrs: Any) -> "_NoSpan":
        return self

    def __enter__(self) -> "_NoSpan":
        return self

    def __exit__(self, et, ev, tb) -> bool:
        return False


_NO_SPAN = _NoSpan()


def span(name: str, attributes: dict | None = None, **attrs: Any):
    """A span of the program's own (a request, a decode step) around jitlab launches:

        with jitlab.telemetry.span("decode_step", batch=8) as s:
            ...launches...
            s.set(tokens=8)

    Launches on the same thread nest under it. Inside a `Run` this is a step of the run; with
    tracing off it does nothing (a shared no-op object). Keys with dots go in `attributes`."""
    a = dict(attributes or {}, **attrs)
    if _OPEN_RUNS:
        return _OPEN_RUNS[-1].step(name, a)
    _rec.ensure_process_session()
    s = _SESSION
    if s is None or s.closed:
        return _NO_SPAN
    return _UserSpan(s, name, a)


class _UserSpan:
    def __init__(self, session: "ProcessSession", name: str, attributes: dict):
        self._session, self._name, self._attributes = session, name, attributes
        self.frame = None

    def set(self, mapping: dict | None = None, /, **attrs: Any) -> "_UserSpan":
        target = self.frame.attributes if self.frame is not None else self._attributes
        target.update(mapping or {}, **attrs)
        return self

    def __enter__(self) -> "_UserSpan":
        self.frame = self._session._open(self._name, self._attributes)
        return self

    def __exit__(self, et, ev, tb) -> bool:
        self._session._pop(self.frame, et, ev)
        return False


def _program_context():
    """The program's own current OpenTelemetry context, if it uses OpenTelemetry and a span is current."""
    trace_api = sys.modules.get("opentelemetry.trace")
    if trace_api is None:
        return None
    try:
        if trace_api.get_current_span().get_span_context().is_valid:
            from opentelemetry import context

            return context.get_current()
    except Exception:  # noqa: BLE001 - the program's tracing setup is not ours to break
        return None
    return None


class ProcessSession(tracing.TraceSession):
    """One process's tracing (see the module doc): a `TraceSession` whose launches outside any span go
    under one `jitlab.launches` span per export batch, whose spans end at the export after they close,
    and which exports every `flush_s` seconds.

    Args mirror the variables: `level` (JITLAB_TRACE), `sample_every` (JITLAB_TRACE_SAMPLE),
    `capacity` (JITLAB_RECORDER_CAPACITY), `trace_file` (JITLAB_TRACE_FILE), `flush_s`
    (JITLAB_TRACE_FLUSH_S), `on_full` (JITLAB_TRACE_ON_FULL); `otlp` None: OTLP iff the OTEL_* environment
    names a collector; `exporters`: extra SpanExporters (tests); `max_pending`: full buffers the exporter
    may be behind.
    """

    def __init__(self, level: str, sample_every: int = 100, capacity: int = 2_000_000,
                 trace_file: str | os.PathLike | None = None, flush_s: float | None = 5.0,
                 exporters: Sequence = (), otlp: bool | None = None, max_pending: int = 4, on_full: str = "flush",
                 after_fork: bool = False):
        super().__init__(level, sample_every=sample_every, capacity=capacity, on_full=on_full, flush_s=flush_s,
                         max_pending=max_pending)
        if after_fork:  # started inside the at-fork hook: the exporter waits until the hooks are done
            self._worker.quiet_start_s = AFTER_FORK_QUIET_S
        self.trace_file = Path(trace_file) if trace_file else None
        self._exporters, self._otlp = list(exporters), otlp
        self.sample_every = sample_every
        self.kernel_stats = KernelStats()  # per-kernel host times (`jitlab run`'s exit table reads them)

    def child_session_args(self) -> dict:
        """A forked child's session: the same level, targets and limits; under `jitlab run` the child writes
        its own file, as its spawned children do (settings.trace_file_for_process)."""
        trace_file = self.trace_file
        if trace_file is not None and _settings.SETTINGS.run_pid is not None:
            trace_file = _settings.trace_file_for_process()
        return dict(level=self.level, sample_every=self.sample_every, capacity=self.capacity,
                    trace_file=trace_file, flush_s=self._worker.period_s, on_full=self.on_full)

    def start(self) -> "ProcessSession":
        self._begin()
        return self

    def _make_sink(self):
        from .export import SpanSink  # OpenTelemetry from here on (start() checked the extra)

        return SpanSink.standard(self.trace_file, self._exporters, self._otlp)  # unwritable file: warned, left out

    def _resource_extra(self) -> dict:
        return {"jitlab.trace.level": self.level, "jitlab.trace.sample_every": self.recorder.sample_every}

    @property
    def exported_records(self) -> int:
        return self.written

    @property
    def unexported_records(self) -> int:
        return self.nowhere

    # -- the program's threads: O(1), no OpenTelemetry --------------------------------------------
    def span(self, name: str, attributes: dict | None = None, **attrs: Any) -> _UserSpan:
        return _UserSpan(self, name, dict(attributes or {}, **attrs))

    def _open(self, name: str, attributes: dict):
        from .spans import Frame  # spans imports OpenTelemetry, already loaded by the sink

        th = _get_ident()
        stack = self._stacks.get(th)
        parent = stack[-1] if stack else None
        f = Frame(kind="span", name=name, t0=0, thread=th, parent=parent, attributes=attributes)
        if parent is None:
            f.parent_ctx = _program_context()
        return self._push(f)

    # -- the exporter thread --------------------------------------------------------------------
    def _launch_root(self, records: list):
        from .spans import Frame

        t_enter, t_exit = _layout.INDEX["t_enter"], _layout.INDEX["t_exit"]
        return Frame(kind="batch", name=BATCH_SPAN, t0=min(r[t_enter] for r in records),
                     t1=max(max(r[t_exit], r[t_enter]) for r in records), thread=-1)  # -1: no thread adopts it

    def _after_launches(self, root) -> None:
        if root.span is not None:
            self._builder.end_frame(root)
        horizon = _perf_ns() - KEEP_FRAMES_NS
        with self._lock:
            self._frames = [f for f in self._frames if f.t1 is None or f.t1 > horizon]

    def _final_frames(self) -> list:
        return []  # closed (and at the end, still open) spans go through _closed_frames

    def _always_say(self) -> bool:
        return True  # a traced program ends with the one line that accounts for its records

    def _saw_records(self, records: list) -> None:
        self.kernel_stats.add(records, self.recorder.string)

    def _nowhere_is_expected(self) -> bool:
        return self.kernel_stats.wanted  # `jitlab run` without a trace file: the exit table read them

    # -- shutdown (telemetry.shutdown calls these) --------------------------------------------------
    def final_flush(self, timeout_s: float = shutdown.FINAL_FLUSH_S) -> dict:
        """Stop recording, export everything (waiting at most `timeout_s`), close the targets and say in the
        final line what was written and what dropped. Idempotent."""
        if self.closed:
            return self.summary or {}
        counts = self._finish(timeout_s)
        rec = self.recorder
        sink = self._sink
        self.summary = {"level": self.level, "records": counts["records"], "written": counts["written"],
                        "dropped": counts["dropped"], "exported_records": self.written,
                        "unexported_records": self.nowhere, "recorder_dropped": rec.dropped if rec else 0,
                        "batches": self.batches, "trace_file": sink.file_written() if sink else None,
                        "targets": sink.summary() if sink else [], "finished": counts["finished"]}
        if self.summary["trace_file"]:
            log.info("jitlab: trace written to %s", self.summary["trace_file"])
        return self.summary

    close = final_flush
