"""Run a sweep of launch variants over workloads: check, time, record, print.

One call does it all for an experiment script:

    results = run_sweep("launch_overhead", workloads, make_variants, config)

Per trial (workload x variant): correctness against the torch reference first (outputs poisoned,
one launch, compared), then host µs per launch (`timing.time_host`), then, for jitcache
variants, one traced pass that splits each launch into argument update and launcher call.
Every trial is a span in the run's trace file, carrying the aggregates, policy and provenance.
Progress goes to stderr per trial (never per launch); a rich table is printed at the end.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..telemetry import recorder as _rec
from .timing import Device, Timing, time_host


@dataclass
class Variant:
    name: str
    kind: str  # "baseline" | "jitcache" | "floor" | "graph"
    launch: Callable[[], Any] | None = None
    policy: Any = None  # jitlab.Policy for jitcache variants
    kernel: Any = None  # the JitCache, for counters and the argument/launch split
    skip: str | None = None  # why this variant cannot run here
    check: bool = True  # launch once and compare with the reference before timing
    launches_per_call: int = 1  # a CUDA-graph replay performs several launches
    after_lock: Callable[[], None] | None = None  # static policies: lock the cache after the check launch
    trace_level: str = "off"  # recording level while timing (tracing-overhead variants set it)
    timer: Callable[[int], int] | None = None  # times n launches itself (the C floor), returning ns
    keep: Any = None  # storage the launch needs kept alive (prebuilt parameter arrays)
    hold: bool = True  # keep the GPU busy while timing (False for first-launch trials, which sync)


@dataclass
class Config:
    launches: int = 400
    repeats: int = 9
    warmup: int = 100
    trace: str = "sampled"
    sample_every: int = 50
    trace_file: str | None = None
    cuda: bool = True
    label: str = ""  # e.g. "CPU DEMO"
    extra: dict = field(default_factory=dict)


def _split(variant: Variant, device: Device, launches: int, run_recorder: Any) -> dict[str, float]:
    """Median argument-update and launcher-call ns of `launches` hits, from a private full recorder;
    a sample of those records also goes to the run's recorder, so the trace shows them as spans."""
    rec = _rec.Recorder(level="full", capacity=launches + 16)
    prev = _rec.activate(rec)
    try:
        device.hold(launches * 200 + 2000)
        for _ in range(launches):
            variant.launch()
    finally:
        _rec.activate(prev)
    device.sync()
    hits = [r for r in rec.drain() if r.outcome == _rec.HIT]
    if run_recorder is not None:
        for r in hits[:: max(1, run_recorder.sample_every or len(hits))]:
            run_recorder.record(r.kernel, r.scope, r.policy, r.outcome, r.key, r.t_enter, r.t_args, r.t_exit)
    if not hits:
        return {}
    return {"arg_update_ns": statistics.median(r.t_args - r.t_enter for r in hits),
            "launch_call_ns": statistics.median(r.t_exit - r.t_args for r in hits)}


def trace_flags(trace: str | None, trace_file: str | None, default_level: str = "sampled") -> tuple[str, str | None]:
    """An experiment's trace level and file: its --trace/--trace-file flags, else JITLAB_TRACE /
    JITLAB_TRACE_FILE, else `default_level` and the experiment's own default file (None)."""
    from ..settings import SETTINGS

    return trace or SETTINGS.given("trace") or default_level, trace_file or SETTINGS.trace_file


class ExperimentError(RuntimeError):
    """A failure an experiment's command line reports in one line (e.g. vLLM's kernel files not found)."""


