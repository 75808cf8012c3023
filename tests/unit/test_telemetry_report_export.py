"""`python -m jitlab.bench.report` and `jitlab-export --chrome` on every kind of jitlab trace
(committed H200 runs in traces/ and traces/focused/, a CPU-demo e2e run, a plain program's
process-session trace) and on bad inputs; the Chrome trace-event schema; the torch.profiler merge
with synthetic profiles on both clocks; the example script on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jitlab.bench import report
from jitlab.telemetry import chrome, load_traces

from .test_telemetry_process import REPO, child_env, plain

COMMITTED = sorted(str(p.relative_to(REPO)) for p in (REPO / "traces").glob("**/*.jsonl")
                   if "cpu-demo" not in p.parts)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """Traces made here: a plain program's (process session) and a CPU-demo e2e run."""
    d = tmp_path_factory.mktemp("made")
    out = {"process": d / "process.jsonl", "e2e_cpu": d / "e2e_cpu.jsonl"}
    p = subprocess.run([sys.executable, "-c", plain(3, 4, 2)], cwd=d, capture_output=True, text=True, timeout=120,
                       env=child_env(JITLAB_TRACE="full", JITLAB_TRACE_FILE=out["process"]))
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "experiments.e2e_decode", "--quick", "--cpu", "--trace-file",
                        str(out["e2e_cpu"])], cwd=REPO, capture_output=True, text=True, timeout=300, env=child_env())
    assert p.returncode == 0, p.stderr
    return {k: str(v) for k, v in out.items()}


def all_traces(made) -> list[str]:
    return [str(REPO / p) for p in COMMITTED] + list(made.values())


def test_committed_traces_exist():
    assert any("focused" in p for p in COMMITTED) and any("e2e_decode" in p for p in COMMITTED)
    assert any(p.startswith("traces/launch_overhead") for p in COMMITTED)


def test_report_on_every_trace_kind(made, capsys):
    for path in all_traces(made):
        assert report.main([path]) == 0, path
        out = capsys.readouterr().out
        name = Path(path).name
        assert "|---" in out, path
        if name.startswith("launch_overhead"):
            assert "| workload | variant | µs/launch" in out and "CPU demo" not in out
        elif name.startswith("e2e_decode"):
            assert "| mode | B=" in out and "eager_stock" in out and "CPU demo" not in out
    assert report.main([made["e2e_cpu"]]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"**{report.CPU_DEMO}**") and "a tiny model" in out and "32 layers" not in out
    assert "| eager_stock |" in out and "/ -)" in out  # no GPU time in a CPU demo: shown as "-", no KeyError
    assert report.main([made["process"]]) == 0
    out = capsys.readouterr().out
    assert report.CPU_DEMO in out and "| add_one | global | safe | 14 | 0 | 0 | passthrough: 14 |" in out


def test_report_per_kernel_table_numbers(made):
    df = load_traces(made["process"])
    v = sorted(df[df["name"] == "jitlab.launch"]["jitlab.launch.duration_ns"] / 1e3)
    row = [line for line in report.kernels_markdown(made["process"]).splitlines() if line.startswith("| add_one")][0]
    p50, p90 = (float(x) for x in row.split("|")[9].split("/"))
    assert p50 == pytest.approx(v[round(0.5 * (len(v) - 1))], abs=0.006)  # nearest-rank percentiles, in µs
    assert p90 == pytest.approx(v[round(0.9 * (len(v) - 1))], abs=0.006) and p90 >= p50


