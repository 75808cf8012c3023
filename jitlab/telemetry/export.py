"""Where spans go: always an OTLP JSON-lines file; also OTLP (gRPC or HTTP/protobuf) when the
standard environment names a collector.

Environment (the standard OpenTelemetry variables, read when a `Run` finishes):

* `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as-is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (HTTP
  appends `/v1/traces`): when either is set, spans are also sent over OTLP. Unset: file only.
* `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or
  `http/protobuf`. **Default `grpc`**, the Python SDK's convention (its auto-configuration maps
  `OTEL_TRACES_EXPORTER=otlp` to the gRPC exporter when no protocol is set). Jaeger listens for
  gRPC on 4317 and HTTP on 4318. `http/json` is not offered by the Python SDK: it falls back to
  `http/protobuf` with a warning (`jitlab-replay` posts OTLP/JSON files).
* `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` / `OTEL_EXPORTER_OTLP_TIMEOUT`: seconds (as the Python
  SDK reads them). Unset: jitlab uses a short `DEFAULT_TIMEOUT_S` (3 s) instead of the SDK's
  10 s, so a collector that is down costs a run a few seconds at most.
* `OTEL_TRACES_EXPORTER=none`: no OTLP export even with an endpoint set (the file is still written).
* Headers, compression, certificates, `OTEL_EXPORTER_OTLP_INSECURE`: read by the SDK exporters.

Failures never propagate from `SpanSink.export`: the first failed batch of a target logs ONE
warning (once per process and endpoint) and disables that target for the rest of the run; the file
is written regardless. An unwritable trace file is found before any work (`check_writable`): a
`Run` (experiments) raises `TraceTargetError`, a process session warns once and goes on. A trace
path that is a symbolic link is refused the same way unless JITLAB_TRACE_FOLLOW_SYMLINKS=1: the
file is created with O_EXCL and opened with O_NOFOLLOW (`open_trace_file`). Spans are exported in
batches of at most `BATCH_SIZE` spans and about `BATCH_BYTES` bytes (under gRPC's 4 MiB message
limit), on the exporter thread (`telemetry.worker`) or after the timed regions.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("jitlab.telemetry")

DEFAULT_TIMEOUT_S = 3.0
BATCH_SIZE = 2048  # spans per export call (one JSON line per call in the file)
#: Estimated bytes per export call (span_bytes): gRPC servers refuse messages over 4 MiB by default,
#: and a whole batch is lost when one is refused.
BATCH_BYTES = 3 << 20
PROTOCOLS = ("grpc", "http/protobuf")

_warned: set = set()  # (kind, where) pairs already warned about in this process


@dataclass
class OtlpConfig:
    protocol: str  # "grpc" | "http/protobuf"
    endpoint: str  # what the exporter is given (HTTP: the full .../v1/traces URL)
    timeout_s: float | None  # None: the exporter reads the OTEL_* timeout itself


def otlp_config(environ=None) -> OtlpConfig | None:
    """The OTLP target the standard environment asks for, or None (file only)."""
    env = os.environ if environ is None else environ
    traces_ep = (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or "").strip()
    base_ep = (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
    if not (traces_ep or base_ep):
        return None
    if (env.get("OTEL_TRACES_EXPORTER") or "").strip().lower() == "none":
        return None
    proto = (
        (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
        .strip()
        .lower()
    )
    if proto not in PROTOCOLS:
        _warn_once(
            ("protocol", proto),
            "OTLP protocol %r is not supported by the Python SDK exporters; using http/protobuf",
            proto,
        )
        proto = "http/protobuf"
    if proto == "grpc":
        endpoint = traces_ep or base_ep
    else:
        endpoint = traces_ep or base_ep.rstrip("/") + "/v1/traces"
    has_timeout = env.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or env.get("OTEL_EXPORTER_OTLP_TIMEOUT")
    return OtlpConfig(proto, endpoint, None if has_timeout else DEFAULT_TIMEOUT_S)


def make_otlp_exporter(
    endpoint: str | None = None, protocol: str = "grpc", timeout_s: float | None = DEFAULT_TIMEOUT_S
) -> SpanExporter:
    """An SDK OTLP span exporter. `endpoint`: for gRPC `http://host:4317`; for HTTP either the
    base `http://host:4318` or the full `.../v1/traces` URL. None: the exporter reads the env."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, timeout=timeout_s)
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if endpoint and not endpoint.rstrip("/").endswith("/v1/traces"):
            from urllib.parse import urlparse

            if urlparse(endpoint).path in ("", "/"):
                endpoint = endpoint.rstrip("/") + "/v1/traces"
        return OTLPSpanExporter(endpoint=endpoint, timeout=timeout_s)
    raise ValueError(f"OTLP protocol must be one of {PROTOCOLS}, got {protocol!r}")


