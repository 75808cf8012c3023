"""Runs, trials and steps: the structure experiments give their launches, and where spans are made.

    from jitlab import telemetry
    with telemetry.Run(experiment="launch_overhead", level="full") as run:
        for policy in policies:
            with run.trial(f"policy={policy}", {"jitlab.policy": policy, "n": n}) as trial:
                ... timed launches (the jitcache records into run.recorder) ...
                trial.set(median_ns=med, p10_ns=p10, p90_ns=p90)
    print(run.summary)

Inside the with-block the launching threads touch no OpenTelemetry: trials and steps only take
`perf_counter_ns()` timestamps, and a full recorder buffer is handed to the run's exporter thread
(`jitlab.telemetry.worker`). When the run ends (normally, by an exception, by Ctrl-C, by SIGTERM,
or at interpreter exit) the run span, with its summary, and the trials and steps are exported first;
then the records are drained, spans are built with explicit times (`jitlab.telemetry.spans`) and
exported in batches (`jitlab.telemetry.export`): to the OTLP JSON-lines trace file, and to an OTLP
collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. A Ctrl-C during that export stops it at the next
batch and says how much was written. A `Run` is a `telemetry.tracing.TraceSession`, as the process
session of a plain program is.
An unwritable trace file raises `TraceTargetError` (one line: path and reason) when the run is
entered, before any work, or when the run ends if writing failed on the way; the summary names the
file only if it was written.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from ..provenance import provenance as _provenance
from . import process as _process
from . import recorder as _rec
from . import shutdown as _shutdown
from .export import BATCH_SIZE, SpanSink, TraceTargetError
from .spans import A_CLOCK_OFFSET, RUN_SPAN, Frame
from .tracing import TraceSession

log = logging.getLogger("jitlab.telemetry")

# Environment defaults come from jitlab.settings: JITLAB_TRACE (level, default "off"),
# JITLAB_TRACE_SAMPLE (N, default 100), JITLAB_TRACE_FILE, JITLAB_RECORDER_CAPACITY (2,000,000).
DEFAULT_SAMPLE_EVERY = 100
DEFAULT_TRACE_DIR = "traces"

_perf_ns = time.perf_counter_ns
_get_ident = threading.get_ident


def new_run_id() -> str:
    """UTC timestamp plus a short random suffix, e.g. `20261129T101500Z-3fa9c1`."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _settings():
    from .. import settings  # the one module that reads JITLAB_* (at import; settings.reload() re-reads)

    return settings.SETTINGS


def resolve_level(level: str | None) -> str:
    """Explicit level, else `JITLAB_TRACE` (via jitlab.settings; default "off")."""
    lv = level if level is not None else _settings().trace
    lv = (lv or "off").strip().lower()
    if lv not in _rec.LEVELS:
        raise ValueError(f"trace level must be one of {_rec.LEVELS}, got {lv!r}")
    return lv


def resolve_sample_every(sample_every: int | None) -> int:
    """Explicit N, else `JITLAB_TRACE_SAMPLE` (default 100)."""
    if sample_every is not None:
        return max(1, int(sample_every))
    return max(1, int(_settings().trace_sample or DEFAULT_SAMPLE_EVERY))


def resolve_capacity(capacity: int | None) -> int:
    """Explicit capacity, else `JITLAB_RECORDER_CAPACITY` (default 2,000,000)."""
    if capacity is not None:
        return max(1, int(capacity))
    return max(1, int(_settings().recorder_capacity))


def resolve_trace_file(trace_file, experiment: str, run_id: str) -> Path | None:
    """Explicit argument, else `JITLAB_TRACE_FILE`, else `traces/<experiment>-<run_id>.jsonl`
    ("{experiment}" and "{run_id}" in either are substituted). `trace_file=False`: no file."""
    if trace_file is False:
        return None
    if trace_file is None or trace_file is True:
        trace_file = _settings().trace_file or os.path.join(DEFAULT_TRACE_DIR, "{experiment}-{run_id}.jsonl")
    s = str(trace_file)
    if "{" in s:
        s = s.replace("{experiment}", experiment).replace("{run_id}", run_id)
    return Path(s)