def test_report_e2e_slice_errors(capsys):
    e2e = str(REPO / [p for p in COMMITTED if Path(p).name.startswith("e2e_decode")][0])
    assert report.main([e2e, "--layers", "3", "--context", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no decode rows at 3 layers, context 5; this run has --layers" in err


@pytest.mark.parametrize("kind", ["directory", "missing", "empty", "not_otlp", "torch_profile", "binary"])
def test_report_and_export_bad_inputs_one_line_nonzero(tmp_path, capsys, kind):
    path = {"directory": tmp_path, "missing": tmp_path / "missing.jsonl", "empty": tmp_path / "empty.jsonl",
            "not_otlp": tmp_path / "other.json", "torch_profile": tmp_path / "profile.json",
            "binary": tmp_path / "bin.jsonl"}[kind]
    if kind == "empty":
        path.write_text("")
    elif kind == "not_otlp":
        path.write_text('{"a": 1}\n')
    elif kind == "torch_profile":
        path.write_text(json.dumps({"traceEvents": [{"ph": "X", "name": "x", "ts": 1, "dur": 1, "pid": 1, "tid": 1}]},
                                   indent=1))
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00\x01" * 10)
    assert report.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"cannot summarize {path}: "), err
    assert chrome.main([str(path), "--chrome", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("jitlab-export: "), err
    assert not (tmp_path / "out.json").exists()


def check_chrome_schema(doc: dict) -> list[dict]:
    """Chrome trace-event format for jitlab's events: ph/pid/tid (ints)/ts; complete events a dur (µs,
    numbers); each thread named by a thread_name metadata event, the process by process_name (a
    merged profile's own events are only checked for a known phase). Returns all X events."""
    evs = doc["traceEvents"]
    assert isinstance(evs, list) and evs
    ours = [e for e in evs if str(e.get("cat", "")).startswith("jitlab")
            or (e["ph"] == "M" and "jitlab" in str(e.get("args", {}).get("name", "")))]
    assert ours
    for e in evs:
        assert e["ph"] in ("X", "B", "E", "M", "i", "I", "s", "f", "t", "C"), e
    for e in ours:
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int), e
        assert isinstance(e["ts"], (int, float)), e
    xs = [e for e in evs if e["ph"] == "X"]
    for e in ours:
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0 and isinstance(e["name"], str), e
    named = {(e["pid"], e["tid"]) for e in ours if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in ours if e["ph"] == "X"} <= named
    assert any(e["ph"] == "M" and e["name"] == "process_name" for e in ours)
    return xs


def check_nesting(xs: list[dict], spans: list[dict]) -> int:
    """Each launch event lies, on its own track, inside the event of the span that is its parent
    (when the parent is on the same thread): what Perfetto draws as nesting. Returns how many."""
    ids = {s["span_id"]: s for s in spans}
    thread = chrome._threads(spans)  # frames of traces older than frame thread.id inherit the run's thread
    n = 0
    for s in spans:
        if s["name"] != "jitlab.launch":
            continue
        parent = ids.get(s.get("parent_id") or "")
        if parent is None or thread[parent["span_id"]] != thread[s["span_id"]] or parent.get("jitlab.span.kind") == "batch":
            continue
        d0 = (s["start_ns"] - parent["start_ns"]) / 1e3
        d1 = (parent["end_ns"] - s["end_ns"]) / 1e3
        assert d0 >= -0.002 and d1 >= -0.002  # in µs, rounded to ns
        n += 1
    return n


def test_chrome_export_every_trace(made, tmp_path, capsys):
    from jitlab.telemetry.load import iter_spans

    for path in all_traces(made):
        out = tmp_path / (Path(path).stem + ".chrome.json")
        assert chrome.main([path, "--chrome", str(out)]) == 0, capsys.readouterr().err
        doc = json.loads(out.read_text())
        xs = check_chrome_schema(doc)
        spans = list(iter_spans(path))
        assert len(xs) == sum(1 for s in spans if s.get("jitlab.span.kind") != "batch")
        # µs: a launch event's dur is its span's duration_ns / 1000
        launch = [s for s in spans if s["name"] == "jitlab.launch"][0]
        ev = [e for e in xs if e["name"] == "jitlab.launch" and e["args"].get("jitlab.launch.duration_ns")
              == launch.get("jitlab.launch.duration_ns") and e["args"].get("thread.id") == launch.get("thread.id")]
        assert any(abs(e["dur"] - launch["duration_ns"] / 1e3) < 0.002 for e in ev)
        assert check_nesting(xs, spans) > 0
        # within one track, complete events are properly nested (no partial overlap)
        for tid in {e["tid"] for e in xs}:
            stack: list = []
            for e in sorted((e for e in xs if e["tid"] == tid), key=lambda e: (e["ts"], -e["dur"])):
                while stack and stack[-1] <= e["ts"] + 1e-3:
                    stack.pop()
                assert not stack or e["ts"] + e["dur"] <= stack[-1] + 2e-3, (path, e)
                stack.append(e["ts"] + e["dur"])
    capsys.readouterr()


def synthetic_profile(spans: list[dict], clock: str, offset: int) -> tuple[dict, int]:
    """A torch.profiler-shaped Chrome trace with one cuLaunchKernel call in the middle of each launch
    span, on the Unix clock (ts relative to baseTimeNanoseconds, as Kineto writes) or the monotonic one."""
    launches = [s for s in spans if s["name"] == "jitlab.launch"]
    shift = 0 if clock == "unix" else offset
    base = (min(s["start_ns"] for s in spans) - shift) // 10**9 * 10**9 if clock == "unix" else 0
    evs = [{"ph": "M", "name": "process_name", "pid": 7, "tid": 0, "args": {"name": "python"}}]
    for s in launches:
        mid = (s["start_ns"] + s["end_ns"]) // 2 - shift - base
        evs.append({"ph": "X", "cat": "cuda_driver", "name": "cuLaunchKernel", "pid": 7, "tid": 7,
                    "ts": round((mid - 500) / 1e3, 3), "dur": 1.0})
        evs.append({"ph": "X", "cat": "kernel", "name": "add_one_0d1d", "pid": 0, "tid": 7,
                    "ts": round((mid + 2000) / 1e3, 3), "dur": 3.0})
    doc = {"schemaVersion": 1, "traceEvents": evs, "displayTimeUnit": "ms"}
    if clock == "unix":
        doc["baseTimeNanoseconds"] = base
    return doc, len(launches)


@pytest.mark.parametrize("clock", ["unix", "monotonic"])
def test_merge_with_torch_profile_aligns_on_one_clock(made, tmp_path, capsys, clock):
    from jitlab.telemetry.load import iter_spans

    spans = list(iter_spans(made["process"]))
    offset = spans[0]["resource.jitlab.clock.offset_ns"]
    doc, n = synthetic_profile(spans, clock, offset)
    prof = tmp_path / "profile.json"
    prof.write_text(json.dumps(doc))
    out = tmp_path / "merged.json"
    assert chrome.main([made["process"], "--chrome", str(out), "--torch-profile", str(prof)]) == 0
    line = capsys.readouterr().out
    assert f"clock {clock}; {n} of {n} torch launch calls lie inside a jitlab.launch span" in line, line
    merged = json.loads(out.read_text())
    xs = check_chrome_schema(merged)
    assert merged.get("baseTimeNanoseconds") == doc.get("baseTimeNanoseconds")
    calls = sorted(e["ts"] for e in xs if e["name"] == "cuLaunchKernel")
    ours = sorted((e["ts"], e["ts"] + e["dur"]) for e in xs if e["name"] == "jitlab.launch")
    assert len(calls) == len(ours) == n and all(a <= c <= b for c, (a, b) in zip(calls, ours))
    assert merged["otherData"]["jitlab"]["clock"] == clock
    # the wrong clock forced: nothing lines up (the check can fail)
    wrong = "monotonic" if clock == "unix" else "unix"
    assert chrome.main([made["process"], "--chrome", str(out), "--torch-profile", str(prof),
                        "--torch-clock", wrong]) == 0
    assert f"0 of {n} torch launch calls" in capsys.readouterr().out


def test_example_script_runs_on_cpu(tmp_path):
    out = tmp_path / "any"
    p = subprocess.run([sys.executable, "-m", "experiments.trace_any_program", "--steps", "2", "--launches", "2",
                        "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300, env=child_env())
    assert p.returncode == 0, p.stderr
    assert report.CPU_DEMO in p.stdout and "| scale_add | global | safe | 5 |" in p.stdout
    assert f"wrote {out / 'merged.chrome.json'}" in p.stdout
    merged = json.loads((out / "merged.chrome.json").read_text())
    xs = check_chrome_schema(merged)
    assert sum(e["name"] == "jitlab.launch" for e in xs) == 5  # the warm-up launch and the 2x2 profiled ones
    assert any(e.get("cat") == "cpu_op" for e in xs)  # torch's own events are in the same file
