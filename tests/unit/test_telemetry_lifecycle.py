"""Tracing at process boundaries (issue 21, items 1-5): nothing lost, nothing hung.

fork while the exporter exports (a trace file and a real collector), exit and SIGTERM with the exporter
behind (recorded = written + dropped, in the final line), Ctrl-C during a Run's export, Runs closed out of
order, and flush mode's back-pressure. Child programs run as subprocesses with timeouts: a hang fails the
test instead of stalling the suite."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from jitlab.telemetry import load_traces
from jitlab.telemetry import recorder as R

from ..support import child_env

pytestmark = pytest.mark.usefixtures("clean_otel_env")

# The final line a session writes: "jitlab: tracing: recorded R = written W + dropped D (...)"
FINAL = re.compile(r"jitlab: tracing (?:run \S+ )?recorded (\d+) launch records = (\d+) written \+ (\d+) dropped")


def final_line(stderr: str) -> tuple[int, int, int]:
    m = FINAL.findall(stderr)
    assert len(m) == 1, stderr[-3000:]
    return tuple(int(x) for x in m[0])


def launches(df):
    return df[df["name"] == "jitlab.launch"]


def run_child(tmp_path, code: str, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    try:
        return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=child_env(**env), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"child hung for {timeout} s; stderr: {(e.stderr or b'')[-3000:]!r}")


# -- 1. fork while exporting -------------------------------------------------------------------------------

# One process records, and forks FORKS times, each time while its exporter thread is inside an export (the
# target's export is slowed and signals when it starts). Each child records CHILD records and exits normally
# (atexit: its final flush); the parent waits for each with a deadline (a hung child is killed and reported).
FORKER = """
    import json, os, signal, sys, threading, time
    from jitlab.telemetry import recorder as R, export as E, process as P

    FORKS, PARENT, CHILD, KIND = {forks}, {parent}, {child}, "{kind}"
    R.ensure_process_session()
    session = P.current()
    exporting = threading.Event()
    if KIND == "file":
        cls = E.LazyFileExporter
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as cls
    real_export = cls.export

    def slow_export(self, spans):  # runs where the exporter holds its lock
        exporting.set()
        time.sleep(0.02)
        return real_export(self, spans)

    cls.export = slow_export

    def record(n, tag):
        rec = R.ACTIVE.recorder
        for i in range(n):
            t = time.perf_counter_ns()
            rec.record(tag, "s", "p", R.HIT, i, t, t + 1, t + 2)

    results = []
    for i in range(FORKS):
        exporting.clear()
        record(PARENT, "parent")
        session.nudge()
        assert exporting.wait(30), "the exporter never exported"
        pid = os.fork()
        if pid == 0:  # the child: its own session; a normal exit flushes it
            try:
                record(CHILD, "child")
            finally:
                sys.stdout.flush()
            sys.exit(0)
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                results.append(os.waitstatus_to_exitcode(status))
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                results.append("hung")
                break
            time.sleep(0.01)
    print(json.dumps(results), flush=True)
"""


def check_fork_results(p: subprocess.CompletedProcess, forks: int) -> None:
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads(p.stdout.strip().splitlines()[-1])
    assert results == [0] * forks, (results, p.stderr[-3000:])


def test_fork_while_exporting_to_a_file(tmp_path):
    forks, parent, child = 20, 300, 50
    trace = tmp_path / "t.jsonl"
    p = run_child(tmp_path, FORKER.format(forks=forks, parent=parent, child=child, kind="file"), timeout=240,
                  JITLAB_TRACE="full", JITLAB_TRACE_FILE=trace, JITLAB_TRACE_FLUSH_S="30")
    check_fork_results(p, forks)
    ls = launches(load_traces(trace))
    by_pid = ls.groupby("resource.process.pid")["jitlab.kernel"].agg(lambda k: tuple(sorted(set(k))) + (len(k),))
    assert len(by_pid) == forks + 1, by_pid  # every child's spans reached the file, under its own pid
    assert sorted(by_pid) == sorted([("child", child)] * forks + [("parent", forks * parent)])  # parent lost nothing


def test_fork_while_exporting_to_a_collector(tmp_path):
    pytest.importorskip("grpc")
    from ..otlp_collector import rotel

    forks, parent, child = 20, 300, 50
    with rotel(tmp_path) as c:
        service = "forker"
        p = run_child(tmp_path, FORKER.format(forks=forks, parent=parent, child=child, kind="grpc"), timeout=240,
                      JITLAB_TRACE="full", JITLAB_TRACE_FLUSH_S="30", OTEL_EXPORTER_OTLP_ENDPOINT=c["grpc"],
                      OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_SERVICE_NAME=service)
        check_fork_results(p, forks)
        want = forks * parent + forks * child
        end = time.monotonic() + 30
        receiver = c["receiver"]
        while time.monotonic() < end and len(receiver.resources_of(service)) < want:
            time.sleep(0.1)
        time.sleep(0.3)
        with receiver.lock:
            mine = [(r["process.pid"].int_value, s) for r, s in receiver.spans
                    if r["service.name"].string_value == service and s.name == "jitlab.launch"]
    kernels: dict = {}
    for pid, s in mine:
        k = {kv.key: kv.value.string_value for kv in s.attributes}["jitlab.kernel"]
        kernels.setdefault(pid, []).append(k)
    summary = sorted((sorted(set(v))[0], len(v)) for v in kernels.values())
    assert summary == sorted([("child", child)] * forks + [("parent", forks * parent)]), (summary, p.stderr[-2000:])


# -- 2. exit and SIGTERM: recorded = written + dropped --------------------------------------------------------

# Records far more than the exporter can export in the (shortened) final flush, then ends by `how`.
FLOOD = """
    import os, signal, time
    from jitlab.telemetry import recorder as R, shutdown
    shutdown.FINAL_FLUSH_S = 1.0  # the exporter cannot finish: what it leaves must be counted
    R.ensure_process_session()
    rec = R.ACTIVE.recorder
    for i in range({n}):
        t = time.perf_counter_ns()
        rec.record("k", "s", "p", R.HIT, 0, t, t + 1, t + 2)
    print("recorded", {n}, flush=True)
    if "{how}" == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
