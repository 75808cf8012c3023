"""Tracing in any process (jitlab.telemetry.process): env-var-only tracing of a plain script, the
exporter thread, exit paths (atexit, SIGTERM, SIGINT, a program's own handler), a dead collector,
and clear failures for bad settings and unwritable trace files."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from jitlab import record_layout as L
from jitlab import settings
from jitlab.telemetry import load_traces
from jitlab.telemetry import process as P
from jitlab.telemetry import recorder as R

from ..support import ADD_ONE, child_env

REPO = Path(__file__).resolve().parents[2]

# A plain program: no tracing code but one span per step; pass-through under the interpreter.
PLAIN = """
    import os, signal, sys, time
    import torch, triton, triton.language as tl
    from jitlab import jitcache, telemetry

    {kernel}
    x = torch.arange(64, dtype=torch.float32); out = torch.empty_like(x)
    STEPS, PER_STEP, OUTSIDE = {steps}, {per_step}, {outside}
    for step in range(STEPS):
        with telemetry.span("step", step=step):
            for _ in range(PER_STEP):
                add_one[(1,)](x, out, 64, BLOCK=64)
    for _ in range(OUTSIDE):
        add_one[(1,)](x, out, 64, BLOCK=64)
    assert bool((out == x + 1).all())
    print("launched", STEPS * PER_STEP + OUTSIDE, flush=True)
    {tail}
"""


def plain(steps=3, per_step=4, outside=2, tail="") -> str:
    return textwrap.dedent(PLAIN.format(steps=steps, per_step=per_step, outside=outside, tail=tail,
                                        kernel=textwrap.indent(ADD_ONE, "    ")[4:]))


def run_plain(tmp_path, code: str, timeout=120, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=child_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def launches(df):
    return df[df["name"] == "jitlab.launch"]


def test_plain_script_env_vars_only_writes_one_span_per_launch(tmp_path):
    trace = tmp_path / "t.jsonl"
    p = run_plain(tmp_path, plain(3, 4, 2), JITLAB_TRACE="full", JITLAB_TRACE_FILE=trace)
    assert p.returncode == 0, p.stderr
    df = load_traces(trace)
    ls = launches(df)
    assert len(ls) == 3 * 4 + 2
    assert set(ls["jitlab.cache.result"]) == {"fallback"} and set(ls["jitlab.fallback.reason"]) == {"passthrough"}
    assert set(ls["jitlab.kernel"]) == {"add_one"} and (ls["jitlab.launch.duration_ns"] > 0).all()
    steps = df[df["name"] == "step"]
    assert sorted(steps["step"]) == [0, 1, 2]
    by_step = ls["parent_id"].value_counts()
    assert all(by_step.get(sid) == 4 for sid in steps["span_id"])  # nested under their step
    outside = ls[~ls["parent_id"].isin(steps["span_id"])]
    assert len(outside) == 2 and set(df.set_index("span_id").loc[outside["parent_id"], "name"]) == {"jitlab.launches"}
    for sid, st in steps.set_index("span_id").iterrows():  # and inside it in time
        mine = ls[ls["parent_id"] == sid]
        assert (mine["start_ns"] >= st["start_ns"]).all() and (mine["end_ns"] <= st["end_ns"]).all()
    res = df.iloc[0]
    assert res["resource.service.name"] == "jitlab" and res["resource.jitlab.torch.version"]
    assert res["resource.jitlab.triton.version"] and "resource.jitlab.gpu.name" in df.columns
    assert isinstance(res["resource.jitlab.clock.offset_ns"], (int,)) or res["resource.jitlab.clock.offset_ns"] > 0


def test_tracing_off_or_no_target_writes_nothing_and_says_so(tmp_path):
    p = run_plain(tmp_path, plain(1, 2, 0))  # JITLAB_TRACE unset: no session, no file
    assert p.returncode == 0 and not list(tmp_path.iterdir()), p.stderr
    p = run_plain(tmp_path, plain(1, 2, 0), JITLAB_TRACE="full")  # on, but nowhere to go: one warning
    assert p.returncode == 0, p.stderr
    assert "recorded 2 launch records = 0 written + 2 dropped (2 with nowhere to go" in p.stderr
    assert "JITLAB_TRACE_FILE" in p.stderr


def test_long_running_loop_exports_while_running_then_sigterm_flushes(tmp_path):
    trace = tmp_path / "t.jsonl"
    tail = "\n    ".join([
        "import pathlib; pathlib.Path('ready').write_text('1')",
        "n = 0",
        "while True:",
        "    add_one[(1,)](x, out, 64, BLOCK=64); n += 1",
        "    pathlib.Path('count.tmp').write_text(str(n)); pathlib.Path('count.tmp').replace('count')",  # atomic: SIGTERM may land mid-write
        "    time.sleep(0.005)",
    ])
    proc = subprocess.Popen([sys.executable, "-c", plain(1, 1, 0, tail)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=child_env(JITLAB_TRACE="full", JITLAB_TRACE_FILE=trace, JITLAB_TRACE_FLUSH_S="0.2"))
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and not (trace.exists() and len(launches(load_traces(trace))) >= 5):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert proc.poll() is None  # exported while still running
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGTERM, err  # the default disposition still ends it, after the flush
    n = int((tmp_path / "count").read_text())
    assert len(launches(load_traces(trace))) in (n + 1, n + 2)  # +1: the span step; +1: a launch in flight


@pytest.mark.parametrize("how", ["sigint", "own_handler", "atexit"])
def test_exit_paths_flush_everything(tmp_path, how):
    trace = tmp_path / "t.jsonl"
    tail = {
        "sigint": "os.kill(os.getpid(), signal.SIGINT); time.sleep(10)",
        # a program's own SIGTERM handler, installed before jitlab's session started, still runs
        "own_handler": "os.kill(os.getpid(), signal.SIGTERM); time.sleep(10)",
        "atexit": "",
    }[how]
    code = plain(2, 3, 1, tail)
    if how == "own_handler":
        code = ("import signal, sys\nsignal.signal(signal.SIGTERM, lambda s, f: (print('own handler ran'), "
                "sys.exit(3)))\n") + code
    p = run_plain(tmp_path, code, JITLAB_TRACE="full", JITLAB_TRACE_FILE=trace, JITLAB_TRACE_FLUSH_S="30")
    if how == "sigint":
        assert p.returncode != 0 and "KeyboardInterrupt" in p.stderr
    elif how == "own_handler":
        assert p.returncode == 3 and "own handler ran" in p.stdout, p.stderr
    else:
        assert p.returncode == 0, p.stderr
    assert len(launches(load_traces(trace))) == 2 * 3 + 1


class _Blackhole:
    """A TCP server that accepts connections and never answers: a collector that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list = []
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


