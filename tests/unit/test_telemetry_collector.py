"""End to end over loopback into a real OpenTelemetry collector, rotel (pip `rotel`), for OTLP gRPC
and HTTP/protobuf, plus `jitlab-replay` of a trace file into it, and a plain long-running program
that exports while it runs and flushes the rest at SIGTERM (the same check tests/gpu runs on a GPU).
rotel and the downstream receiver that sees what went through it: tests/otlp_collector.py. Skipped
with the reason if rotel is not installed or does not start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jitlab.telemetry import recorder as R
from jitlab.telemetry import replay as replay_mod
from jitlab.telemetry.session import Run

from ..support import free_port

grpc = pytest.importorskip("grpc")
from ..otlp_collector import live_loop_through_rotel, rotel  # noqa: E402 - after the grpc check


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with rotel(tmp_path_factory.mktemp("rotel")) as c:
        yield c


pytestmark = pytest.mark.usefixtures("clean_otel_env")


def traced_run(tmp_path, name: str, n_hits: int, **kw) -> Run:
    with Run(name, level="full", trace_file=tmp_path / f"{name}.jsonl", **kw) as run:
        rec = run.recorder
        with run.trial("policy=relaxed", {"jitlab.policy": "relaxed"}) as trial:
            t = time.perf_counter_ns()
            rec.record("add_kernel", "default", "relaxed", R.MISS, 0, t, t + 1_000, t + 2_000, 50_000_000)
            for _ in range(n_hits):
                if rec.wants_hit():
                    t = time.perf_counter_ns()
                    rec.record("add_kernel", "default", "relaxed", R.HIT, 0, t, t + 150, t + 650)
            t = time.perf_counter_ns()
            rec.record("add_kernel", "default", "relaxed", R.FALLBACK, -1, t, t, t + 9_000, 0, "bind:TypeError")
            trial.set(median_ns=650, p10_ns=600, p90_ns=700)
    return run


def run_trace_id(run: Run) -> bytes:
    return bytes.fromhex(run.trace_id)


def check_spans(got: list, n_hits: int) -> None:
    names = [s.name for _, s in got]
    assert names.count("jitlab.launch") == n_hits + 2
    assert names.count("jitlab.run") == 1 and names.count("policy=relaxed") == 1
    res = got[0][0]
    assert res["service.name"].string_value == "jitlab" and res["jitlab.torch.version"].string_value
    launches = [s for _, s in got if s.name == "jitlab.launch"]
    trial = [s for _, s in got if s.name == "policy=relaxed"][0]
    assert all(s.parent_span_id == trial.span_id for s in launches)
    attrs = [{kv.key: kv.value for kv in s.attributes} for s in launches]
    results = sorted(a["jitlab.cache.result"].string_value for a in attrs)
    assert results.count("hit") == n_hits and "miss" in results and "fallback" in results
    hit = [a for a in attrs if a["jitlab.cache.result"].string_value == "hit"][0]
    assert hit["jitlab.launch.duration_ns"].int_value == 500 and hit["jitlab.arg_update.duration_ns"].int_value == 150
    assert hit["jitlab.kernel"].string_value == "add_kernel" and hit["jitlab.policy"].string_value == "relaxed"
    miss = [a for a in attrs if a["jitlab.cache.result"].string_value == "miss"][0]
    assert miss["jitlab.compile.duration_ns"].int_value == 50_000_000
    fb = [a for a in attrs if a["jitlab.cache.result"].string_value == "fallback"][0]
    assert fb["jitlab.fallback.reason"].string_value == "bind:TypeError"
    tattrs = {kv.key: kv.value for kv in trial.attributes}
    assert tattrs["median_ns"].int_value == 650


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_run_exports_through_rotel(collector, tmp_path, monkeypatch, protocol):
    endpoint = collector["grpc"] if protocol == "grpc" else collector["http"]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    n_hits = 3000  # > 1 export batch
    run = traced_run(tmp_path, f"rotel_{protocol.replace('/', '_')}", n_hits)
    otlp = [t for t in run.summary["targets"] if t["kind"] == protocol][0]
    assert otlp["ok"] and otlp["sent"] == n_hits + 4, run.summary
    got = collector["receiver"].wait(run_trace_id(run), n_hits + 4)
    assert len(got) == n_hits + 4
    check_spans(got, n_hits)


@pytest.mark.parametrize("as_protobuf", [False, True], ids=["json", "protobuf"])
def test_replay_into_rotel(collector, tmp_path, capsys, as_protobuf):
    n_hits = 300
    run = traced_run(tmp_path, "replayed", n_hits, batch_size=100)  # file only: no OTLP env
    assert [t["kind"] for t in run.summary["targets"]] == ["file"]
    args = [str(run.trace_file), "--endpoint", collector["http"]] + (["--protobuf"] if as_protobuf else [])
    code = replay_mod.main(args)
    out = capsys.readouterr()
    assert code == 0, out.err
    # one line per export: the run and trial spans first, then 302 launch spans in batches of 100
    assert f"sent {n_hits + 4} spans in 5 requests" in out.out and "replayed 5/5 lines" in out.err
    got = collector["receiver"].wait(run_trace_id(run), n_hits + 4)
    assert len(got) == n_hits + 4
    check_spans(got, n_hits)


def test_replay_console_script_collector_unreachable(tmp_path):
    run = traced_run(tmp_path, "nowhere", 10)
    exe = Path(sys.executable).with_name("jitlab-replay")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "jitlab.telemetry.replay"]
    t0 = time.monotonic()
    p = subprocess.run(cmd + [str(run.trace_file), "--endpoint", f"http://127.0.0.1:{free_port()}", "--timeout", "2"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == replay_mod.EXIT_UNREACHABLE, (p.stdout, p.stderr)
    assert "cannot reach the collector" in p.stderr and time.monotonic() - t0 < 30
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert replay_mod.main([str(bad), "--endpoint", "http://127.0.0.1:1"]) == replay_mod.EXIT_INVALID
    assert replay_mod.main([str(tmp_path / "missing.jsonl")]) == replay_mod.EXIT_USAGE


def test_replay_url_resolution(monkeypatch):
    assert replay_mod.traces_url(None) == "http://localhost:4318/v1/traces"
    assert replay_mod.traces_url("http://h:4318") == "http://h:4318/v1/traces"
    assert replay_mod.traces_url("h:4318/") == "http://h:4318/v1/traces"
    assert replay_mod.traces_url("http://h:4318/custom") == "http://h:4318/custom"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")
    assert replay_mod.traces_url(None) == "http://localhost:4318/v1/traces"  # gRPC endpoint: not for replay
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")
    assert replay_mod.traces_url(None) == "http://c:4318/v1/traces"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_plain_program_delivers_live_through_rotel(collector, tmp_path, protocol):
    """A plain script traced by environment variables only sends its launches to the collector
    while it runs (periodic export), then the rest when it ends."""
    from .test_telemetry_process import child_env, plain

    service = f"plain-{protocol.replace('/', '-')}-{os.getpid()}"
    endpoint = collector["grpc"] if protocol == "grpc" else collector["http"]
    tail = "\n    ".join(["import pathlib", "while not pathlib.Path('stop').exists():",
                          "    add_one[(1,)](x, out, 64, BLOCK=64); time.sleep(0.01)"])
    env = child_env(JITLAB_TRACE="full", JITLAB_TRACE_FLUSH_S="0.2", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                    OTEL_EXPORTER_OTLP_PROTOCOL=protocol, OTEL_SERVICE_NAME=service)
    proc = subprocess.Popen([sys.executable, "-c", plain(2, 3, 0, tail)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    receiver = collector["receiver"]

    def mine():
        return receiver.of_service(service)

    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and sum(s.name == "jitlab.launch" for s in mine()) < 10:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        live = mine()
        assert proc.poll() is None and sum(s.name == "jitlab.launch" for s in live) >= 10  # while running
        (tmp_path / "stop").write_text("1")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    time.sleep(0.5)
    got = mine()
    steps = [s for s in got if s.name == "step"]
    step_launches = [s for s in got if s.name == "jitlab.launch" and s.parent_span_id in {t.span_id for t in steps}]
    assert len(steps) == 2 and len(step_launches) == 6
    attrs = {kv.key: kv.value for kv in step_launches[0].attributes}
    assert attrs["jitlab.cache.result"].string_value == "fallback" and attrs["jitlab.kernel"].string_value == "add_one"


def test_long_running_loop_delivers_live_then_the_rest_at_sigterm(collector, tmp_path):
    """A plain program launching a @jitcache kernel in an endless loop, traced by environment variables
    only: launch spans reach the collector's downstream end while it runs; after SIGTERM the rest, one
    span per launch. Here under the interpreter (pass-through); tests/gpu/test_tracing_gpu.py runs the
    same function on a GPU (hits through jitlab's hit path)."""
    got = live_loop_through_rotel(collector, tmp_path, gpu=False)
    assert got["device"] == "cpu" and got["live"] >= 10 and got["after_sigterm"] > 0