"""


@pytest.mark.parametrize("how", ["exit", "sigterm"])
def test_exit_and_sigterm_count_every_record(tmp_path, how):
    n = 60_000
    trace = tmp_path / "t.jsonl"
    p = run_child(tmp_path, FLOOD.format(n=n, how=how), JITLAB_TRACE="full", JITLAB_TRACE_FILE=trace,
                  JITLAB_RECORDER_CAPACITY="2000", JITLAB_TRACE_FLUSH_S="0.05")
    assert p.returncode == (0 if how == "exit" else -signal.SIGTERM), p.stderr[-3000:]
    recorded, written, dropped = final_line(p.stderr)
    got = len(launches(load_traces(trace))) if trace.exists() else 0
    assert (recorded, got) == (n, written) and written + dropped == recorded, (recorded, written, dropped, got)
    assert dropped > 0  # the exporter could not keep up: the test saw the loss it checks the counting of


def test_session_summary_counts_exported_and_dropped(tmp_path):
    """In process: a session whose exporter cannot finish in the final flush counts what it left."""
    from jitlab.telemetry import process as P

    s = P.ProcessSession("full", capacity=1000, trace_file=tmp_path / "t.jsonl", flush_s=0.05)
    prev = R.activate(None)
    try:
        s.start()
        rec = s.recorder
        for _ in range(30_000):
            t = time.perf_counter_ns()
            rec.record("k", "s", "p", R.HIT, 0, t, t + 1, t + 2)
        summary = s.final_flush(0.5)
    finally:
        R.activate(prev)
    trace = tmp_path / "t.jsonl"
    got = len(launches(load_traces(trace))) if trace.exists() else 0
    assert summary["records"] == 30_000 and summary["exported_records"] == got, summary
    assert summary["exported_records"] + summary["dropped"] == summary["records"], summary


# -- 3. Ctrl-C during a Run's export ---------------------------------------------------------------------------

CTRL_C = """
    import os, signal, threading, time
    from jitlab import telemetry
    from jitlab.telemetry import recorder as R
    run = telemetry.Run("ctrlc", level="full", trace_file="t.jsonl", capacity=200_000, on_full="drop")
    try:
        with run:
            with run.trial("t"):
                rec = R.ACTIVE.recorder
                for i in range({n}):
                    t = time.perf_counter_ns()
                    rec.record("k", "s", "p", R.HIT, 0, t, t + 1, t + 2)
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C while it exports
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    print("summary", run.summary and {{k: run.summary[k] for k in ("records", "written", "dropped")}}, flush=True)
"""


def test_ctrl_c_during_run_export_writes_root_and_summary_first(tmp_path):
    n = 100_000
    p = run_child(tmp_path, CTRL_C.format(n=n), timeout=180)
    assert p.returncode == 0 and "interrupted" in p.stdout, p.stderr[-3000:]
    df = load_traces(tmp_path / "t.jsonl")
    root = df[df["name"] == "jitlab.run"]
    assert len(root) == 1 and root.iloc[0]["jitlab.recorder.records"] == n
    assert len(df[df["name"] == "t"]) == 1
    written = len(launches(df))
    assert 0 < written < n  # it was interrupted while exporting launches
    m = re.search(r"summary (\{.*\})", p.stdout)
    assert m, p.stdout
    summary = eval(m.group(1))  # noqa: S307 - our own child's dict repr
    assert summary == {"records": n, "written": written, "dropped": n - written}, (summary, written)
    recorded, w, d = final_line(p.stderr)
    assert (recorded, w, d) == (n, written, n - written)
    assert "interrupted" in p.stderr and f"wrote {written} of {n}" in p.stderr, p.stderr[-2000:]


# -- 4. runs closed out of order -------------------------------------------------------------------------------

def test_runs_closed_out_of_order_detach_exactly_themselves(tmp_path):
    from jitlab.telemetry import Run

    a = Run("a", level="full", trace_file=tmp_path / "a.jsonl").__enter__()
    b = Run("b", level="full", trace_file=tmp_path / "b.jsonl").__enter__()
    assert R.ACTIVE.recorder is b.recorder
    a.close()
    assert R.ACTIVE.recorder is b.recorder  # b is still open: it keeps recording
    b.close()
    assert R.ACTIVE.recorder is None  # a was closed first: tracing is off, not back to a
    c = Run("c", level="full", trace_file=tmp_path / "c.jsonl").__enter__()
    d = Run("d", level="full", trace_file=tmp_path / "d.jsonl").__enter__()
    d.close()
    assert R.ACTIVE.recorder is c.recorder
    c.close()
    assert R.ACTIVE.recorder is None


# -- 5. flush mode: back-pressure when the user chooses it ---------------------------------------------------

def test_flush_mode_block_loses_nothing_when_the_exporter_is_behind(tmp_path):
    from jitlab.telemetry import Run

    n = 20_000
    with Run("block", level="full", trace_file=tmp_path / "b.jsonl", capacity=1000, on_full="block") as run:
        rec = run.recorder
        for _ in range(n):
            t = time.perf_counter_ns()
            rec.record("k", "s", "p", R.HIT, 0, t, t + 1, t + 2)
    assert run.summary["dropped"] == 0 and run.summary["written"] == n, run.summary
    assert len(launches(load_traces(tmp_path / "b.jsonl"))) == n
