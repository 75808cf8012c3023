"""Trace files (OTLP JSON lines), the loader, a collector that is down, Ctrl-C and exit flushes,
provenance."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jitlab import provenance as prov_mod
from jitlab import settings
from jitlab.telemetry import export, recorder as R
from jitlab.telemetry.load import load_traces, otlp_json_to_proto_dict, parse_line
from jitlab.telemetry.session import Run

from .conftest import free_port, subprocess_env

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("clean_otel_env")


def launches(rec, n, outcome=R.HIT):
    for _ in range(n):
        if outcome == R.HIT and not rec.wants_hit():
            continue
        t = time.perf_counter_ns()
        rec.record("add_kernel", "default", "safe", outcome, 3, t, t + 120, t + 500, 7 if outcome == R.MISS else 0)




def test_trace_file_lines_parse_as_otlp(tmp_path):
    path = tmp_path / "run.jsonl"
    mem = InMemorySpanExporter()
    with Run("fileexp", level="full", trace_file=path, exporters=[mem], batch_size=50) as run:
        with run.trial("t", {"n": 120}) as trial:
            launches(run.recorder, 119)
            launches(run.recorder, 1, R.MISS)
            trial.set(median_ns=1.5)
    lines = path.read_text().splitlines()
    assert len(lines) == 4  # the run and trial spans first, then 120 launch spans in batches of 50: a line each
    ids = set()
    n = 0
    for line in lines:
        data = trace_pb2.TracesData()
        json_format.ParseDict(otlp_json_to_proto_dict(json.loads(line)), data)  # the proto package parses it
        assert data == parse_line(line)
        for rs in data.resource_spans:
            res = {kv.key: kv.value for kv in rs.resource.attributes}
            assert res["service.name"].string_value == "jitlab"
            assert res["jitlab.gpu.name"].string_value
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    n += 1
                    assert len(sp.trace_id) == 16 and len(sp.span_id) == 8
                    ids.add(sp.span_id)
                    assert sp.end_time_unix_nano >= sp.start_time_unix_nano > 1_600_000_000 * 10**9
    assert n == 122 == run.summary["spans"]
    # the IDs in the file are the SDK's IDs (hex in OTLP/JSON, bytes in the proto)
    assert ids == {s.context.span_id.to_bytes(8, "big") for s in mem.get_finished_spans()}


def _committed_h200_traces() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "--", "traces/*.jsonl", "traces/**/*.jsonl"], cwd=REPO,
                             capture_output=True, text=True, timeout=30, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({REPO / f for f in out if (REPO / f).is_file()})


@pytest.mark.parametrize("path", _committed_h200_traces() or [pytest.param(None, marks=pytest.mark.skip(
    "no committed traces (not a git checkout)"))], ids=lambda p: p.name if p else "none")
def test_committed_h200_trace_parses_as_otlp_and_loads(path):
    """Each committed trace: its lines parse as OTLP TracesData with the proto package (the first
    lines of the big ones), the loader reads it whole, and it says where it was recorded."""
    big = path.stat().st_size > 2_000_000
    with path.open() as f:
        for i, line in enumerate(f):
            if big and i >= 3:
                break
            data = trace_pb2.TracesData()
            json_format.ParseDict(otlp_json_to_proto_dict(json.loads(line)), data)
            assert data.resource_spans
    df = load_traces(path)
    run = df[df["name"] == "jitlab.run"]
    # an experiment's trace has one run span; a plain program's (process session) has launches and steps
    assert (len(run) == 1 or (df["name"] == "jitlab.launch").any()) and len(df) > 10
    res = (run if len(run) else df).iloc[0]
    assert "H200" in str(res["resource.jitlab.gpu.name"]) and res["resource.jitlab.git.commit"]


def test_load_traces_dataframe(tmp_path):
    for i in range(2):
        with Run("loader", level="full", trace_file=tmp_path / f"r{i}.jsonl") as run:
            with run.trial("trial", {"i": i}) as trial:
                launches(run.recorder, 4)
                launches(run.recorder, 1, R.MISS)
                trial.set(p50_ns=100 + i)
    df = load_traces(str(tmp_path / "*.jsonl"))
    assert len(df) == 2 * (1 + 1 + 5)
    for col in ("trace_id", "span_id", "parent_id", "name", "start_ns", "end_ns", "duration_ns", "service",
                "jitlab.kernel", "jitlab.cache.result", "jitlab.launch.duration_ns", "resource.service.name",
                "resource.jitlab.torch.version"):
        assert col in df.columns, col
    assert str(df["start_ns"].dtype) == "int64" and (df["duration_ns"] == df["end_ns"] - df["start_ns"]).all()
    la = df[df["name"] == "jitlab.launch"]
    assert set(la["jitlab.launch.duration_ns"]) == {380} and set(la["jitlab.arg_update.duration_ns"]) == {120}
    assert str(df["jitlab.launch.duration_ns"].dtype) == "Int64"  # nullable int: exact ns, NA on other spans
    assert (df["service"] == "jitlab").all() and df["trace_id"].nunique() == 2
    # every launch's parent is its run's trial span
    trials = df[df["name"] == "trial"].set_index("span_id")
    assert la["parent_id"].isin(trials.index).all()
    assert df[df["name"] == "jitlab.run"]["parent_id"].isna().all()
    assert sorted(df[df["name"] == "trial"]["p50_ns"]) == [100, 101]
    assert len(load_traces(tmp_path)) == len(df) and len(load_traces([tmp_path / "r0.jsonl"])) == 7


def test_default_trace_file_name_and_env_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Run("exp_a", level="off") as run:
        pass
    assert re.fullmatch(r"traces/exp_a-\d{8}T\d{6}Z-[0-9a-f]{6}\.jsonl", str(run.trace_file))
    assert (tmp_path / run.trace_file).is_file() and run.summary["spans"] == 1
    monkeypatch.setenv("JITLAB_TRACE_FILE", str(tmp_path / "all-{experiment}.jsonl"))
    settings.reload()
    with Run("exp_b", level="off") as run:
        pass
    assert run.trace_file == tmp_path / "all-exp_b.jsonl" and run.trace_file.is_file()


def test_otlp_config_from_env(monkeypatch):
    assert export.otlp_config() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4317")
    c = export.otlp_config()
    assert (c.protocol, c.endpoint, c.timeout_s) == ("grpc", "http://h:4317", export.DEFAULT_TIMEOUT_S)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318/")
    assert export.otlp_config().endpoint == "http://h:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/custom")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "7")
    c = export.otlp_config()
    assert c.endpoint == "http://t:9/custom" and c.timeout_s is None  # the SDK reads the env timeout
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert export.otlp_config() is None


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_down_warns_once_and_writes_file(tmp_path, monkeypatch, caplog, protocol):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    caplog.set_level(logging.WARNING)
    summaries, elapsed = [], []
    for i in range(2):  # two runs, several batches each: still one warning
        path = tmp_path / f"down{i}.jsonl"
        t0 = time.perf_counter()
        with Run("down", level="full", trace_file=path, batch_size=40) as run:
            t_in = time.perf_counter_ns()
            launches(run.recorder, 200)
            assert time.perf_counter_ns() - t_in < 2e9  # launches never wait for the collector
        elapsed.append(time.perf_counter() - t0)
        summaries.append(run.summary)
        assert len(path.read_text().splitlines()) == 6 and len(load_traces(path)) == 201
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "127.0.0.1" in warnings[0].getMessage() and "trace file is still written" in warnings[0].getMessage()
    for s in summaries:
        otlp = [t for t in s["targets"] if t["kind"] == protocol][0]
        fil = [t for t in s["targets"] if t["kind"] == "file"][0]
        assert not otlp["ok"] and otlp["sent"] == 0 and otlp["unsent"] == 201
        assert fil["ok"] and fil["sent"] == 201
    assert max(elapsed) < 8.0, elapsed  # short default timeout, no retry after the first failure


def _child(code: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in subprocess_env().items() if not k.startswith(("OTEL_", "JITLAB_"))}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, **kw)


def test_real_ctrl_c_flushes(tmp_path):
    """SIGINT while launches are being recorded: the trace file still gets everything recorded."""
    code = """
        import os, signal, time
        from jitlab.telemetry import Run, recorder as R
        with Run("sigint", level="full", trace_file="t.jsonl") as run:
            with run.trial("t"):
                rec = R.ACTIVE.recorder
                for i in range(1000):
                    t = time.perf_counter_ns()
                    rec.record("k", "s", "p", R.HIT, 0, t, t, t + 1)
                    if i == 499:
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(5)  # interrupted here
        """
    p = _child(code, tmp_path)
    assert p.returncode != 0 and "KeyboardInterrupt" in p.stderr
    df = load_traces(tmp_path / "t.jsonl")
    assert (df["name"] == "jitlab.launch").sum() == 500
    run = df[df["name"] == "jitlab.run"].iloc[0]
    assert bool(run["jitlab.run.interrupted"]) and run["status_code"] == 2


def test_atexit_flushes_unclosed_run(tmp_path):
    code = """
        import time
        from jitlab.telemetry import Run, recorder as R
        run = Run("atexit", level="full", trace_file="t.jsonl").__enter__()
        t = time.perf_counter_ns()
        R.ACTIVE.recorder.record("k", "s", "p", R.MISS, 0, t, t, t + 1, 5)
        """
    p = _child(code, tmp_path)
    assert p.returncode == 0, p.stderr
    df = load_traces(tmp_path / "t.jsonl")
    assert sorted(df["name"]) == ["jitlab.launch", "jitlab.run"]
    assert "not closed" in df[df["name"] == "jitlab.run"]["status_message"].iloc[0]


def test_provenance_cpu_cached_and_safe(monkeypatch):
    p = prov_mod.provenance()
    for k in ("gpu", "driver", "torch", "triton", "python", "jitlab", "jitlab_commit", "hostname", "date",
              "cuda_available", "cpu", "cpu_count"):
        assert k in p and p[k] not in (None, ""), k
    assert p["cpu"] != "unknown" and p["cpu_count"] >= 1  # the host CPU: host overhead depends on it
    import torch

    if not torch.cuda.is_available():
        assert p["gpu"] == "none" and p["driver"] == "none" and p["cuda_available"] is False
    assert p["torch"] == torch.__version__
    assert re.fullmatch(r"[0-9a-f]{4,40}(\+dirty)?|unknown", p["jitlab_commit"])
    assert p["date"].endswith("+00:00")
    t0 = time.perf_counter()
    prov_mod.provenance()
    assert time.perf_counter() - t0 < 0.01  # cached
    # never raises, even when every probe fails
    prov_mod.clear_cache()
    try:
        monkeypatch.setattr(prov_mod, "_cuda", lambda: 1 / 0)
        monkeypatch.setattr(prov_mod, "_git_commit", lambda: 1 / 0)
        monkeypatch.setattr(prov_mod, "_torch_version", lambda: 1 / 0)
        q = prov_mod.provenance()
        assert q["gpu"] == "none" and q["jitlab_commit"] == "unknown" and q["torch"] == "unknown"
    finally:
        prov_mod.clear_cache()


def test_off_level_is_a_single_branch_on_the_hot_path():
    with Run("off", level="off", trace_file=False) as run:
        assert R.ACTIVE.recorder is None and run.recorder is None
        with run.trial("t") as t:
            t.set(median_ns=1)
    assert run.summary["launch_spans"] == 0 and run.summary["spans"] == 2
