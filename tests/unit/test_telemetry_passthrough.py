"""Launches in pass-through mode (no GPU driver, forced) become `jitlab.launch` spans with outcome fallback."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jitlab import jitcache, telemetry

from .kernels_for_tests import add_one


def test_passthrough_launches_are_traced_as_fallbacks(monkeypatch, tmp_path, no_gpu_driver):
    launched = []
    monkeypatch.setattr(type(add_one), "__getitem__", lambda self, grid: lambda *a, **k: launched.append(grid))
    k = jitcache(add_one)
    assert k.passthrough_reason.startswith("no active GPU driver")
    mem = InMemorySpanExporter()
    with telemetry.Run("passthrough_test", level="full", trace_file=tmp_path / "t.jsonl", exporters=[mem],
                       otlp=False) as run:
        with run.trial("launches"):
            for _ in range(3):
                k[(1,)](None, None, 1)
    spans = [s for s in mem.get_finished_spans() if s.name == "jitlab.launch"]
    assert len(launched) == 3 and len(spans) == 3
    for s in spans:
        assert s.attributes["jitlab.cache.result"] == "fallback"
        assert s.attributes["jitlab.fallback.reason"] == "passthrough"
        assert s.attributes["jitlab.kernel"] == "add_one"
        assert s.parent is not None
    df = telemetry.load_traces(str(tmp_path / "t.jsonl"))
    assert (df[df["name"] == "jitlab.launch"]["jitlab.cache.result"] == "fallback").sum() == 3
