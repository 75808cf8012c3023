"""Records + run/trial/step structure -> OpenTelemetry spans (InMemorySpanExporter)."""

from __future__ import annotations

import threading
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jitlab import settings
from jitlab.telemetry import recorder as R
from jitlab.telemetry.session import Run
from jitlab.telemetry.spans import LAUNCH_SPAN, Frame, SpanBuilder, make_resource



pytestmark = pytest.mark.usefixtures("clean_otel_env")


def launch(rec, outcome=R.HIT, key=0, kernel="add_kernel", scope="default", policy="safe", compile_ns=0, reason=-1,
           args_ns=100, call_ns=300):
    """What the jitcache's hot path does, with synthetic timings (sleep-free) in perf_counter_ns, so
    every record goes through record() (the hit path's compact tuples are tested in test_recorder)."""
    kept = rec.every_hit or rec.wants_hit()  # below full, every launch is offered at entry
    if outcome == R.HIT and not kept:
        return None
    t0 = time.perf_counter_ns()
    rec.record(rec.intern(kernel), rec.intern(scope), rec.intern(policy), outcome, key, t0, t0 + args_ns,
               t0 + args_ns + call_ns, compile_ns, rec.intern(reason) if isinstance(reason, str) else reason)
    return t0


def by_name(spans):
    out = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def test_builder_attributes_parent_and_explicit_times():
    mem = InMemorySpanExporter()
    provider = TracerProvider(resource=make_resource({"gpu": "none", "jitlab": "0.1.0"}))
    provider.add_span_processor(SimpleSpanProcessor(mem))
    rec = R.Recorder("full")
    offset = rec.clock_offset_ns
    builder = SpanBuilder(provider.get_tracer("t"), offset, rec.string)
    th = threading.get_ident()
    root = Frame("run", "jitlab.run", t0=1_000, t1=100_000, thread=th)
    trial = Frame("trial", "trial-a", t0=2_000, t1=50_000, thread=th, parent=root, attributes={"n": 2})
    step = Frame("step", "step-0", t0=3_000, t1=4_000, thread=th, parent=trial)
    k, s, p, why = rec.intern("add_kernel"), rec.intern("default"), rec.intern("relaxed"), rec.intern("bind:TypeError")
    rec.record(k, s, p, R.HIT, 7, 3_100, 3_250, 3_600)  # in the step
    rec.record(k, s, p, R.MISS, 8, 10_000, 10_500, 20_000, 9_999_000)  # in the trial
    rec.record(k, s, p, R.FALLBACK, -1, 60_000, 60_000, 61_000, 0, why)  # after the trial: the run
    rec.record("raw_name", "scope2", "safe", R.PASSTHROUGH, -1, 70_000, 70_000, 71_000, 0, "passthrough")  # str ids
    frames = [root, trial, step]
    assert builder.add_launches(rec.drain_raw(), frames, root) == 4
    for f in reversed(frames):
        builder.end_frame(f)
    spans = mem.get_finished_spans()
    named = by_name(spans)
    launches = sorted(named[LAUNCH_SPAN], key=lambda x: x.start_time)
    run_span, trial_span, step_span = named["jitlab.run"][0], named["trial-a"][0], named["step-0"][0]
    # parents: by time on the launching thread
    assert launches[0].parent.span_id == step_span.context.span_id
    assert launches[1].parent.span_id == trial_span.context.span_id
    assert launches[2].parent.span_id == run_span.context.span_id
    assert step_span.parent.span_id == trial_span.context.span_id
    assert trial_span.parent.span_id == run_span.context.span_id and run_span.parent is None
    assert len({x.context.trace_id for x in spans}) == 1
    # explicit timestamps: perf_counter_ns + clock offset
    assert launches[0].start_time == 3_100 + offset and launches[0].end_time == 3_600 + offset
    assert run_span.start_time == 1_000 + offset and run_span.end_time == 100_000 + offset
    assert trial_span.start_time == 2_000 + offset and trial_span.end_time == 50_000 + offset
    # attributes
    a = dict(launches[0].attributes)
    assert a == {
        "jitlab.kernel": "add_kernel", "jitlab.scope": "default", "jitlab.policy": "relaxed",
        "jitlab.cache.result": "hit", "jitlab.cache.key": 7, "jitlab.arg_update.duration_ns": 150,
        "jitlab.launch.duration_ns": 350, "thread.id": th,
    }
    m = dict(launches[1].attributes)
    assert m["jitlab.cache.result"] == "miss" and m["jitlab.compile.duration_ns"] == 9_999_000
    assert isinstance(m["jitlab.compile.duration_ns"], int)
    f = dict(launches[2].attributes)
    assert f["jitlab.cache.result"] == "fallback" and f["jitlab.fallback.reason"] == "bind:TypeError"
    assert "jitlab.cache.key" not in f and "jitlab.compile.duration_ns" not in f
    pt = dict(launches[3].attributes)
    assert pt["jitlab.kernel"] == "raw_name" and pt["jitlab.cache.result"] == "passthrough"
    assert pt["jitlab.fallback.reason"] == "passthrough"
    assert dict(trial_span.attributes)["n"] == 2 and dict(trial_span.attributes)["jitlab.span.kind"] == "trial"
    # resource
    res = dict(run_span.resource.attributes)
    assert res["service.name"] == "jitlab" and res["jitlab.gpu.name"] == "none" and res["service.version"] == "0.1.0"