def cli(main: Callable[[], Any], prog: str) -> None:
    """Run an experiment's main(); a bad JITLAB_* value, an unwritable trace file, a missing extra or an
    ExperimentError (missing vLLM kernel files) end it with one line naming it (exit status 2, as every
    jitlab command line's failures) instead of a traceback."""
    from .._extras import MissingExtra
    from ..settings import SettingError
    from ..telemetry.export import TraceTargetError

    try:
        main()
    except (SettingError, TraceTargetError, MissingExtra, ExperimentError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _check(case: Any, variant: Variant, device: Device) -> str:
    case.poison()
    variant.launch()
    follow = case.extra.get("reduce") if hasattr(case, "extra") else None
    if follow is not None:
        follow.launch()
    device.sync()
    case.check()
    return "ok"


def run_sweep(experiment: str, workloads: Iterable[tuple[str, Callable[[], Any]]],
              make_variants: Callable[[Any], list[Variant]], config: Config,
              attributes: dict | None = None) -> list[dict]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .. import telemetry
    from ..provenance import provenance

    console = Console(stderr=True)
    device = Device(config.cuda)
    prov = provenance()
    results: list[dict] = []
    run_attrs = {"jitlab.experiment.label": config.label, "jitlab.config": json.dumps(config.__dict__, default=str),
                 **(attributes or {})}
    with telemetry.Run(experiment, level=config.trace, sample_every=config.sample_every,
                       trace_file=config.trace_file, attributes=run_attrs) as run:
        plan = [(name, make) for name, make in workloads]
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            task = progress.add_task("preparing", total=None)
            for wname, make_case in plan:
                case = make_case()
                variants = make_variants(case)
                progress.update(task, total=(progress.tasks[0].total or 0) + len(variants) * (config.repeats + 2))
                results += _workload(run, wname, case, variants, device, config, progress, task)
        summary_rows = [{k: v for k, v in r.items() if k != "policy"} for r in results]
        run.set({"jitlab.results": json.dumps(summary_rows, default=str)})
    results_meta = {"trace_file": run.summary.get("trace_file") if run.summary else None, "provenance": prov}
    print_table(experiment, results, config, results_meta)
    return results


def _workload(run: Any, wname: str, case: Any, variants: list[Variant], device: Device, config: Config,
              progress: Any, task: Any) -> list[dict]:
    """Check every variant, then time them in interleaved rounds (round r times repeat r of each
    variant in turn, so slow drift of the host hits all variants alike), then split and record."""
    rows = {v.name: _row(wname, v) for v in variants}
    live = []
    for v in variants:
        row = rows[v.name]
        progress.update(task, description=f"{wname}: check {v.name}")
        if v.skip:
            row["skip"] = v.skip
        else:
            try:
                row["correct"] = _check(case, v, device) if v.check else "n/a"
                if v.after_lock is not None:
                    v.after_lock()
                live.append(v)
            except Exception as e:  # noqa: BLE001 - a failing variant is reported, the sweep goes on
                row["error"] = f"{type(e).__name__}: {e}"
        progress.advance(task)
    timings: dict[str, Timing] = {v.name: Timing(launches=config.launches) for v in live}
    for r in range(config.repeats):
        for v in list(live):
            progress.update(task, description=f"{wname}: round {r + 1}/{config.repeats} {v.name}")
            try:
                t = _time_one(v, device, config, warmup=config.warmup if r == 0 else 0, row=rows[v.name])
                timings[v.name].per_launch_us += t.per_launch_us
            except Exception as e:  # noqa: BLE001
                rows[v.name]["error"] = f"{type(e).__name__}: {e}"
                live.remove(v)
            progress.advance(task)
    for v in live:
        pairs = rows[v.name].pop("_pairs", None)
        if pairs:
            rows[v.name]["trace_cost_us"] = statistics.median(pairs)
            rows[v.name]["trace_cost_pairs"] = len(pairs)
        stats = timings[v.name].stats()
        if v.launches_per_call > 1:
            stats = {k: (x / v.launches_per_call if k.endswith("_us") else x) for k, x in stats.items()}
        rows[v.name].update(stats)
    floor_us = rows.get("c_floor", {}).get("median_us")
    call_us = rows.get("c_call", {}).get("median_us")
    ideal_us = floor_us + call_us if floor_us and call_us else None  # a C no-op called like the kernel + the floor
    for row in rows.values():
        if floor_us and row.get("median_us"):
            row["x_floor"] = row["median_us"] / floor_us
        if ideal_us and row.get("median_us"):
            row["x_ideal"] = row["median_us"] / ideal_us
    for v in variants:
        row = rows[v.name]
        with run.trial(f"{wname}/{v.name}", _attrs(wname, v)) as trial:
            if v in live and v.kernel is not None:
                row.update(_split(v, device, min(config.launches, 400), run.recorder))
                row["counters"] = v.kernel.counters()
            trial.set({f"jitlab.{k}": (json.dumps(x) if isinstance(x, (dict, list)) else x)
                       for k, x in row.items() if k not in ("workload", "variant", "kind", "policy")})
        progress.advance(task)
    return list(rows.values())


def _row(wname: str, v: Variant) -> dict:
    return {"workload": wname, "variant": v.name, "kind": v.kind,
            "policy": v.policy.to_dict() if v.policy is not None else None}


def _attrs(wname: str, v: Variant) -> dict:
    policy = v.policy.to_dict() if v.policy is not None else None
    return {"jitlab.workload": wname, "jitlab.variant": v.name, "jitlab.variant.kind": v.kind,
            "jitlab.policy": v.policy.name if v.policy is not None else v.name,
            "jitlab.policy.json": json.dumps(policy) if policy else "", "jitlab.trace_level": v.trace_level}


def _time_one(v: Variant, device: Device, config: Config, warmup: int, row: dict) -> Timing:
    """One repeat of `v` (with recording at the variant's level; off for headline numbers)."""
    rec = None
    if v.trace_level != "off":
        rec = _rec.Recorder(level=v.trace_level, capacity=config.launches + 200 + warmup,
                            sample_every=config.sample_every)
    prev = _rec.activate(rec)
    try:
        t = time_host(v.launch, device if v.hold else Device(False), launches=config.launches, repeats=1,
                      warmup=warmup if v.hold else 0, timer=v.timer)
    finally:
        _rec.activate(prev)
    if rec is not None:
        row["recorded"] = row.get("recorded", 0) + len(rec.drain())
        row["dropped"] = row.get("dropped", 0) + rec.dropped
        row.setdefault("_pairs", []).extend(_paired_trace_cost(v, device, config))
    return t


def _paired_trace_cost(v: Variant, device: Device, config: Config, block: int = 25) -> list[float]:
    """Tracing cost as paired differences: back-to-back blocks of launches with recording off and at
    the variant's level (one GPU hold covers them all), so host drift cancels within each pair; µs per
    launch, one value per pair. The variant's own p50 is over separate repeats and drifts more.
    Pairs alternate which block runs first, so a warm-up advantage of the second block cancels too;
    the garbage collector stays on, so the collections tracing's allocations cause are counted."""
    import time

    diffs = []
    device.hold(block * 2 * (config.launches // block) * 60 + 2000)
    for i in range(config.launches // block):
        per = {}
        for level in (("off", v.trace_level) if i % 2 == 0 else (v.trace_level, "off")):
            rec = None if level == "off" else _rec.Recorder(level=level, capacity=block + 8,
                                                             sample_every=config.sample_every)
            prev = _rec.activate(rec)
            t0 = time.perf_counter_ns()
            for _ in range(block):
                v.launch()
            per[level] = time.perf_counter_ns() - t0
            _rec.activate(prev)
        diffs.append((per[v.trace_level] - per["off"]) / block / 1e3)
    device.sync()
    return diffs


def print_table(experiment: str, results: list[dict], config: Config, meta: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from .fmt import caption, num as f

    title = f"{experiment} {config.label}".strip()
    table = Table(title=title, caption=caption(meta.get("provenance", {}), meta.get("trace_file")))
    for col in ("workload", "variant", "µs/launch (p50)", "p10", "p90", "x C floor", "x ideal", "arg update µs",
                "launch call µs", "check", "note"):
        table.add_column(col, justify="right" if "µs" in col or col in ("p10", "p90", "x C floor", "x ideal") else "left")

    for r in results:
        note = r.get("skip") or r.get("error") or ""
        table.add_row(r["workload"], r["variant"], f(r.get("median_us")), f(r.get("p10_us")), f(r.get("p90_us")),
                      f(r.get("x_floor"), "{:.2f}x"), f(r.get("x_ideal"), "{:.2f}x"), f((r.get("arg_update_ns") or 0) / 1e3 if "arg_update_ns" in r else None),
                      f((r.get("launch_call_ns") or 0) / 1e3 if "launch_call_ns" in r else None),
                      str(r.get("correct", "")), note[:60])
    Console(file=sys.stdout, width=160).print(table)
