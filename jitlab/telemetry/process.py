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
exit in one warning; so are records that had nowhere to go.

This module imports nothing from OpenTelemetry at import time; the session imports it when it
starts. The core loads this module only when tracing is on, after checking the [trace] extra
(`recorder.ensure_process_session`), so a missing extra is one clear line.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from .. import settings as _settings
from . import recorder as _rec
from . import shutdown
from .summary import KernelStats
from .worker import ExportWorker

log = logging.getLogger("jitlab.telemetry")

BATCH_SPAN = "jitlab.launches"  # parent of the launches of one export batch that ran outside any span
KEEP_FRAMES_NS = 120 * 10**9  # closed spans kept this long for launches still in flight (a compile)

_perf_ns = time.perf_counter_ns
_get_ident = threading.get_ident
_SESSION: "ProcessSession | None" = None
_LOCK = threading.Lock()
_OPEN_RUNS: list = []  # telemetry.Run objects inside their with-block (span() opens steps there)


def start() -> "ProcessSession | None":
    """The process session the environment asks for, started once; None when `JITLAB_TRACE` is off
    or tracing cannot start (said once, in a warning: the program goes on untraced)."""
    global _SESSION
    with _LOCK:
        if _SESSION is not None:
            return _SESSION
        s = _settings.SETTINGS
        if s.trace == "off":
            return None
        # JITLAB_TRACE_SAMPLE is read only at `sampled`: at another level it is unused, so never an error
        _SESSION = ProcessSession(s.trace, sample_every=s.trace_sample if s.trace == "sampled" else 100,
                                  capacity=s.recorder_capacity, trace_file=_settings.trace_file_for_process(),
                                  flush_s=s.trace_flush_s).start()
        return _SESSION


def current() -> "ProcessSession | None":
    return _SESSION


def _after_fork_in_child() -> None:
    """A forked child gets its own session (the parent's records and exporter thread stay with the parent)."""
    global _SESSION
    old, _SESSION = _SESSION, None
    if old is None:
        return
    shutdown.unregister(old)
    if _rec.ACTIVE.recorder is old.recorder:
        _rec.activate(None)
    try:
        start()
    except Exception as e:  # noqa: BLE001 - a child must not die of tracing
        log.warning("jitlab: no tracing in forked child %d: %s", os.getpid(), e)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
        self._session._close(self.frame, et, ev)
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