def test_resource_service_name_from_env(monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-bench")
    assert make_resource({})._attributes["service.name"] == "my-bench"
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=other,team=x")
    r = make_resource({})
    assert r.attributes["service.name"] == "other" and r.attributes["team"] == "x"


def test_run_full_trials_steps_threads(tmp_path):
    mem = InMemorySpanExporter()
    with Run("unit", level="full", trace_file=tmp_path / "t.jsonl", exporters=[mem], run_id="rid-1",
             attributes={"seed": 1}) as run:
        rec = R.ACTIVE.recorder
        assert rec is run.recorder and rec.level == "full"
        before = launch(rec)  # under the run, before any trial
        with run.trial("policy=safe", {"jitlab.policy": "safe", "n": 3}) as trial:
            in_trial = [launch(rec) for _ in range(3)]
            with run.step("step-0", {"i": 0}):  # run.step nests under the open trial
                in_step = launch(rec, outcome=R.MISS, key=1, compile_ns=5_000)
            # a worker thread without frames: goes under the trial open on the run's thread
            box = []
            t = threading.Thread(target=lambda: box.append(launch(rec)))
            t.start()
            t.join()
            trial.set(median_ns=123.5, p10_ns=100, p90_ns=150)
            trial.set({"jitlab.custom": "x"})
    named = by_name(mem.get_finished_spans())
    run_span = named["jitlab.run"][0]
    trial_span = named["policy=safe"][0]
    step_span = named["step-0"][0]
    launches = {s.start_time - run.clock_offset_ns: s for s in named[LAUNCH_SPAN]}
    assert len(launches) == 6
    assert launches[before].parent.span_id == run_span.context.span_id
    for t0 in in_trial + box:
        assert launches[t0].parent.span_id == trial_span.context.span_id
    assert launches[in_step].parent.span_id == step_span.context.span_id
    assert step_span.parent.span_id == trial_span.context.span_id
    assert dict(launches[box[0]].attributes)["thread.id"] != threading.get_ident()
    ta = dict(trial_span.attributes)
    assert ta["median_ns"] == 123.5 and ta["p90_ns"] == 150 and ta["jitlab.custom"] == "x" and ta["n"] == 3
    assert ta["jitlab.trace.records"] == 5 and ta["jitlab.trace.hits_seen"] == 5  # the miss went through the hit path too
    ra = dict(run_span.attributes)
    assert ra["jitlab.experiment"] == "unit" and ra["jitlab.run.id"] == "rid-1" and ra["jitlab.trace.level"] == "full"
    from jitlab.provenance import provenance

    assert ra["seed"] == 1 and ra["jitlab.recorder.dropped"] == 0
    assert ra["jitlab.provenance.gpu"] == provenance()["gpu"]  # "none" on CPU, the GPU's name on a GPU host
    assert ra["jitlab.run.interrupted"] is False
    # the run/trial/step spans cover their launches in time
    for s in named[LAUNCH_SPAN]:
        assert run_span.start_time <= s.start_time <= s.end_time <= run_span.end_time
    assert trial_span.start_time <= step_span.start_time <= step_span.end_time <= trial_span.end_time
    assert run.summary["launch_spans"] == 6 and run.summary["spans"] == 9 and R.ACTIVE.recorder is None


def test_levels(tmp_path):
    def go(level, **kw):
        mem = InMemorySpanExporter()
        with Run("lv", level=level, trace_file=False, exporters=[mem], **kw) as run:
            rec = R.ACTIVE.recorder
            with run.trial("t"):
                for _ in range(100):
                    if rec is not None:
                        launch(rec)
                if rec is not None:
                    launch(rec, outcome=R.MISS, compile_ns=1)
                    launch(rec, outcome=R.FALLBACK, reason="interpreter")
        named = by_name(mem.get_finished_spans())
        return run, named

    run, named = go("full")
    assert len(named[LAUNCH_SPAN]) == 102
    run, named = go("sampled", sample_every=10)
    assert len(named[LAUNCH_SPAN]) == 12 and run.summary["hits_seen"] == 102  # all offered at entry
    run, named = go("summary")
    res = sorted(dict(s.attributes)["jitlab.cache.result"] for s in named[LAUNCH_SPAN])
    assert res == ["fallback", "miss"]
    run, named = go("off")
    assert run.recorder is None and LAUNCH_SPAN not in named
    assert "t" in named and "jitlab.run" in named  # the structure is still recorded


def test_level_from_env(monkeypatch):
    monkeypatch.setenv("JITLAB_TRACE", "sampled")
    monkeypatch.setenv("JITLAB_TRACE_SAMPLE", "7")
    settings.reload()
    run = Run("env", trace_file=False)
    assert run.level == "sampled" and run.sample_every == 7
    assert Run("env", level="full", trace_file=False).level == "full"  # the API wins


def test_overflow_drop_counts_and_reports(tmp_path):
    mem = InMemorySpanExporter()
    with Run("ovf", level="full", trace_file=False, exporters=[mem], capacity=10, on_full="drop") as run:
        with run.trial("t") as trial:
            for _ in range(25):
                launch(R.ACTIVE.recorder)
    named = by_name(mem.get_finished_spans())
    assert len(named[LAUNCH_SPAN]) == 10
    assert dict(named["jitlab.run"][0].attributes)["jitlab.recorder.dropped"] == 15
    assert dict(named["t"][0].attributes)["jitlab.recorder.dropped"] == 15
    assert run.summary["dropped"] == 15 and trial.attributes["jitlab.recorder.dropped"] == 15


def test_overflow_flush_loses_nothing():
    mem = InMemorySpanExporter()
    with Run("ovf", level="full", trace_file=False, exporters=[mem], capacity=10, on_full="flush") as run:
        with run.trial("t"):
            starts = [launch(R.ACTIVE.recorder) for _ in range(25)]
    named = by_name(mem.get_finished_spans())
    trial_id = named["t"][0].context.span_id
    assert len(named[LAUNCH_SPAN]) == 25 and all(s.parent.span_id == trial_id for s in named[LAUNCH_SPAN])
    assert sorted(s.start_time - run.clock_offset_ns for s in named[LAUNCH_SPAN]) == sorted(starts)
    assert run.summary["dropped"] == 0 and run.summary["flushes"] == 2
    assert dict(named["jitlab.run"][0].attributes)["jitlab.recorder.flushes"] == 2


def test_keyboard_interrupt_still_exports():
    mem = InMemorySpanExporter()
    with pytest.raises(KeyboardInterrupt):
        with Run("ctrlc", level="full", trace_file=False, exporters=[mem]) as run:
            with run.trial("t"):
                for _ in range(5):
                    launch(R.ACTIVE.recorder)
                raise KeyboardInterrupt
    named = by_name(mem.get_finished_spans())
    assert len(named[LAUNCH_SPAN]) == 5
    ra = dict(named["jitlab.run"][0].attributes)
    assert ra["jitlab.run.interrupted"] is True and run.summary["interrupted"]
    assert named["t"][0].status.status_code.name == "ERROR"
    assert R.ACTIVE.recorder is None


def test_nested_runs_restore_recorder():
    outer_rec = R.Recorder("full")
    R.activate(outer_rec)
    with Run("inner", level="full", trace_file=False) as run:
        assert R.ACTIVE.recorder is run.recorder
    assert R.ACTIVE.recorder is outer_rec
