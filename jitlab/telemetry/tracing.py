"""The one tracing session: a recorder the hot path appends to, frames (spans of the program's own), an
exporter thread that turns records into spans and exports them, and a close that accounts for every record.

`Run` (experiments, `telemetry.session`) and the process-wide session of any program (`telemetry.process`)
are both a `TraceSession`; they differ only in where launches outside any frame go (the run's root span; a
per-batch `jitlab.launches` span), when closed frames become spans (at the end; at each export) and how
their sink is made.

Guarantees, whatever ends the session (close, exit, SIGTERM, Ctrl-C, the final flush's timeout):
- every record the recorder was offered is either written (its span accepted by the primary target: the
  trace file, else the first collector) or counted as dropped; `close()` says so in one final line,
  "recorded R launch records = W written + D dropped";
- all span building and exporting happens on the exporter thread: a signal (Ctrl-C) lands in the thread
  that waits for it, which then stops the export at the next batch and reports what was written;
- closing a session detaches exactly its recorder (`recorder.attach`/`detach`), whatever the order;
- a forked child starts its own clean session (`telemetry.process` registers the fork hooks): nothing of
  the parent's (records, exporter thread, locks held) goes with it.
"""

from __future__ import annotations

import logging
import threading
import time
from . import recorder as _rec
from . import shutdown
from .worker import ExportWorker

log = logging.getLogger("jitlab.telemetry")

ON_FULL = ("flush", "block", "drop")
CANCEL_WAIT_S = 5.0  # after Ctrl-C, how long close() waits for the exporter to stop at its next batch
_perf_ns = time.perf_counter_ns
_get_ident = threading.get_ident

LIVE: list = []  # started, not yet closed sessions, oldest first (the fork hooks abandon them in a child)


class _Cancelled(Exception):
    """Raised on the exporter thread between batches once the export was interrupted (Ctrl-C)."""


