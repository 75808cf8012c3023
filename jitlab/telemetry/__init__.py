"""jitlab telemetry: cheap per-launch records (hot path) and OpenTelemetry spans (afterwards).

`jitlab.telemetry.recorder` is the only module the jitcache core imports; it imports nothing from
OpenTelemetry. Everything else here is imported lazily, on first attribute access, so that
`import jitlab.telemetry.recorder` stays free of OpenTelemetry:

    from jitlab import telemetry
    with telemetry.Run(experiment="launch_overhead", level="sampled", sample_every=10) as run:
        with run.trial("relaxed", {"jitlab.policy": "relaxed"}) as trial:
            ...
            trial.set(median_ns=...)
    df = telemetry.load_traces(run.summary["trace_file"])

Any program (no Run): `JITLAB_TRACE=full JITLAB_TRACE_FILE=trace.jsonl python prog.py` traces every
launch (`jitlab.telemetry.process`); `with telemetry.span("step", n=1):` nests launches under a step.
"""

from __future__ import annotations

import importlib

from . import recorder


def _start_process_session():
    """The process session's start (`telemetry.process`, which needs the [trace] extra: the recorder
    checks it before calling this)."""
    from . import process

    return process.start()


recorder.register_process_session(_start_process_session)

_LAZY = {
    "Run": "session",
    "Trial": "session",
    "Step": "session",
    "new_run_id": "session",
    "load_traces": "load",
    "read_traces": "load",
    "SpanBuilder": "spans",
    "make_resource": "spans",
    "SpanSink": "export",
    "otlp_config": "export",
    "TraceTargetError": "export",
    "span": "process",
    "ProcessSession": "process",
    "Terminated": "shutdown",
}

__all__ = sorted(_LAZY) + ["recorder"]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        if name in ("session", "spans", "export", "load", "replay", "process", "shutdown", "worker", "chrome",
                    "tracing"):
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