class _FrameHandle:
    """A trial or step: a context manager around a frame (timestamps only while it is open)."""

    kind = "frame"

    def __init__(self, run: "Run", name: str, attributes: dict | None, parent: Frame | None):
        self._run = run
        self._name = name
        self._attributes = dict(attributes or {})
        self._parent = parent
        self.frame: Frame | None = None

    # attributes ------------------------------------------------------------------------------
    def set(self, mapping: dict | None = None, /, **attrs: Any) -> "_FrameHandle":
        """Add attributes (aggregates such as median/p10/p90), written when the span ends.
        Keys with dots go in `mapping` ({"jitlab.x": 1}); values: str/bool/int/float/sequences,
        numpy scalars welcome; None is left out."""
        target = self.frame.attributes if self.frame is not None else self._attributes
        if mapping:
            target.update(mapping)
        target.update(attrs)
        return self

    @property
    def name(self) -> str:
        return self._name

    @property
    def attributes(self) -> dict:
        return self.frame.attributes if self.frame is not None else self._attributes

    @property
    def duration_ns(self) -> int | None:
        f = self.frame
        if f is None:
            return None
        return (f.t1 if f.t1 is not None else _perf_ns()) - f.t0

    # lifecycle -------------------------------------------------------------------------------
    def __enter__(self):
        self.frame = self._run._open_frame(self.kind, self._name, self._attributes, self._parent)
        return self

    def __exit__(self, et, ev, tb):
        self._run._close_frame(self.frame, et, ev)
        return False

    start = __enter__

    def end(self) -> None:
        self.__exit__(None, None, None)


class Step(_FrameHandle):
    """A span under a trial (or the run), e.g. one model step in the end-to-end experiment."""

    kind = "step"


class Trial(_FrameHandle):
    """One measured configuration; its span carries the trial's attributes and aggregates."""

    kind = "trial"

    def step(self, name: str, attributes: dict | None = None) -> Step:
        """A step span under this trial (use as a context manager)."""
        return Step(self._run, name, attributes, self.frame)


