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
    """Traces made here: a plain program's (process session) and a CPU-demo e2e run, the latter with
    --torch-profile (its profile and merged timeline beside it; its stdout as "e2e_cpu.stdout")."""
    d = tmp_path_factory.mktemp("made")
    out = {"process": d / "process.jsonl", "e2e_cpu": d / "e2e_cpu.jsonl"}
    p = subprocess.run([sys.executable, "-c", plain(3, 4, 2)], cwd=d, capture_output=True, text=True, timeout=120,
                       env=child_env(JITLAB_TRACE="full", JITLAB_TRACE_FILE=out["process"]))
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "experiments.e2e_decode", "--quick", "--cpu", "--torch-profile",
                        "--trace-file", str(out["e2e_cpu"])], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=child_env())
    assert p.returncode == 0, p.stderr
    return {k: str(v) for k, v in out.items()} | {"e2e_cpu.stdout": p.stdout}


def all_traces(made) -> list[str]:
    return [str(REPO / p) for p in COMMITTED] + [made["process"], made["e2e_cpu"]]


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
    for s in spans:  # a record_function("step") inside each jitlab step span
        if s["name"] == "step":
            evs.append({"ph": "X", "cat": "user_annotation", "name": "step", "pid": 7, "tid": 7,
                        "ts": round((s["start_ns"] + 1000 - shift - base) / 1e3, 3),
                        "dur": round((s["end_ns"] - s["start_ns"] - 2000) / 1e3, 3)})
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
    # the other directions: each jitlab launch of the window holds a launch call, each step its annotation
    n_steps = sum(s["name"] == "step" for s in spans)
    assert f"; {n} of {n} jitlab.launch spans in the profiled window contain one" in line
    assert f"; {n_steps} of {n_steps} torch record_function ranges lie inside the jitlab span" in line
    info = merged["otherData"]["jitlab"]
    assert info["jitlab_launches_with_a_launch_call"] == info["jitlab_launches_in_profile"] == n > 0
    assert info["annotations_inside_jitlab_spans"] == info["annotations"] == n_steps == 3
    # the wrong clock forced: nothing lines up (the checks can fail)
    wrong = "monotonic" if clock == "unix" else "unix"
    assert chrome.main([made["process"], "--chrome", str(out), "--torch-profile", str(prof),
                        "--torch-clock", wrong]) == 0
    line = capsys.readouterr().out
    assert f"0 of {n} torch launch calls" in line and f"0 of {n_steps} torch record_function" in line
    info = json.loads(out.read_text())["otherData"]["jitlab"]
    assert info["jitlab_launches_with_a_launch_call"] == 0


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


def test_e2e_torch_profile_merged_timeline_on_cpu(made):
    """`e2e_decode --quick --cpu --torch-profile` (the `made` run): torch's Chrome trace and the merged
    timeline next to the trace file, named in the summary; the merged file is valid Chrome trace-event
    JSON in µs, the profiled steps' launches nest in their step spans, and torch's record_function of
    each profiled step lies inside the jitlab step span on the merged timeline."""
    from jitlab.bench.decode import profile as dprof
    from jitlab.telemetry.load import iter_spans

    trace = Path(made["e2e_cpu"])
    prof_path, merged_path = dprof.paths(trace)
    assert prof_path == trace.with_name("e2e_cpu.torch_profile.json")
    assert merged_path == trace.with_name("e2e_cpu.merged.chrome.json")
    stdout = made["e2e_cpu.stdout"]
    assert "torch.profiler window (--torch-profile)" in stdout and "4 of 4 profiled steps" in stdout, stdout[-3000:]
    assert prof_path.name in stdout and merged_path.name in stdout
    assert 0 < prof_path.stat().st_size < 5e6  # a small window

    spans = list(iter_spans(str(trace)))
    by_id = {s["span_id"]: s for s in spans}
    trial = [s for s in spans if s.get("jitlab.e2e.mode") == dprof.PROFILE_MODE and s.get("jitlab.span.kind") == "trial"]
    assert len(trial) == 1 and not trial[0].get("jitlab.error") and "jitlab.e2e.config" not in trial[0]
    psteps = [s for s in spans if s["name"] == dprof.STEP and s.get("jitlab.e2e.phase") == "profile"]
    assert sorted(s["jitlab.e2e.mode"] for s in psteps) == ["eager_jitlab_safe"] * 2 + ["eager_stock"] * 2
    assert all(s["parent_id"] == trial[0]["span_id"] for s in psteps)
    # every jitlab launch of a profiled safe step is in the trace (7 per layer + the final norm, 1 layer)
    safe_launches = [s for s in spans if s["name"] == "jitlab.launch" and by_id.get(s["parent_id"], {}).get(
        "jitlab.e2e.mode") == "eager_jitlab_safe" and by_id[s["parent_id"]].get("jitlab.e2e.phase") == "profile"]
    assert len(safe_launches) == 2 * 8

    doc = json.loads(merged_path.read_text())
    xs = check_chrome_schema(doc)
    assert doc["baseTimeNanoseconds"] == json.loads(prof_path.read_text())["baseTimeNanoseconds"]
    assert check_nesting(xs, spans) >= len(safe_launches)
    assert any(e.get("cat") == "cpu_op" for e in xs)  # torch's own events in the same file
    # µs on one clock: each torch record_function("step") inside one jitlab profile-step event
    jsteps = [(e["ts"], e["ts"] + e["dur"]) for e in xs
              if e["name"] == dprof.STEP and e.get("cat") == "jitlab" and e["args"].get("jitlab.e2e.phase") == "profile"]
    ann = [(e["ts"], e["ts"] + e["dur"]) for e in xs if e.get("cat") == "user_annotation" and e["name"] == dprof.STEP]
    assert len(jsteps) == len(ann) == 4
    for a, b in ann:
        assert sum(s0 <= a and b <= s1 for s0, s1 in jsteps) == 1, (a, b, jsteps)
    for e in xs:  # the jitlab step lasts as long as its span (ns -> µs)
        if e.get("cat") == "jitlab" and e["args"].get("jitlab.e2e.phase") == "profile":
            span = [s for s in psteps if s["jitlab.e2e.step"] == e["args"]["jitlab.e2e.step"]
                    and s["jitlab.e2e.mode"] == e["args"]["jitlab.e2e.mode"]][0]
            assert abs(e["dur"] - span["duration_ns"] / 1e3) < 0.002
    info = doc["otherData"]["jitlab"]
    assert info["clock"] == "unix" and info["annotations_inside_jitlab_spans"] == info["annotations"] == 4