class TraceSession:
    """Recorder + frames + exporter thread + sink; subclasses say where spans hang and how the sink is made.

    `on_full`: what a full recorder buffer does. "flush": it is handed to the exporter thread; buffers
    beyond `max_pending` waiting ones are dropped and counted (launches never wait). "block": the launch
    that filled it waits until the exporter takes it (back-pressure: nothing is dropped while the exporter
    runs, at the cost of launch time). "drop": further records are counted as dropped."""

    name = "jitlab-trace-export"
    #: subclasses: end closed frames at each export (True) or only at the end (False)
    end_frames_as_they_close = True

    def __init__(self, level: str, *, sample_every: int = 1, capacity: int = 1_000_000, on_full: str = "flush",
                 flush_s: float | None = None, max_pending: int = 4):
        if on_full not in ON_FULL:
            raise ValueError(f"on_full must be one of {'|'.join(ON_FULL)}, got {on_full!r}")
        self.level = level
        self.on_full = on_full
        self.capacity = capacity
        self.recorder: _rec.Recorder | None = None
        if level != "off":
            self.recorder = _rec.Recorder(level, capacity=capacity, sample_every=max(1, sample_every),
                                          on_full=None if on_full == "drop" else self._hand_off)
        self.clock_offset_ns = self.recorder.clock_offset_ns if self.recorder else time.time_ns() - _perf_ns()
        self._worker = ExportWorker(self.name, self._work, flush_s, max_pending, prepare=self._prepare)
        self._sink = None
        self._frames: list = []  # open frames, and closed ones still needed to parent launches
        self._closed_frames: list = []  # closed since the last export (end_frames_as_they_close)
        self._stacks: dict[int, list] = {}
        self._lock = threading.RLock()
        self._builder = None
        self._collector = None
        self._provider = None
        self.written = 0  # launch records whose spans the primary target accepted
        self.nowhere = 0  # launch records with no target to go to
        self.batches = 0
        self.closed = False
        self.summary: dict | None = None
        self._closing = False
        self._final_frames_done = False
        self._cancel = False
        self.export_interrupted = False
        self._interrupted_summary: dict | None = None
        self.forked = False

    # -- subclass hooks ------------------------------------------------------------------------------------
    def _make_sink(self):  # pragma: no cover - subclasses
        raise NotImplementedError

    def _resource_extra(self) -> dict:
        return {}

    def _launch_root(self, records: list):
        """The frame launches outside every frame go under, for this batch of records."""
        raise NotImplementedError  # pragma: no cover

    def _after_launches(self, root) -> None:
        """Called on the exporter thread after a batch's launch spans were built under `root`."""

    def _final_frames(self) -> list:
        """Frames to end in the final export, children before parents."""
        return [f for f in reversed(self._frames) if not f.ended]

    # -- lifecycle ---------------------------------------------------------------------------------------
    def _begin(self) -> None:
        """Attach the recorder, start the exporter thread, be flushed at exit and abandoned in a fork."""
        LIVE.append(self)
        _rec.attach(self.recorder)
        self._worker.start()
        shutdown.register(self)

    def _prepare(self) -> None:
        """First thing on the exporter thread: the sink (when not made yet) and the span builder."""
        if self._sink is None:
            self._sink = self._make_sink()
        self._ensure_builder()

    def _ensure_builder(self):
        if self._builder is None:
            from ..provenance import provenance
            from .spans import A_CLOCK_OFFSET, SCOPE_NAME, SpanBuilder, collecting_provider, make_resource

            prov = provenance()
            resource = make_resource(prov, {A_CLOCK_OFFSET: self.clock_offset_ns, **self._resource_extra()})
            self._provider, self._collector = collecting_provider(resource)
            tracer = self._provider.get_tracer(SCOPE_NAME, str(prov.get("jitlab") or "unknown"))
            string = self.recorder.string if self.recorder is not None else None
            self._builder = SpanBuilder(tracer, self.clock_offset_ns, string)
        return self._builder

    # -- the program's threads: O(1), no OpenTelemetry ---------------------------------------------------------
    def _hand_off(self, chunk: list) -> None:
        """Recorder full (a launching thread): queue the chunk for the exporter (`on_full`)."""
        self._worker.hand_off(chunk, wait=self.on_full == "block")

    def _push(self, f):
        from .spans import push_frame

        return push_frame(f, self._stacks, self._frames, self._lock)

    def _pop(self, f, et=None, ev=None) -> bool:
        from .spans import pop_frame

        if not pop_frame(f, self._stacks, et, ev):
            return False
        if self.end_frames_as_they_close:
            with self._lock:
                self._closed_frames.append(f)
        return True

    # -- the exporter thread -------------------------------------------------------------------------------
    def _work(self, chunks: list, tick: bool) -> None:
        try:
            if self._cancel:
                return
            if self._sink is None:  # not prepared at the thread's start (worker.quiet_start_s)
                self._prepare()
            if self._closing and not self._final_frames_done:
                self._export_final_frames()  # the root span and its summary before the bulk of launches
            records = [r for c in chunks for r in c]
            if tick and self.recorder is not None:
                records += self.recorder.drain_raw()
            if records:
                self._saw_records(records)
                self._export_records(records)
            if self.end_frames_as_they_close:
                with self._lock:
                    closed, self._closed_frames = self._closed_frames, []
                b = self._ensure_builder()
                for f in closed:
                    b.end_frame(f)
                self._export_collected()
        except _Cancelled:
            self._collector.take()  # built, never exported: the accounting counts them as dropped

    def _export_final_frames(self) -> None:
        b = self._ensure_builder()
        with self._lock:
            frames = self._final_frames()
        for f in frames:
            b.end_frame(f)
        self._export_collected()
        self._final_frames_done = True

    def _export_records(self, records: list) -> None:
        from .export import BATCH_SIZE

        b = self._ensure_builder()
        if self._sink is None or not self._sink.targets:
            self.nowhere += len(records)
            return
        with self._lock:
            frames = list(self._frames)
        root = self._launch_root(records)
        b.add_launches(records, frames, root, self._export_collected, getattr(self._sink, "batch_size", BATCH_SIZE))
        self._after_launches(root)
        self._export_collected()
        self.batches += 1

    def _export_collected(self) -> None:
        """Export the spans built so far; count the launch records the primary target accepted."""
        from .spans import LAUNCH_SPAN

        spans = self._collector.take()
        if self._cancel:
            raise _Cancelled
        if not spans or self._sink is None or not self._sink.targets:
            return
        primary = self._sink.targets[0]
        before = primary.sent
        self._sink.export(spans)
        sent = primary.sent - before  # the sink sends in order: the first `sent` spans were accepted
        self.written += sum(1 for s in (spans if sent >= len(spans) else spans[:sent]) if s.name == LAUNCH_SPAN)

    # -- closing ---------------------------------------------------------------------------------------
    def _finish(self, timeout_s: float | None) -> dict:
        """Stop recording, let the exporter finish (at most `timeout_s`; Ctrl-C stops it at its next batch),
        close the targets, account for every record, say it in one final line. Returns the counts."""
        self.closed = True
        _rec.detach(self.recorder)
        shutdown.unregister(self)
        if self in LIVE:
            LIVE.remove(self)
        t_end = _perf_ns()
        with self._lock:
            for f in self._frames:
                if f.t1 is None:
                    f.t1, f.error = t_end, f.error or f"not closed before {self._end_words()}"
                    if self.end_frames_as_they_close:
                        self._closed_frames.append(f)
        self._before_final(t_end)
        self._closing = True
        interrupted = None
        t0 = time.perf_counter()
        try:
            done = self._worker.stop(timeout_s)
            if not done:  # out of time: stop it at its next batch, so that what it wrote is what is counted
                self._cancel = True
                self._worker.stop(CANCEL_WAIT_S)
        except KeyboardInterrupt as e:  # Ctrl-C while waiting: stop at the next batch, then say what was written
            interrupted, self._cancel, self.export_interrupted = e, True, True
            done = self._worker.stop(CANCEL_WAIT_S)
        if done and self._sink is not None:
            self._sink.shutdown()
            if self._provider is not None:
                try:
                    self._provider.shutdown()
                except Exception:  # noqa: BLE001 - a private provider with a collecting processor only
                    pass
        counts = self._account(done, timeout_s, time.perf_counter() - t0)
        if interrupted is not None:
            self._interrupted_summary = counts
            raise interrupted
        return counts

    def _end_words(self) -> str:
        return "tracing ended"

    def _before_final(self, t_end: int) -> None:
        """On the closing thread, before the final export: last attributes of the frames."""

    def _account(self, done: bool, timeout_s: float | None, seconds: float) -> dict:
        rec = self.recorder
        offered = (rec.recorded + rec.dropped) if rec is not None else 0
        written = self.written
        behind = rec.dropped if rec is not None else 0
        left = offered - written - behind - self.nowhere  # accepted, never written: export stopped or failed
        why = []
        if behind:
            why.append(f"{behind} with the buffer full (capacity {rec.capacity}, on_full={self.on_full}, exporter "
                       f"{self._worker.max_pending} buffers behind)")
        if left:
            if self.export_interrupted:
                why.append(f"{left} not exported: the export was interrupted")
            elif not done:
                why.append(f"{left} not exported within {timeout_s:.0f} s")
            else:
                why.append(f"{left} not accepted by the trace target")
        if self.nowhere:
            why.append(f"{self.nowhere} with nowhere to go: set JITLAB_TRACE_FILE or OTEL_EXPORTER_OTLP_ENDPOINT "
                       f"(or fix the target warned about above)")
        counts = {"records": offered, "written": written, "dropped": offered - written, "finished": done,
                  "export_s": round(seconds, 4)}
        if offered or self.export_interrupted:
            what = self._final_line_subject()
            line = f"jitlab: tracing {what}recorded {offered} launch records = {written} written + " \
                   f"{offered - written} dropped" + (f" ({'; '.join(why)})" if why else "")
            if self.export_interrupted:
                line += f"; export interrupted: wrote {written} of {offered - behind - self.nowhere} launch spans"
            summarized = offered - written == self.nowhere and self._nowhere_is_expected()
            (log.warning if (offered - written or self._always_say()) and not summarized else log.info)(line)
        return counts

    def _final_line_subject(self) -> str:
        return ""

    def _saw_records(self, records: list) -> None:
        """Every drained record, on the exporter thread, before it becomes a span (or has nowhere to go)."""

    def _nowhere_is_expected(self) -> bool:
        """Records with no trace target are what the user asked for (they were summarized instead)."""
        return False

    def _always_say(self) -> bool:
        return False

    # -- telemetry.shutdown ------------------------------------------------------------------------------
    def nudge(self) -> None:
        self._worker.request_flush()

    def on_default_signal(self, signum: int) -> None:
        pass  # final_flush follows

    # -- fork ----------------------------------------------------------------------------------------------
    def _abandon_in_child(self) -> None:
        """In a forked child: this session is the parent's. Touch none of its locks or threads; never export."""
        self.closed = self.forked = True
        self.summary = {"forked": True}


def abandon_all_in_child() -> list:
    """The fork hook's part here: the parent's sessions, abandoned in the child (the caller keeps them
    referenced, so no exporter or gRPC channel of the parent's is finalized in the child)."""
    old = list(LIVE)
    LIVE.clear()
    for s in old:
        s._abandon_in_child()
    return old


__all__ = ["TraceSession", "ON_FULL", "LIVE", "abandon_all_in_child"]