def test_dead_collector_never_slows_a_launch(clean_otel_env, monkeypatch, caplog):
    """A collector that accepts and never answers: exports stall on the exporter thread for the OTLP
    timeout, launches never wait; what could not be queued is counted, nothing vanishes."""
    hole = _Blackhole()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{hole.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "4")
    caplog.set_level(logging.WARNING)
    s = P.ProcessSession("full", capacity=200, flush_s=None, max_pending=1)
    prev = R.activate(None)
    try:
        s.start()
        rec = s.recorder
        n, worst = 20_000, 0
        t_all = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter_ns()
            rec.record("k", "s", "p", R.HIT, 0, t0, t0, t0 + 1)
            worst = max(worst, time.perf_counter_ns() - t0)
        elapsed = time.perf_counter() - t_all
        summary = s.final_flush(30)
    finally:
        R.activate(prev)
        hole.close()
    otlp = [t for t in summary["targets"] if t["kind"] == "http/protobuf"][0]
    diag = (worst, elapsed, rec.recorded, rec.dropped, otlp)
    assert worst < 50e6, diag  # one launch never waits for the export (which hangs for the 4 s timeout)
    assert rec.recorded + rec.dropped == n, diag
    assert not otlp["ok"] and otlp["sent"] == 0 and otlp["seconds"] >= 3.5, diag
    if elapsed < 3.5:  # the launches ran while the first export hung: the backlog was dropped, and said so
        assert rec.dropped > 0 and any("dropped" in r.getMessage() for r in caplog.records), diag


def test_span_is_a_noop_when_off_and_a_step_inside_a_run(clean_otel_env, tmp_path):
    from jitlab import telemetry

    s = telemetry.span("nothing", a=1)
    with s as h:
        h.set(b=2)
    assert P.current() is None
    with telemetry.Run("spanrun", level="full", trace_file=tmp_path / "r.jsonl") as run:
        with telemetry.span("decode", attributes={"llm.batch": 4}, step=1) as st:
            st.set(tokens=4)
    df = load_traces(tmp_path / "r.jsonl")
    row = df[df["name"] == "decode"].iloc[0]
    assert row["llm.batch"] == 4 and row["step"] == 1 and row["tokens"] == 4 and row["jitlab.span.kind"] == "step"
    assert run.summary["trace_file"] == str(tmp_path / "r.jsonl")


def test_bad_setting_is_one_line_where_used_never_at_import_nor_when_disabled(tmp_path):
    code = "import jitlab; print('imported')"
    p = run_plain(tmp_path, code, JITLAB_TRACE="loud")
    assert p.returncode == 0 and "imported" in p.stdout, p.stderr
    p = run_plain(tmp_path, plain(1, 1, 0), JITLAB_TRACE="loud")
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert "JITLAB_TRACE='loud' is not valid; valid: off|summary|sampled|full" in last
    p = run_plain(tmp_path, plain(1, 1, 0), JITLAB_TRACE="loud", JITLAB_VERIFY="often", JITLAB_DISABLE="1")
    assert p.returncode == 0, p.stderr