class Run(TraceSession):
    """One experiment run: recorder, root span, trials and steps, export at the end.

    Args:
      experiment: experiment name (`jitlab.experiment`; part of the default trace file name).
      level: "off" | "summary" | "sampled" | "full"; None reads `JITLAB_TRACE` (default "off").
        off: no recorder (launches untraced), but run/trial/step spans are still written;
        summary: no hit records, only misses/locked misses/fallbacks/pass-throughs + trial aggregates;
        sampled: every `sample_every`-th hit plus all non-hits; full: every launch.
      sample_every: N for "sampled"; None reads `JITLAB_TRACE_SAMPLE` (default 100).
      trace_file: OTLP JSON-lines path; None reads `JITLAB_TRACE_FILE`, else
        `traces/<experiment>-<run_id>.jsonl`; False writes no file. Appended to if it exists.
      run_id: defaults to `new_run_id()`.
      attributes: extra run-span attributes.
      capacity: recorder buffer size (records); None reads `JITLAB_RECORDER_CAPACITY` (2,000,000).
      on_full: "flush" (default): a full buffer is handed to the run's exporter thread, which turns
        it into spans and exports them (the launch that filled it pays only for the hand-off,
        `jitlab.recorder.flush_ns`; buffers beyond the exporter's backlog are counted as dropped);
        "block": the launch that filled it waits for the exporter instead (back-pressure: nothing
        dropped, launches slowed to the exporter's rate); "drop": further records are counted in
        `jitlab.recorder.dropped` instead.
      exporters: extra `SpanExporter`s (tests, custom sinks), fed the same batches as the file.
      otlp: None: OTLP export iff the OTEL_EXPORTER_OTLP_* environment names a collector;
        False: never.
    """

    end_frames_as_they_close = False  # trial.set() may add aggregates after a trial closed: end all at close

    def __init__(
        self,
        experiment: str,
        level: str | None = None,
        sample_every: int | None = None,
        trace_file: str | os.PathLike | None | bool = None,
        run_id: str | None = None,
        attributes: dict | None = None,
        *,
        capacity: int | None = None,
        on_full: str = "flush",
        exporters: Sequence = (),
        otlp: bool | None = None,
        batch_size: int = BATCH_SIZE,
    ):
        self.experiment = str(experiment)
        level = resolve_level(level)
        self.sample_every = resolve_sample_every(sample_every) if level == "sampled" else (
            1 if level == "full" else 0
        )
        super().__init__(level, sample_every=max(1, self.sample_every), capacity=resolve_capacity(capacity),
                         on_full=on_full)
        self.run_id = run_id or new_run_id()
        self._worker.name = f"jitlab-run-export-{self.run_id}"
        self.trace_file = resolve_trace_file(trace_file, self.experiment, self.run_id)
        self.attributes = dict(attributes or {})
        self._extra_exporters = list(exporters)
        self._otlp = otlp
        self._batch_size = batch_size
        self.provenance: dict = {}
        self._root: Frame | None = None
        self._entered = False
        self._interrupted = False
        self._t_close = None

    # -- structure --------------------------------------------------------------------------------
    def trial(self, name: str, attributes: dict | None = None) -> Trial:
        """A trial span (use as a context manager) under the innermost open frame of this thread."""
        return Trial(self, name, attributes, None)

    def step(self, name: str, attributes: dict | None = None) -> Step:
        """A step span under the innermost open trial/step of this thread (else the run)."""
        return Step(self, name, attributes, None)

    def set(self, mapping: dict | None = None, /, **attrs: Any) -> "Run":
        """Add run-span attributes (written at the end)."""
        target = self._root.attributes if self._root is not None else self.attributes
        if mapping:
            target.update(mapping)
        target.update(attrs)
        return self

    def _open_frame(self, kind: str, name: str, attributes: dict, parent: Frame | None) -> Frame:
        if not self._entered or self.closed:
            raise RuntimeError(f"{kind} {name!r} opened outside its Run's with-block")
        th = _get_ident()
        stack = self._stacks.get(th)
        if parent is None:
            parent = stack[-1] if stack else self._root
        f = Frame(kind=kind, name=name, t0=0, thread=th, parent=parent, attributes=dict(attributes))
        rec = self.recorder
        if rec is not None:
            f.stats0 = (rec.seen, rec.recorded, rec.dropped)
        return self._push(f)

    def _close_frame(self, f: Frame | None, et=None, ev=None) -> None:
        if not self._pop(f, et, ev):
            return
        if et is not None:
            f.attributes["jitlab.interrupted"] = issubclass(et, KeyboardInterrupt)
        rec = self.recorder
        s0 = f.stats0
        if rec is not None and s0 is not None:
            f.attributes["jitlab.trace.hits_seen"] = rec.seen - s0[0]
            f.attributes["jitlab.trace.records"] = rec.recorded - s0[1]
            f.attributes["jitlab.recorder.dropped"] = rec.dropped - s0[2]

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> "Run":
        if self._entered:
            raise RuntimeError("a Run can be entered once")
        self._sink = SpanSink.standard(self.trace_file, self._extra_exporters, self._otlp, strict=True)
        self._entered = True
        self._sink.batch_size = self._batch_size
        self.provenance = _provenance()
        offset = self.clock_offset_ns
        self._ensure_builder()
        attrs = {
            "jitlab.experiment": self.experiment,
            "jitlab.run.id": self.run_id,
            "jitlab.trace.level": self.level,
            "jitlab.trace.sample_every": self.sample_every,
            "jitlab.trace.file": str(self.trace_file) if self.trace_file else "",
            A_CLOCK_OFFSET: offset,
        }
        attrs.update({f"jitlab.provenance.{k}": v for k, v in self.provenance.items()})
        attrs.update(self.attributes)
        self._root = Frame(kind="run", name=RUN_SPAN, t0=0, thread=_get_ident(), attributes=attrs)
        self._frames.append(self._root)
        self._stacks[self._root.thread] = []
        atexit.register(self._atexit)
        _process._OPEN_RUNS.append(self)
        self._root.t0 = _perf_ns()
        self._builder.frame_span(self._root)  # started now (explicit time) so trace_id is known
        self._begin()
        return self

    @property
    def trace_id(self) -> str | None:
        """The run's trace id (32 hex digits, as Jaeger shows it) once the run is entered."""
        root = self._root
        if root is None or root.span is None:
            return None
        return format(root.span.get_span_context().trace_id, "032x")

    def __exit__(self, et, ev, tb):
        if et is not None and self._root is not None:
            self._root.error = f"{et.__name__}: {ev}" if str(ev) else et.__name__
            self._interrupted = issubclass(et, (KeyboardInterrupt, _shutdown.Terminated))
        self.close()
        err = self.summary.get("trace_error") if self.summary else None
        if err and et is None:
            raise TraceTargetError(err)
        return False

    # telemetry.shutdown: SIGTERM with the default disposition unwinds the run's with-block
    def nudge(self) -> None:
        pass  # the run exports when it ends

    def on_default_signal(self, signum: int) -> None:
        if not self.closed and threading.current_thread() is threading.main_thread():
            if signum == getattr(__import__("signal"), "SIGTERM", None):
                raise _shutdown.Terminated(128 + signum)
            raise KeyboardInterrupt

    def final_flush(self, timeout_s: float) -> None:
        self._atexit()

    def _atexit(self) -> None:
        if not self.closed:
            if self._root is not None and self._root.error is None:
                self._root.error = "run not closed before interpreter exit"
            self.close()

    # -- the one session's hooks ---------------------------------------------------------------------
    def _make_sink(self):
        return self._sink  # made (and checked) at __enter__

    def _resource_extra(self) -> dict:
        return {}

    def _launch_root(self, records: list):
        return self._root

    def child_session_args(self) -> dict:
        """A forked child's session (a process session: the parent's run is the parent's): this run's
        level, file and limits."""
        return dict(level=self.level, sample_every=max(1, self.sample_every), capacity=self.capacity,
                    trace_file=self.trace_file, on_full=self.on_full)

    def _end_words(self) -> str:
        return "the run ended"

    def _final_line_subject(self) -> str:
        return f"run {self.run_id} "

    def _before_final(self, t_end: int) -> None:
        """The run span's attributes, known before any launch is exported (it is written first)."""
        rec = self.recorder
        stats = rec.stats() if rec is not None else {}
        with self._lock:
            self._root.attributes.update(
                {
                    "jitlab.recorder.dropped": stats.get("dropped", 0),
                    "jitlab.recorder.records": stats.get("recorded", 0),
                    "jitlab.recorder.hits_seen": stats.get("hits_seen", 0),
                    "jitlab.recorder.flushes": stats.get("flushes", 0),
                    "jitlab.recorder.flush_ns": stats.get("flush_ns", 0),
                    "jitlab.recorder.appender": stats.get("appender", ""),
                    "jitlab.run.interrupted": self._interrupted,
                    # every recorded launch is exported after this span (the summary says how many were written)
                    "jitlab.trace.launch_spans": stats.get("recorded", 0),
                }
            )
        self._stats = stats

    def close(self) -> dict:
        """End the run: detach its recorder, end open frames, export the run span and frames, then the
        launches, close the exporters. Idempotent; returns (and stores in `.summary`) a summary. A Ctrl-C
        while exporting stops the export (the summary and the final line say what was written) and is
        raised again."""
        if self.closed:
            return self.summary or {}
        if not self._entered:
            raise RuntimeError("Run.close() before the run was entered")
        try:
            atexit.unregister(self._atexit)
        except Exception:
            pass
        if self in _process._OPEN_RUNS:
            _process._OPEN_RUNS.remove(self)
        try:
            counts = self._finish(None)
        except KeyboardInterrupt:
            self._summarize(self._interrupted_summary or {"records": 0, "written": 0, "dropped": 0, "export_s": 0})
            raise
        return self._summarize(counts)

    def _summarize(self, counts: dict) -> dict:
        stats = getattr(self, "_stats", {})
        self.summary = {
            "experiment": self.experiment,
            "run_id": self.run_id,
            "trace_id": self.trace_id,
            "level": self.level,
            "sample_every": self.sample_every,
            "trace_file": self._sink.file_written(),
            "trace_error": self._sink.file_error(),
            "spans": len(self._frames) + counts["written"],
            "launch_spans": counts["written"],
            "frames": len(self._frames),
            "records": counts["records"],
            "written": counts["written"],
            "hits_seen": stats.get("hits_seen", 0),
            "dropped": counts["dropped"],
            "flushes": stats.get("flushes", 0),
            "flush_ns": stats.get("flush_ns", 0),
            "interrupted": self._interrupted,
            "export_interrupted": self.export_interrupted,
            "export_s": counts["export_s"],
            "targets": self._sink.summary(),
        }
        return self.summary