class TraceTargetError(OSError):
    """A trace file cannot be written; the message is one line naming the path and the reason."""


def _symlink_error(p: Path) -> TraceTargetError:
    try:
        to = f" (to {os.readlink(p)})"
    except OSError:
        to = ""
    return TraceTargetError(f"cannot write trace file {p}: it is a symbolic link{to}, which jitlab does not follow; "
                            f"give the file's own path, or set JITLAB_TRACE_FOLLOW_SYMLINKS=1")


def open_trace_file(path: str | os.PathLike) -> tuple[int, bool]:
    """(fd open for appending, whether this call created the file). A new file is created with O_EXCL
    and an existing one opened with O_NOFOLLOW, so a symbolic link at the path (dangling or not) is
    never written through, even one put there after a check; JITLAB_TRACE_FOLLOW_SYMLINKS=1 opts in to
    following it. Raises TraceTargetError (one line) or OSError."""
    from .. import settings

    p = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    if settings.SETTINGS.trace_follow_symlinks:
        existed = p.exists()
        return os.open(p, flags | os.O_CREAT, 0o644), not existed
    try:
        return os.open(p, flags | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        pass
    try:
        return os.open(p, flags | getattr(os, "O_NOFOLLOW", 0)), False
    except OSError as e:
        if e.errno == errno.ELOOP or p.is_symlink():
            raise _symlink_error(p) from None
        raise


def check_writable(path: str | os.PathLike) -> Path:
    """Create the parent directories and make sure `path` can be appended to; a file this check
    creates is removed again (the exporter creates it with the first spans, so a run killed before
    exporting leaves no empty file). Raises `TraceTargetError`."""
    from .. import settings

    p = Path(path)
    if p.is_symlink() and not settings.SETTINGS.trace_follow_symlinks:
        raise _symlink_error(p)
    if p.is_dir():
        raise TraceTargetError(f"cannot write trace file {p}: it is a directory")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, created = open_trace_file(p)
        os.close(fd)
    except TraceTargetError:
        raise
    except OSError as e:
        raise TraceTargetError(f"cannot write trace file {p}: {e.strerror or e}") from None
    if created:
        try:
            Path(os.path.realpath(p)).unlink()  # the file made (through a followed link: its target, not the link)
        except OSError:
            pass
    return p


class LazyFileExporter(SpanExporter):
    """The official OTLP JSON-lines file exporter (one `{"resourceSpans": ...}` line per export
    call; Jaeger UI >= 1.60 opens such files, `jitlab-replay` sends them to a collector), opened
    at the first export that has spans."""

    def __init__(self, path: Path):
        self.path = path
        self._inner: SpanExporter | None = None
        self._stream = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._inner is None:
            from opentelemetry.exporter.otlp.json.file.trace_exporter import FileSpanExporter

            try:
                self._stream = os.fdopen(open_trace_file(self.path)[0], "a", encoding="utf-8")
            except OSError as e:  # TraceTargetError (a symbolic link) included
                raise (e if isinstance(e, TraceTargetError) else
                       TraceTargetError(f"cannot write trace file {self.path}: {e.strerror or e}")) from None
            self._inner = FileSpanExporter(stream=self._stream)
        return self._inner.export(spans)

    def shutdown(self) -> None:
        if self._inner is not None:
            self._inner.shutdown()
            self._stream.close()  # opened here, so closed here (the SDK exporter closes only what it opened)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def make_file_exporter(path: str | os.PathLike) -> SpanExporter:
    """An OTLP JSON-lines file exporter for `path` (checked writable now, created at first export)."""
    return LazyFileExporter(check_writable(path))


def span_bytes(span: ReadableSpan) -> int:
    """An upper estimate of a span's size in an OTLP protobuf message (ids, times, name, attributes, events)."""
    n = 96 + len(span.name)
    for k, v in (span.attributes or {}).items():
        n += 16 + len(k) + _value_bytes(v)
    for e in span.events or ():
        n += 32 + len(e.name) + sum(16 + len(k) + _value_bytes(v) for k, v in (e.attributes or {}).items())
    for link in span.links or ():
        n += 64 + sum(16 + len(k) + _value_bytes(v) for k, v in (link.attributes or {}).items())
    if span.status is not None and span.status.description:
        n += len(span.status.description)
    return n


def _value_bytes(v) -> int:
    if isinstance(v, str):
        return 4 * len(v)  # UTF-8: at most 4 bytes a character
    if isinstance(v, (tuple, list)):
        return sum(8 + _value_bytes(x) for x in v)
    return 12


def _warn_once(key, msg, *args) -> None:
    if key in _warned:
        log.debug(msg, *args)
        return
    _warned.add(key)
    log.warning(msg, *args)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        try:
            if record.levelno >= logging.WARNING:
                self.messages.append(record.getMessage())
        except Exception:
            pass


# The SDK OTLP exporters log every retry and failure; while jitlab exports, their messages are
# captured (and summarized in jitlab's single warning) instead of flooding the console.
_NOISY = ("opentelemetry.exporter.otlp.proto", "opentelemetry.exporter.otlp.common", "opentelemetry.exporter.http",
          "opentelemetry.exporter.otlp.json.file")


_CAPTURE_LOCK = threading.RLock()  # exporter threads and closing runs export concurrently


@contextmanager
def _captured_logs():
    with _CAPTURE_LOCK:
        with _capturing() as cap:
            yield cap


@contextmanager
def _capturing():
    cap = _Capture()
    saved = []
    for name in _NOISY:
        lg = logging.getLogger(name)
        saved.append((lg, lg.propagate, list(lg.handlers)))
        lg.handlers = [cap]
        lg.propagate = False
    try:
        yield cap
    finally:
        for lg, prop, handlers in saved:
            lg.handlers = handlers
            lg.propagate = prop


@dataclass
class Target:
    """One destination: the file or an OTLP collector."""

    kind: str  # "file" | "grpc" | "http/protobuf" | "custom"
    where: str  # path or endpoint
    exporter: SpanExporter
    sent: int = 0
    unsent: int = 0
    failed: bool = False
    error: str | None = None
    seconds: float = 0.0

    def summary(self) -> dict:
        return {
            "kind": self.kind,
            "where": self.where,
            "sent": self.sent,
            "unsent": self.unsent,
            "ok": not self.failed,
            "error": self.error,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class SpanSink:
    """Exports span lists to every target in batches, warning once and disabling a target on its
    first failure, never raising."""

    targets: list[Target] = field(default_factory=list)
    batch_size: int = BATCH_SIZE

    @classmethod
    def standard(
        cls, trace_file: str | os.PathLike | None, extra: Sequence[SpanExporter] = (), otlp: bool | None = None,
        strict: bool = False,
    ) -> "SpanSink":
        """File target (when `trace_file` is given), OTLP from the environment (when `otlp` is
        None; True/False forces it on/off), then any `extra` exporters (tests, custom sinks).
        An unwritable file raises `TraceTargetError` when `strict` (experiments), else warns once
        and the sink goes on without it (a library session must not stop the program)."""
        sink = cls()
        if trace_file is not None:
            try:
                sink.targets.append(Target("file", str(trace_file), make_file_exporter(trace_file)))
            except TraceTargetError as e:
                if strict:
                    raise
                _warn_once(("file", str(trace_file)), "jitlab: %s; tracing goes on without the file", e)
        cfg = otlp_config()
        if otlp is not False and cfg is not None:
            try:
                exp = make_otlp_exporter(cfg.endpoint, cfg.protocol, cfg.timeout_s)
                sink.targets.append(Target(cfg.protocol, cfg.endpoint, exp))
            except Exception as e:
                _warn_once(
                    (cfg.protocol, cfg.endpoint),
                    "jitlab: cannot set up OTLP %s exporter for %s (%s); spans go to the trace file only",
                    cfg.protocol,
                    cfg.endpoint,
                    e,
                )
        for exp in extra:
            sink.targets.append(Target("custom", type(exp).__name__, exp))
        return sink

    def export(self, spans: Sequence[ReadableSpan]) -> None:
        if not spans:
            return
        for t in self.targets:
            if t.failed:
                t.unsent += len(spans)
                continue
            t0 = time.perf_counter()
            try:
                self._export_target(t, spans)
            finally:
                t.seconds += time.perf_counter() - t0

    def _batches(self, spans: Sequence[ReadableSpan]):
        """(start, batch): at most `batch_size` spans and about BATCH_BYTES (span_bytes) each."""
        i, n = 0, len(spans)
        while i < n:
            j, size = i, 0
            while j < n and j - i < self.batch_size:
                size += span_bytes(spans[j])
                if size > BATCH_BYTES and j > i:
                    break
                j += 1
            yield i, spans[i:j]
            i = j

    def _export_target(self, t: Target, spans: Sequence[ReadableSpan]) -> None:
        n = len(spans)
        for i, batch in self._batches(spans):
            err = None
            with _captured_logs() as cap:  # the SDK exporters log each failure: summarized below
                try:
                    ok = t.exporter.export(batch) == SpanExportResult.SUCCESS
                except Exception as e:
                    ok, err = False, str(e) if isinstance(e, TraceTargetError) else f"{type(e).__name__}: {e}"
            if not ok and err is None:
                msgs = cap.messages
                err = msgs[-1].splitlines()[0] if msgs else "export failed"
                if len(msgs) > 1 and msgs[0] != msgs[-1]:
                    err = f"{err} (first: {msgs[0].splitlines()[0]})"
            if ok:
                t.sent += len(batch)
                continue
            t.failed, t.error = True, err
            t.unsent += n - i
            if t.kind == "file":
                _warn_once(("file", t.where), "jitlab: writing trace file %s failed: %s", t.where, err)
            else:
                _warn_once(
                    (t.kind, t.where),
                    "jitlab: OTLP export (%s) to %s failed, not sending more spans there this run "
                    "(launches are unaffected; the trace file is still written): %s",
                    t.kind,
                    t.where,
                    err,
                )
            return

    def shutdown(self) -> None:
        for t in self.targets:
            try:
                with _captured_logs():
                    t.exporter.shutdown()
            except Exception:
                pass

    def summary(self) -> list[dict]:
        return [t.summary() for t in self.targets]

    def file_written(self) -> str | None:
        """The trace file's path if every span sent to it was written, else None (summaries never
        name a file that was not written)."""
        for t in self.targets:
            if t.kind == "file":
                return t.where if t.sent and not t.failed else None
        return None

    def file_error(self) -> str | None:
        for t in self.targets:
            if t.kind == "file" and t.failed:
                return f"writing trace file {t.where} failed: {t.error}"
        return None