class ProcessSession:
    """One process's tracing: recorder, user spans, exporter thread, targets (see the module doc).

    Args mirror the variables: `level` (JITLAB_TRACE), `sample_every` (JITLAB_TRACE_SAMPLE),
    `capacity` (JITLAB_RECORDER_CAPACITY), `trace_file` (JITLAB_TRACE_FILE), `flush_s`
    (JITLAB_TRACE_FLUSH_S); `otlp` None: OTLP iff the OTEL_* environment names a collector;
    `exporters`: extra SpanExporters (tests); `max_pending`: full buffers the exporter may be behind.
    """

    def __init__(self, level: str, sample_every: int = 100, capacity: int = 2_000_000,
                 trace_file: str | os.PathLike | None = None, flush_s: float | None = 5.0,
                 exporters: Sequence = (), otlp: bool | None = None, max_pending: int = 4):
        from .export import SpanSink  # OpenTelemetry from here on (start() checked the extra)

        self.level = level
        self.recorder = _rec.Recorder(level, capacity=capacity, sample_every=sample_every, on_full=self._hand_off)
        self.trace_file = Path(trace_file) if trace_file else None
        self._sink = SpanSink.standard(self.trace_file, exporters, otlp)  # unwritable file: warned, left out
        self._worker = ExportWorker("jitlab-trace-export", self._work, flush_s, max_pending,
                                    prepare=self._ensure_builder)
        self._frames: list = []  # open spans, and closed ones for KEEP_FRAMES_NS
        self._closed_frames: list = []  # closed since the last export
        self._stacks: dict[int, list] = {}
        self._lock = threading.Lock()
        self._builder = None  # made on the exporter thread: provenance probes the GPU once
        self._collector = None
        self.exported_records = 0
        self.unexported_records = 0  # records with no target to go to
        self.batches = 0
        self.kernel_stats = KernelStats()  # per-kernel host times (`jitlab run`'s exit table reads them)
        self.closed = False
        self.summary: dict | None = None

    def start(self) -> "ProcessSession":
        _rec.activate(self.recorder)
        self._worker.start()
        shutdown.register(self)
        return self

    # -- the program's threads: O(1), no OpenTelemetry --------------------------------------------
    def _hand_off(self, chunk: list) -> None:
        self._worker.hand_off(chunk)  # Backlog: the recorder counts the chunk as dropped

    def span(self, name: str, attributes: dict | None = None, **attrs: Any) -> _UserSpan:
        return _UserSpan(self, name, dict(attributes or {}, **attrs))

    def _open(self, name: str, attributes: dict):
        from .spans import Frame, push_frame  # spans imports OpenTelemetry, already loaded by the sink

        th = _get_ident()
        stack = self._stacks.get(th)
        parent = stack[-1] if stack else None
        f = Frame(kind="span", name=name, t0=0, thread=th, parent=parent, attributes=attributes)
        if parent is None:
            f.parent_ctx = _program_context()
        return push_frame(f, self._stacks, self._frames, self._lock)

    def _close(self, f, et=None, ev=None) -> None:
        from .spans import pop_frame

        if pop_frame(f, self._stacks, et, ev):
            with self._lock:
                self._closed_frames.append(f)

    # -- the exporter thread --------------------------------------------------------------------
    def _work(self, chunks: list, tick: bool) -> None:
        records = [r for c in chunks for r in c]
        if tick:
            records += self.recorder.drain_raw()
        self.kernel_stats.add(records, self.recorder.string)
        with self._lock:
            frames = list(self._frames)
            closed, self._closed_frames = self._closed_frames, []
        if not self._sink.targets:
            self.unexported_records += len(records)
            return
        if not records and not closed:
            return
        b = self._ensure_builder()
        from .export import BATCH_SIZE
        from .spans import Frame

        if records:
            root = Frame(kind="batch", name=BATCH_SPAN, t0=min(r[5] for r in records),
                         t1=max(max(r[7], r[5]) for r in records), thread=-1)  # -1: no thread's spans adopt
            b.add_launches(records, frames, root, self._export_collected, BATCH_SIZE)
            if root.span is not None:
                b.end_frame(root)
        for f in closed:
            b.end_frame(f)
        self._export_collected()
        self.exported_records += len(records)
        self.batches += 1
        horizon = _perf_ns() - KEEP_FRAMES_NS
        with self._lock:
            self._frames = [f for f in self._frames if f.t1 is None or f.t1 > horizon]

    def _ensure_builder(self):
        if self._builder is None:
            from ..provenance import provenance
            from .spans import A_CLOCK_OFFSET, SCOPE_NAME, SpanBuilder, collecting_provider, make_resource

            prov = provenance()
            offset = self.recorder.clock_offset_ns
            resource = make_resource(prov, {A_CLOCK_OFFSET: offset, "jitlab.trace.level": self.level,
                                            "jitlab.trace.sample_every": self.recorder.sample_every})
            self._provider, self._collector = collecting_provider(resource)
            tracer = self._provider.get_tracer(SCOPE_NAME, str(prov.get("jitlab") or "unknown"))
            self._builder = SpanBuilder(tracer, offset, self.recorder.string)
        return self._builder

    def _export_collected(self) -> None:
        self._sink.export(self._collector.take())

    # -- shutdown (telemetry.shutdown calls these) --------------------------------------------------
    def nudge(self) -> None:
        self._worker.request_flush()

    def on_default_signal(self, signum: int) -> None:
        pass  # final_flush follows

    def final_flush(self, timeout_s: float = shutdown.FINAL_FLUSH_S) -> dict:
        """Stop recording, export everything (waiting at most `timeout_s`), close the targets and
        say in one warning what was dropped or had nowhere to go. Idempotent."""
        if self.closed:
            return self.summary or {}
        self.closed = True
        shutdown.unregister(self)
        if _rec.ACTIVE.recorder is self.recorder:
            _rec.activate(None)
        t_end = _perf_ns()
        with self._lock:
            for f in self._frames:
                if f.t1 is None:
                    f.t1, f.error = t_end, "not closed before tracing ended"
                    self._closed_frames.append(f)
        done = self._worker.stop(timeout_s)
        if done:
            self._sink.shutdown()
        rec = self.recorder
        left = len(rec.records) if not done else 0
        self.summary = {"level": self.level, "records": rec.recorded, "dropped": rec.dropped,
                        "exported_records": self.exported_records, "unexported_records": self.unexported_records,
                        "batches": self.batches, "trace_file": self._sink.file_written(),
                        "targets": self._sink.summary(), "finished": done}
        if rec.dropped or left:
            log.warning("jitlab: tracing dropped %d launch records (recorder capacity %d, exporter %d buffers "
                        "behind)%s", rec.dropped + left, rec.capacity, self._worker.max_pending,
                        "" if done else f"; export did not finish within {timeout_s:.0f} s at exit")
        if self.unexported_records and not self.kernel_stats.wanted:  # `jitlab run`'s exit table read them
            log.warning("jitlab: JITLAB_TRACE=%s recorded %d launches that went nowhere: set JITLAB_TRACE_FILE "
                        "or OTEL_EXPORTER_OTLP_ENDPOINT (or fix the target warned about above)", self.level,
                        self.unexported_records)
        if self.summary["trace_file"]:
            log.info("jitlab: trace written to %s", self.summary["trace_file"])
        return self.summary

    close = final_flush
