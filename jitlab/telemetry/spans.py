"""Turn recorder records plus run/trial/step structure into OpenTelemetry spans, after the fact.

Every span gets EXPLICIT start and end times: the hot path and the run/trial/step frames use
`time.perf_counter_ns()`, and `clock_offset_ns` (captured once, `time.time_ns() -
time.perf_counter_ns()`) places them on the Unix-epoch clock spans use. A launch span becomes a
child of the innermost trial/step frame of its own thread that was open when it started; a
launch from a thread with no open frame goes under the innermost frame of the run's thread open
at that time, else under the run span.

Spans are created through a normal SDK `Tracer` (so IDs, resource and scope are the SDK's), but
nothing is exported here: `collecting_provider()` returns a provider whose only processor keeps
finished spans in a list, which `jitlab.telemetry.export` sends in batches.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Status, StatusCode

from .. import record_layout as _layout
from . import recorder as _rec

LAUNCH_SPAN = "jitlab.launch"
EVICT_SPAN = "jitlab.evict"  # a record of outcome EVICT: an entry dropped (JITLAB_MAX_ENTRIES), not a launch
RUN_SPAN = "jitlab.run"
SCOPE_NAME = "jitlab.telemetry"
DEFAULT_SERVICE_NAME = "jitlab"

# Launch span attributes (the README's table documents each).
A_KERNEL = "jitlab.kernel"
A_SCOPE = "jitlab.scope"
A_POLICY = "jitlab.policy"
A_RESULT = "jitlab.cache.result"
A_KEY = "jitlab.cache.key"
A_DEVICE = "jitlab.device"
A_ARGS_NS = "jitlab.arg_update.duration_ns"
A_LAUNCH_NS = "jitlab.launch.duration_ns"
A_COMPILE_NS = "jitlab.compile.duration_ns"
A_REASON = "jitlab.fallback.reason"
A_THREAD = "thread.id"
# Frame span attributes.
A_KIND = "jitlab.span.kind"  # "run" | "trial" | "step" | "span" (telemetry.span) | "batch"
# Resource (and run span) attribute: time.time_ns() - time.perf_counter_ns() when recording began.
# Span times are perf_counter_ns + this; `jitlab-export` subtracts it to put spans back on the
# monotonic clock (CLOCK_MONOTONIC on Linux) for other profilers' timelines.
A_CLOCK_OFFSET = "jitlab.clock.offset_ns"

# provenance() key -> resource attribute.
PROVENANCE_RESOURCE = {
    "gpu": "jitlab.gpu.name",
    "gpu_count": "jitlab.gpu.count",
    "driver": "jitlab.gpu.driver_version",
    "cuda_available": "jitlab.cuda.available",
    "cuda_runtime": "jitlab.cuda.runtime_version",
    "torch": "jitlab.torch.version",
    "triton": "jitlab.triton.version",
    "python": "process.runtime.version",
    "jitlab": "service.version",
    "jitlab_commit": "jitlab.git.commit",
    "hostname": "host.name",
    "pid": "process.pid",
}

_OUTCOMES = _rec.OUTCOME_NAMES
# Positions in a record (jitlab.record_layout, the one definition)
(_KERNEL, _SCOPE, _POLICY, _OUTCOME, _KEY, _DEVICE, _T_ENTER, _T_ARGS, _T_EXIT, _COMPILE_NS, _THREAD, _REASON) = (
    _layout.INDEX[n] for n in ("kernel", "scope", "policy", "outcome", "key", "device", "t_enter", "t_args",
                               "t_exit", "compile_ns", "thread", "reason"))
_INF = float("inf")
#: Longer text values of a launch span (a generated kernel name, a reason) and span names are cut to this
#: many characters with a marker saying how many were dropped: a launch span is one of thousands in a batch.
MAX_ATTRIBUTE_CHARS = 16384
#: The same for the attributes of runs, trials and steps (one span each, not one per launch): large enough
#: for an experiment's whole summary rows (`jitlab.results`, which the notebooks parse as JSON), and one span
#: still far below gRPC's 4 MiB message limit (export.SpanSink splits batches by size).
MAX_FRAME_ATTRIBUTE_CHARS = 1 << 20


def cap_text(v: str, limit: int = MAX_ATTRIBUTE_CHARS) -> str:
    """`v`, or its first characters and a marker `...[+N chars]` when longer than `limit`."""
    if len(v) <= limit:
        return v
    marker = f"...[+{len(v) - limit + 24} chars]"
    return v[: limit - 24] + marker


def attribute_value(v: Any):
    """Coerce `v` to an OpenTelemetry attribute value (str/bool/int/float or a homogeneous
    tuple of them); None means "leave the attribute out". numpy scalars become Python numbers."""
    if v is None:
        return None
    if isinstance(v, str):
        return cap_text(v, MAX_FRAME_ATTRIBUTE_CHARS)
    if isinstance(v, (bool, int, float)):
        return v
    item = getattr(v, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(v, "ndim", 0) == 0:
        try:
            return attribute_value(item())
        except Exception:
            return str(v)
    if isinstance(v, (list, tuple)) or (hasattr(v, "tolist") and getattr(v, "ndim", 1) == 1):
        seq = v.tolist() if hasattr(v, "tolist") else list(v)
        seq = [attribute_value(x) for x in seq]
        seq = [x for x in seq if x is not None]
        kinds = {type(x) for x in seq}
        if len(kinds) <= 1 and not (kinds & {list, tuple}):
            return tuple(seq)
        if kinds <= {int, float}:
            return tuple(float(x) for x in seq)
        return tuple(str(x) for x in seq)
    return cap_text(str(v), MAX_FRAME_ATTRIBUTE_CHARS)


def clean_attributes(d: dict | None) -> dict:
    out = {}
    for k, v in (d or {}).items():
        v = attribute_value(v)
        if v is not None:
            out[str(k)] = v
    return out


def make_resource(prov: dict | None = None, extra: dict | None = None) -> Resource:
    """The SDK resource (honouring OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME) plus provenance.
    `service.name` is "jitlab" unless the environment names one."""
    attrs = {}
    for k, name in PROVENANCE_RESOURCE.items():
        if prov and k in prov:
            v = attribute_value(prov[k])
            if v is not None:
                attrs[name] = v
    attrs.update(clean_attributes(extra))
    try:
        res = Resource.create(attrs)
    except RuntimeError:  # at interpreter exit the SDK's detector thread pool refuses work: no detectors
        import os

        name = os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
        res = Resource({**attrs, SERVICE_NAME: name})
    # Resource.create falls back to "unknown_service:<exe>" when neither OTEL_SERVICE_NAME nor
    # OTEL_RESOURCE_ATTRIBUTES names the service: that is where jitlab's default goes.
    if str(res.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        res = res.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return res


class CollectingProcessor(SpanProcessor):
    """Keeps every finished span in `spans` (export happens later, in batches, by the caller)."""

    def __init__(self):
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)

    def take(self) -> list[ReadableSpan]:
        out, self.spans = self.spans, []
        return out

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def collecting_provider(resource: Resource) -> tuple[TracerProvider, CollectingProcessor]:
    """A private TracerProvider (never the global one) that samples everything (jitlab's own
    levels decide what is recorded) and collects finished spans in memory."""
    provider = TracerProvider(resource=resource, sampler=ALWAYS_ON, shutdown_on_exit=False)
    collector = CollectingProcessor()
    provider.add_span_processor(collector)
    return provider, collector


@dataclass(eq=False)
class Frame:
    """A run, trial or step interval, in perf_counter_ns, on the thread that opened it."""

    kind: str  # "run" | "trial" | "step"
    name: str  # span name
    t0: int
    thread: int
    parent: "Frame | None" = None
    t1: int | None = None  # None while open
    attributes: dict = field(default_factory=dict)
    error: str | None = None  # status description when the frame ended by an exception
    span: Any = None  # the OTel span once materialized
    ctx: Any = None  # an OTel context holding `span` (parent for children)
    stats0: tuple | None = None  # recorder counters when the frame opened
    ended: bool = False
    parent_ctx: Any = None  # an OTel context to parent a top-level frame (the program's own current span)


def push_frame(f: Frame, stacks: dict, frames: list, lock) -> Frame:
    """Make `f` the innermost open frame of its thread, keep it in `frames`, stamp its start (last,
    so the bookkeeping is not inside the interval)."""
    stacks.setdefault(f.thread, []).append(f)
    with lock:
        frames.append(f)
    f.t0 = time.perf_counter_ns()
    return f


def pop_frame(f: Frame | None, stacks: dict, et=None, ev=None) -> bool:
    """Stamp `f`'s end (first), note the exception that ended it, take it off its thread's stack.
    False when it was already closed."""
    t1 = time.perf_counter_ns()
    if f is None or f.t1 is not None:
        return False
    f.t1 = t1
    if et is not None:
        f.error = f"{et.__name__}: {ev}" if str(ev) else et.__name__
    stack = stacks.get(f.thread)
    if stack:
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is f:
                del stack[i]
                break
    return True


def _plain_string(i) -> str:
    """Names recorded as str pass through; ints without an intern table become their digits."""
    if isinstance(i, str):
        return i
    return "" if i is None or i == -1 else str(i)


class _Timeline:
    """Innermost open frame at a time, for the frames of one thread (half-open [t0, t1))."""

    def __init__(self, frames: Sequence[Frame]):
        events = []
        for f in frames:
            events.append((f.t0, 1, id(f), f))
            events.append((f.t1 if f.t1 is not None else _INF, 0, id(f), f))
        events.sort(key=lambda e: (e[0], e[1]))  # ends before starts at equal times
        self.times: list = []
        self.owner: list = []
        active: list[Frame] = []
        for t, is_start, _, f in events:
            if is_start:
                active.append(f)
            else:
                try:
                    active.remove(f)
                except ValueError:
                    pass
            cur = max(active, key=lambda a: a.t0) if active else None
            if self.times and self.times[-1] == t:
                self.owner[-1] = cur
            else:
                self.times.append(t)
                self.owner.append(cur)

    def at(self, t: int) -> Frame | None:
        i = bisect.bisect_right(self.times, t) - 1
        return self.owner[i] if i >= 0 else None


class SpanBuilder:
    """Creates spans with explicit times from frames and launch records.

    `string(i)` maps interned ids back to names (`Recorder.string`)."""

    def __init__(self, tracer: trace_api.Tracer, clock_offset_ns: int, string: Callable[[Any], str] | None = None):
        self.tracer = tracer
        self.offset = clock_offset_ns
        self.string = string or _plain_string
        self.launch_spans = 0

    # -- frames -----------------------------------------------------------------------------------
    def frame_span(self, f: Frame):
        """The frame's span, started (with its explicit start time) on first use."""
        if f.span is None:
            ctx = f.parent_ctx
            if f.parent is not None:
                ctx = trace_api.set_span_in_context(self.frame_span(f.parent))
            attrs = {A_KIND: f.kind}
            if f.thread >= 0:  # a process session's per-batch span belongs to no thread
                attrs[A_THREAD] = int(f.thread)
            f.span = self.tracer.start_span(cap_text(f.name), context=ctx, attributes=attrs, start_time=f.t0 + self.offset)
            f.ctx = trace_api.set_span_in_context(f.span)
        return f.span

    def end_frame(self, f: Frame, t1: int | None = None) -> None:
        """Set the frame's final attributes and end its span at its explicit end time."""
        if f.ended:
            return
        span = self.frame_span(f)
        if f.t1 is None:
            f.t1 = t1 if t1 is not None else f.t0
        span.set_attributes(clean_attributes(f.attributes))
        if f.error:
            span.set_status(Status(StatusCode.ERROR, f.error))
        span.end(end_time=max(f.t1, f.t0) + self.offset)
        f.ended = True

    # -- launches ---------------------------------------------------------------------------------
    def launch_attributes(self, r: tuple) -> dict:
        kernel, scope, policy, outcome, key = r[_KERNEL], r[_SCOPE], r[_POLICY], r[_OUTCOME], r[_KEY]
        t_enter, t_args, t_exit, compile_ns, thread, reason = (r[_T_ENTER], r[_T_ARGS], r[_T_EXIT], r[_COMPILE_NS],
                                                               r[_THREAD], r[_REASON])
        s = self.string
        a = {
            A_KERNEL: cap_text(s(kernel)),
            A_SCOPE: cap_text(s(scope)),
            A_POLICY: cap_text(s(policy)),
            A_RESULT: _OUTCOMES[outcome] if 0 <= outcome < len(_OUTCOMES) else str(outcome),
            A_ARGS_NS: int(t_args - t_enter),
            A_LAUNCH_NS: int(t_exit - t_args),
            A_THREAD: int(thread),
        }
        if key is not None and key >= 0:
            a[A_KEY] = int(key)
        if isinstance(r[_DEVICE], int) and r[_DEVICE] >= 0:
            a[A_DEVICE] = r[_DEVICE]
        if compile_ns or outcome in (_rec.MISS, _rec.LOCKED_MISS):
            a[A_COMPILE_NS] = int(compile_ns)
        if isinstance(reason, str) or (reason is not None and reason >= 0):
            a[A_REASON] = cap_text(s(reason))
        return a

    def add_launches(
        self,
        records: Iterable[tuple],
        frames: Sequence[Frame],
        root: Frame,
        on_batch: Callable[[], None] | None = None,
        batch: int = 8192,
    ) -> int:
        """One `jitlab.launch` span per record, parented by time and thread (module docstring).
        Frames that are still open get their span started now and ended later by `end_frame`.
        `on_batch()` is called after every `batch` spans (to export and free them as we go)."""
        by_thread: dict[int, list[Frame]] = {}
        for f in frames:
            if f is not root:
                by_thread.setdefault(f.thread, []).append(f)
        timelines = {th: _Timeline(fs) for th, fs in by_thread.items()}
        home = timelines.get(root.thread)
        offset, start_span = self.offset, self.tracer.start_span
        ctx_of: dict[int, Any] = {}
        n = 0
        for r in records:
            t_enter, t_exit, thread = r[_T_ENTER], r[_T_EXIT], r[_THREAD]
            tl = timelines.get(thread)
            parent = tl.at(t_enter) if tl is not None else None
            if parent is None and home is not None and thread != root.thread:
                parent = home.at(t_enter)
            if parent is None:
                parent = root
            ctx = ctx_of.get(id(parent))
            if ctx is None:
                self.frame_span(parent)
                ctx = ctx_of[id(parent)] = parent.ctx
            span = start_span(LAUNCH_SPAN if r[_OUTCOME] != _rec.EVICT else EVICT_SPAN, context=ctx,
                              attributes=self.launch_attributes(r), start_time=t_enter + offset)
            span.end(end_time=max(t_exit, t_enter) + offset)
            n += 1
            if on_batch is not None and n % batch == 0:
                on_batch()
        self.launch_spans += n
        return n
