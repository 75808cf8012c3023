"""`jitlab-export`: a jitlab trace as Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing),
optionally merged with a torch.profiler trace of the same run into one timeline.

    jitlab-export trace.jsonl --chrome trace.chrome.json
    jitlab-export trace.jsonl --chrome merged.json --torch-profile profile.json

Every span becomes a complete event (`"ph": "X"`, `ts`/`dur` in µs) on the track of the thread
that recorded it (`pid` = the process, `tid` = `thread.id`), so launches sit inside the run,
trial, step or `telemetry.span` that was open on their thread; metadata events (`"ph": "M"`) name
the process and each thread. The per-batch `jitlab.launches` spans of a process session are left
out (they group launches for Jaeger and cover several threads).

Clocks. jitlab stamps launches with `time.perf_counter_ns()` (CLOCK_MONOTONIC on Linux) and writes
span times as Unix-epoch ns: perf_counter_ns + `jitlab.clock.offset_ns` (time.time_ns() -
perf_counter_ns() taken once when recording began; a resource and run-span attribute). torch.profiler's
Chrome trace (Kineto) writes `ts` in µs relative to `baseTimeNanoseconds`, and ts*1000 +
baseTimeNanoseconds is Unix-epoch ns: torch's profiler reads a fast clock (TSC or CLOCK_MONOTONIC)
and converts it to epoch time (c10/util/ApproximateClock.h, `ApproximateClockToUnixTimeConverter`;
checked with torch 2.13 on CPU: a record_function's ts*1000 + baseTimeNanoseconds was within 1 ms of
time.time_ns() read inside it). Both are thus on the Unix clock and the merge keeps torch's
timestamps as they are and places jitlab's spans on the same base. Should a profile be on the
monotonic clock instead (a trace without baseTimeNanoseconds whose times are small), jitlab's spans
are put back on perf_counter by subtracting the offset. Which clock was used is detected by where
the profile's events fall (`--torch-clock` forces it) and written to `otherData`; as a check of the
alignment the command counts the profile's CPU-side launch calls (cuLaunchKernel, cudaLaunchKernel)
that lie inside a jitlab.launch span, the jitlab.launch spans of the profiled window that contain
one, and the profile's record_function ranges that lie inside the jitlab span of the same name
(e.g. `record_function("step")` inside `telemetry.span("step")`: checkable without a GPU). The two
clocks agree only to the accuracy of one offset reading each (µs); a wall clock stepped by NTP
between the two readings shifts them apart.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable

from .spans import A_CLOCK_OFFSET, A_KIND, A_THREAD, LAUNCH_SPAN

LAUNCH_CALLS = ("cuLaunchKernel", "cudaLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC")
_SKIP_KINDS = ("batch",)


class ExportError(ValueError):
    """One line: why the input cannot be exported."""


def _spans(path: str, bad: list | None = None) -> list[dict]:
    """The spans of the good lines of one trace file; its bad lines (telemetry.load.read_documents) go to `bad`."""
    from .load import iter_spans

    p = Path(path)
    if p.is_dir():
        raise ExportError(f"{path} is a directory; give one trace file (.jsonl)")
    if not p.exists():
        raise ExportError(f"{path}: no such file")
    bad = [] if bad is None else bad
    spans = list(iter_spans(str(p), bad))
    if not spans:
        raise ExportError(f"{bad[0]}" if bad else f"{path} has no spans (empty file?)")
    return spans


def _clock_offset(spans: list[dict]) -> int | None:
    for s in spans:
        v = s.get(f"resource.{A_CLOCK_OFFSET}", s.get(A_CLOCK_OFFSET))
        if isinstance(v, int):
            return v
    return None


def _pid(spans: list[dict]) -> int:
    for s in spans:
        for k in ("resource.process.pid", "jitlab.provenance.pid"):
            if isinstance(s.get(k), int):
                return s[k]
    return 0


def _threads(spans: list[dict]) -> dict[str, int]:
    """span_id -> thread: its own thread.id, else its parent's, else the launches' most common thread
    (traces written before frames carried thread.id)."""
    by_id = {s["span_id"]: s for s in spans}
    launch_threads = [s[A_THREAD] for s in spans if s["name"] == LAUNCH_SPAN and isinstance(s.get(A_THREAD), int)]
    default = max(set(launch_threads), key=launch_threads.count) if launch_threads else 0
    out: dict[str, int] = {}

    def thread_of(s: dict, depth: int = 0) -> int:
        sid = s["span_id"]
        if sid in out:
            return out[sid]
        t = s.get(A_THREAD)
        if not isinstance(t, int) or t < 0:
            parent = by_id.get(s.get("parent_id") or "")
            t = thread_of(parent, depth + 1) if parent is not None and depth < 64 else default
        out[sid] = t
        return t

    for s in spans:
        thread_of(s)
    return out


def _args(s: dict) -> dict:
    keep = {}
    for k, v in s.items():
        if k in ("trace_id", "span_id", "parent_id", "kind", "start_ns", "end_ns", "duration_ns", "service", "scope",
                 "file", "line", "name", "status_code") or k.startswith("resource.") or v is None:
            continue
        if isinstance(v, float) and math.isnan(v):
            continue
        keep[k] = v if isinstance(v, (str, int, float, bool)) else str(v)
    return keep


def jitlab_events(spans: list[dict], shift_ns: int, base_ns: int) -> tuple[list[dict], int]:
    """Chrome events for the spans: times are (span ns - shift_ns - base_ns) in µs. Returns (events, pid)."""
    pid = _pid(spans)
    threads = _threads(spans)
    service = next((s.get("service") for s in spans if s.get("service")), "jitlab")
    events: list[dict] = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "ts": 0,
                           "args": {"name": f"{service} (jitlab spans, pid {pid})"}}]
    seen_threads: dict[int, int] = {}
    for s in sorted(spans, key=lambda s: (s["start_ns"], -s["end_ns"])):
        if s.get(A_KIND) in _SKIP_KINDS:
            continue
        tid = threads[s["span_id"]]
        seen_threads[tid] = seen_threads.get(tid, 0) + 1
        events.append({"ph": "X", "name": s["name"], "cat": "jitlab.launch" if s["name"] == LAUNCH_SPAN else "jitlab",
                       "pid": pid, "tid": tid, "ts": _us(s["start_ns"] - shift_ns - base_ns),
                       "dur": _us(max(0, s["end_ns"] - s["start_ns"])), "args": _args(s)})
    for i, tid in enumerate(sorted(seen_threads, key=lambda t: -seen_threads[t])):
        events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "ts": 0,
                       "args": {"name": f"jitlab thread {tid}" + (" (most spans)" if i == 0 else "")}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "ts": 0,
                       "args": {"sort_index": i}})
    return events, pid


def _us(ns: int) -> float:
    return round(ns / 1000.0, 3)  # µs with ns resolution


def _torch_abs_ns(profile: dict) -> tuple[list[float], int]:
    """(absolute ns of each timed torch event, the profile's baseTimeNanoseconds or 0)."""
    base = int(profile.get("baseTimeNanoseconds") or 0)
    times = [float(e["ts"]) * 1000 + base for e in profile.get("traceEvents", [])
             if isinstance(e, dict) and e.get("ph") in ("X", "B", "i", "I") and _is_num(e.get("ts"))]
    return times, base


def _is_num(x: Any) -> bool:
    if isinstance(x, (int, float)):
        return True
    try:
        float(x)
        return True
    except (TypeError, ValueError):
        return False


def detect_clock(spans: list[dict], profile: dict, offset: int | None) -> tuple[str, int, float]:
    """("unix" | "monotonic", shift_ns to subtract from jitlab's span times, distance in s between the
    profile's median event and jitlab's time range on that clock: 0 when inside)."""
    times, _ = _torch_abs_ns(profile)
    if not times:
        raise ExportError("the torch profile has no timed events")
    mid = sorted(times)[len(times) // 2]
    lo, hi = min(s["start_ns"] for s in spans), max(s["end_ns"] for s in spans)
    cands = [("unix", 0)] + ([("monotonic", offset)] if offset is not None else [])

    def dist(shift: int) -> float:
        a, b = lo - shift, hi - shift
        return 0.0 if a <= mid <= b else min(abs(mid - a), abs(mid - b)) / 1e9

    name, shift = min(cands, key=lambda c: dist(c[1]))
    return name, shift, dist(shift)


def _inside_launches(launch_iv: list[tuple[int, int]], calls: Iterable[tuple[float, float]]) -> tuple[int, int]:
    starts = [a for a, _ in launch_iv]
    n = hit = 0
    for a, b in calls:
        n += 1
        i = bisect.bisect_right(starts, a) - 1
        if i >= 0 and launch_iv[i][0] <= a and b <= launch_iv[i][1]:
            hit += 1
    return hit, n


def _reverse_and_annotation_checks(spans: list[dict], profile: dict, shift: int, base: int,
                                   launch_iv: list[tuple[int, int]], calls: list[tuple[float, float]]) -> dict:
    """Two more checks of the alignment, on the profile's time base (ns relative to `base`):

    * jitlab.launch spans that start inside the profiled window (first to last timed torch event) and
      how many of them contain one of torch's CPU-side launch calls: every jitlab launch of a CUDA
      kernel issues one, so on a GPU these match; torch's own launches (GEMMs, copies) are no jitlab
      launches, which is why the forward count (`launch_calls_inside_jitlab_launches`) can be lower.
    * torch `user_annotation` events (`torch.profiler.record_function`) named like a jitlab span and
      how many lie inside a jitlab span of that name: a program that opens `telemetry.span("step")`
      and then `record_function("step")` gets one per step; a check that needs no GPU.
    """
    timed = [(float(e["ts"]) * 1000, float(e["ts"]) * 1000 + float(e.get("dur") or 0))
             for e in profile["traceEvents"] if isinstance(e, dict) and e.get("ph") == "X" and _is_num(e.get("ts"))]
    out: dict[str, Any] = {}
    if timed:
        lo, hi = min(a for a, _ in timed), max(b for _, b in timed)
        window = [(a, b) for a, b in launch_iv if lo <= a <= hi]  # started while the profiler ran
        starts = sorted(a for a, _ in calls)
        with_call = 0
        for a, b in window:
            i = bisect.bisect_left(starts, a)
            with_call += i < len(starts) and starts[i] <= b
        out.update(jitlab_launches_in_profile=len(window), jitlab_launches_with_a_launch_call=with_call)
    names: dict[str, list[tuple[int, int]]] = {}
    for s in spans:
        if s["name"] != LAUNCH_SPAN and s.get(A_KIND) not in _SKIP_KINDS:
            names.setdefault(s["name"], []).append((s["start_ns"] - shift - base, s["end_ns"] - shift - base))
    ann = [(e["name"], float(e["ts"]) * 1000, float(e["ts"]) * 1000 + float(e.get("dur") or 0))
           for e in profile["traceEvents"] if isinstance(e, dict) and e.get("ph") == "X"
           and e.get("cat") == "user_annotation" and e.get("name") in names and _is_num(e.get("ts"))]
    out["annotations"] = len(ann)
    out["annotations_inside_jitlab_spans"] = sum(any(a <= t0 and t1 <= b for a, b in names[n]) for n, t0, t1 in ann)
    return out


def export_chrome(trace: str, out: str, torch_profile: str | None = None, torch_clock: str | None = None) -> dict:
    """Write the Chrome trace; returns what it did (clock, event counts, the alignment check)."""
    bad: list = []
    spans = _spans(trace, bad)
    offset = _clock_offset(spans)
    info: dict[str, Any] = {"jitlab_spans": len(spans), "clock_offset_ns": offset, "bad_lines": [str(b) for b in bad]}
    doc: dict[str, Any]
    if torch_profile:
        try:
            profile = json.loads(Path(torch_profile).read_text())
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot read torch profile {torch_profile}: {(str(e).splitlines() or [''])[0]}") from None
        if not isinstance(profile, dict) or not isinstance(profile.get("traceEvents"), list):
            raise ExportError(f"{torch_profile} is not a Chrome trace (no traceEvents list)")
        name, shift, dist = detect_clock(spans, profile, offset)
        if torch_clock is not None:
            if torch_clock == "monotonic" and offset is None:
                raise ExportError(f"{trace} has no {A_CLOCK_OFFSET}: it cannot be put on the monotonic clock")
            name, shift = torch_clock, (offset if torch_clock == "monotonic" else 0)
        base = int(profile.get("baseTimeNanoseconds") or 0)
        events, _ = jitlab_events(spans, shift, base)
        doc = dict(profile)
        doc["traceEvents"] = list(profile["traceEvents"]) + events
        launch_iv = sorted((s["start_ns"] - shift - base, s["end_ns"] - shift - base)
                           for s in spans if s["name"] == LAUNCH_SPAN)
        calls = [(float(e["ts"]) * 1000, float(e["ts"]) * 1000 + float(e.get("dur") or 0))
                 for e in profile["traceEvents"] if isinstance(e, dict) and e.get("ph") == "X"
                 and e.get("name") in LAUNCH_CALLS and _is_num(e.get("ts"))]
        inside, n_calls = _inside_launches(launch_iv, calls)
        info.update(torch_events=len(profile["traceEvents"]), clock=name, shift_ns=shift,
                    distance_s=round(dist, 3), launch_calls=n_calls, launch_calls_inside_jitlab_launches=inside)
        info.update(_reverse_and_annotation_checks(spans, profile, shift, base, launch_iv, calls))
    else:
        base = (min(s["start_ns"] for s in spans) // 10**9) * 10**9
        events, _ = jitlab_events(spans, 0, base)
        doc = {"traceEvents": events, "displayTimeUnit": "ns", "baseTimeNanoseconds": base}
        info.update(clock="unix")
    doc.setdefault("otherData", {})
    if isinstance(doc["otherData"], dict):
        doc["otherData"]["jitlab"] = {k: v for k, v in info.items() if v is not None}
    info["events"] = len(events)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, separators=(",", ":"))
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jitlab-export", description=__doc__.split("\n")[0])
    p.add_argument("trace", help="a jitlab OTLP JSON-lines trace (traces/*.jsonl, JITLAB_TRACE_FILE)")
    p.add_argument("--chrome", required=True, metavar="OUT.json", help="where to write the Chrome trace-event JSON")
    p.add_argument("--torch-profile", metavar="PROFILE.json",
                   help="a torch.profiler Chrome trace of the same run, merged into one timeline")
    p.add_argument("--torch-clock", choices=("unix", "monotonic"), default=None,
                   help="the profile's clock (default: detected from where its events fall)")
    a = p.parse_args(argv)
    try:
        info = export_chrome(a.trace, a.chrome, a.torch_profile, a.torch_clock)
    except (ExportError, OSError) as e:
        print(f"jitlab-export: {(str(e).splitlines() or [''])[0]}", file=sys.stderr)
        return 2
    for b in info["bad_lines"]:
        print(f"jitlab-export: warning: {b}; line skipped", file=sys.stderr)
    line = f"wrote {a.chrome}: {info['events']} jitlab events"
    if a.torch_profile:
        line += (f" merged with {info['torch_events']} torch events (clock {info['clock']}; "
                 f"{info['launch_calls_inside_jitlab_launches']} of {info['launch_calls']} torch launch calls lie "
                 f"inside a jitlab.launch span)")
        if info.get("jitlab_launches_in_profile"):
            line += (f"; {info['jitlab_launches_with_a_launch_call']} of {info['jitlab_launches_in_profile']} "
                     "jitlab.launch spans in the profiled window contain one")
        if info.get("annotations"):
            line += (f"; {info['annotations_inside_jitlab_spans']} of {info['annotations']} torch record_function "
                     "ranges lie inside the jitlab span of the same name")
        if info["distance_s"] > 60:
            line += f"; WARNING: the profile lies {info['distance_s']:.0f} s away from the jitlab trace: same run?"
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