def test_settings_values_and_clamp(monkeypatch, caplog):
    for k in ("JITLAB_VERIFY", "JITLAB_TRACE_SAMPLE", "JITLAB_TRACE_FLUSH_S", "JITLAB_LAUNCHER", "JITLAB_COMMIT",
              "JITLAB_CACHE_DIR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("JITLAB_RECORDER_CAPACITY", str(2**63))
    s = settings.reload()
    try:
        with caplog.at_level(logging.WARNING):
            assert s.recorder_capacity == settings.RECORDER_CAPACITY_MAX
        assert "clamped" in caplog.text
        monkeypatch.setenv("JITLAB_RECORDER_CAPACITY", "3")
        assert settings.reload().recorder_capacity == settings.RECORDER_CAPACITY_MIN
        for var, bad, attr in [("JITLAB_TRACE_FLUSH_S", "0", "trace_flush_s"), ("JITLAB_VERIFY", "-1", "verify"),
                               ("JITLAB_LAUNCHER", "cuda", "launcher"), ("JITLAB_TRACE_SAMPLE", "x", "trace_sample")]:
            monkeypatch.setenv(var, bad)
            with pytest.raises(settings.SettingError, match=f"^{var}='{bad}' is not valid; valid: "):
                getattr(settings.reload(), attr)
            monkeypatch.delenv(var)
        s = settings.reload()
        assert [getattr(s, k) for k in ("disable", "verify", "trace", "trace_sample", "trace_file", "launcher")] == \
            [False, 0, "off", 100, None, "auto"]
        assert s.given("trace") is None and s.cache_dir and s.commit is None and s.logs == ""
    finally:
        monkeypatch.delenv("JITLAB_RECORDER_CAPACITY")
        settings.reload()
    # a recorder asked for 2**63 records keeps working (clamped; its hit block has HIT_BLOCK_ROWS rows)
    rec = R.Recorder("full", capacity=2**63)
    assert rec.capacity == settings.RECORDER_CAPACITY_MAX and len(rec.hits[0]) == R.HIT_BLOCK_ROWS
    append, _ = R.hit_appender()
    assert append(rec.hits, L.head("k", "s", "p", R.HIT, 0), 1, 2) == 0 and rec.buffered == 1


def test_run_sigterm_writes_the_trace_and_exits_143(tmp_path):
    code = textwrap.dedent("""
        import os, signal, time
        from jitlab.telemetry import Run, recorder as R
        with Run("sigterm", level="full", trace_file="t.jsonl") as run:
            with run.trial("t"):
                rec = R.ACTIVE.recorder
                for i in range(300):
                    t = time.perf_counter_ns()
                    rec.record("k", "s", "p", R.HIT, 0, t, t, t + 1)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)
        """)
    p = run_plain(tmp_path, code)
    assert p.returncode == 143, p.stderr
    df = load_traces(tmp_path / "t.jsonl")
    assert len(launches(df)) == 300
    assert bool(df[df["name"] == "jitlab.run"].iloc[0]["jitlab.run.interrupted"])


def test_run_unwritable_trace_file_raises_before_any_work(tmp_path):
    from jitlab.telemetry import Run, TraceTargetError

    (tmp_path / "dir.jsonl").mkdir()
    for bad, why in [(tmp_path / "dir.jsonl", "it is a directory"), ("/proc/nope/t.jsonl", "No such file")]:
        with pytest.raises(TraceTargetError, match=f"cannot write trace file {bad}: {why}"):
            Run("x", level="full", trace_file=bad).__enter__()
    assert R.ACTIVE.recorder is None


def test_library_session_unwritable_file_warns_once_and_keeps_running(tmp_path):
    p = run_plain(tmp_path, plain(1, 3, 0), JITLAB_TRACE="full", JITLAB_TRACE_FILE="/proc/nope/t.jsonl")
    assert p.returncode == 0 and "launched 3" in p.stdout
    assert p.stderr.count("cannot write trace file /proc/nope/t.jsonl") == 1, p.stderr


def test_experiment_honours_env_and_flags_override(tmp_path):
    def e2e(*args, **env):
        return subprocess.run([sys.executable, "-m", "experiments.e2e_decode", "--quick", "--cpu", *args],
                              cwd=REPO, env=child_env(**env), capture_output=True, text=True, timeout=300)

    t = tmp_path / "env.jsonl"
    p = e2e(JITLAB_TRACE="summary", JITLAB_TRACE_FILE=t)
    assert p.returncode == 0, p.stderr
    run = load_traces(t).query("name == 'jitlab.run'").iloc[0]
    assert run["jitlab.trace.level"] == "summary"
    f = tmp_path / "flag.jsonl"
    p = e2e("--trace", "off", "--trace-file", str(f), JITLAB_TRACE="summary", JITLAB_TRACE_FILE=t)
    assert p.returncode == 0, p.stderr
    assert load_traces(f).query("name == 'jitlab.run'").iloc[0]["jitlab.trace.level"] == "off"
    p = e2e(JITLAB_TRACE_FILE="/proc/nope/t.jsonl")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == \
        "e2e_decode: cannot write trace file /proc/nope/t.jsonl: No such file or directory"
    assert "trace: /proc/nope" not in p.stdout
    p = e2e(JITLAB_TRACE="loud")
    assert p.returncode == 2 and "Traceback" not in p.stderr  # one line: the variable, the value, the choices
    assert p.stderr.strip().splitlines()[-1].startswith("e2e_decode: JITLAB_TRACE='loud'")
