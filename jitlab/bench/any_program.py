"""Any program, stock vs jitlab: run it twice under `jitlab run`, compare its output, tabulate its kernels.

    results = run(Config(programs, rule))          # experiments/any_program.py makes this one call

Per program, three runs, each in a scratch working directory (tutorials write plots and CSVs to "."),
each with the same command (a manifest's program: its benchmarks cut by `jitlab.bench.short_bench`
unless run --full; `Program.argv`):
`python PROGRAM` as the user runs it (the priming run: it fills Triton's compile cache and, with
TRITON_CACHE_AUTOTUNING=1, its autotuning cache, so that the two measured runs launch the same
configurations and neither pays compiles or tuning the other does not), then `jitlab run --policy
observe` (every kernel wrapped but launched by plain Triton, traced by the same recorder: the stock
baseline), then `jitlab run --policy safe`, each with its own trace file. Then its stdout is
compared under the output rule (`jitlab.bench.outputs`), and the per-kernel table is built from the
two traces (`jitlab.bench.kernel_table`). The run itself is recorded as one trace
(`traces/any_program-<run_id>.jsonl`, a trial span per program, provenance and every result row on
the run span); the programs' own traces go to the folder `traces/any_program-<run_id>.programs/`. Without a
CUDA GPU both land under `traces/cpu-demo/` (the interpreter: pass-through counts, no timings).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import kernel_table
from .outputs import Comparison, Rule, compare
from .programs import Program

EXPERIMENT = "any_program"
#: The one place that says how a program is started under jitlab (`python -m jitlab run ...`).
JITLAB_RUN = ("-m", "jitlab", "run")
STOCK_POLICY, JITLAB_POLICY = "observe", "safe"
SIDES = (("plain", None), ("stock", STOCK_POLICY), ("jitlab", JITLAB_POLICY))  # policy None: no jitlab
CPU_LABEL = "CPU demo (TRITON_INTERPRET=1: pass-through counts, no timing claims)"
#: JITLAB_* variables `jitlab run`'s flags set for the program: the experiment's own values win.
_SET_BY_FLAGS = ("JITLAB_AUTO", "JITLAB_AUTO_INCLUDE", "JITLAB_AUTO_EXCLUDE", "JITLAB_TRACE", "JITLAB_TRACE_FILE")
REPO = Path(__file__).resolve().parents[2]


def jitlab_run_missing() -> str | None:
    """None when this checkout has `jitlab run`; else one line saying what is missing."""
    for mod in ("jitlab.auto", "jitlab.__main__"):
        if importlib.util.find_spec(mod) is None:
            return f"`jitlab run` is not in this checkout ({mod} is missing): it comes with jitlab.install() (issue 20)"
    return None


def jitlab_run_argv(policy: str, trace: str, trace_file: Path, program_argv: list[str]) -> list[str]:
    """`python -m jitlab run --policy P --trace L --trace-file F -- python PROGRAM ARGS`."""
    return [sys.executable, *JITLAB_RUN, "--policy", policy, "--trace", trace, "--trace-file", str(trace_file),
            "--", sys.executable, *program_argv]


def child_env(base: dict | None = None) -> dict:
    """The programs' environment: ours, with this checkout importable, plots headless, and no JITLAB_*
    variable that `jitlab run`'s flags set (they would contradict the flags)."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _SET_BY_FLAGS}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("TRITON_CACHE_AUTOTUNING", "1")  # the priming run tunes; the measured runs reuse its choices
    return env


@dataclass
class Side:
    name: str  # "stock" | "jitlab"
    policy: str
    rc: int
    stdout: str
    stderr: str
    seconds: float
    traces: list[Path]


@dataclass
class Config:
    programs: tuple[Program, ...]
    rule: Rule
    trace: str = "sampled"
    out: Path | None = None  # default: traces/ (traces/cpu-demo/ without CUDA)
    timeout_s: float = 3600.0
    cuda: bool = True
    label: str = ""
    run_id: str | None = None
    attributes: dict = field(default_factory=dict)


def run_side(program: Program, side: str, policy: str | None, trace: str, trace_file: Path, timeout_s: float,
             env: dict | None = None) -> Side:
    """Run `program` once, under `jitlab run --policy policy` (policy None: plain Python), in a scratch
    directory."""
    trace_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, *program.argv()] if policy is None else \
        jitlab_run_argv(policy, trace, trace_file, program.argv())
    scratch = Path(tempfile.mkdtemp(prefix=f"{EXPERIMENT}-{program.name}-{side}-"))
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, cwd=scratch, env=child_env(env), capture_output=True, text=True, timeout=timeout_s)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = 124, _text(e.stdout), _text(e.stderr) + f"\n{EXPERIMENT}: timed out after {timeout_s:.0f} s"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - t0
    # Child processes of the program write <stem>.pid<N><suffix> beside it (jitlab run's convention).
    traces = [] if policy is None else \
        sorted(p for p in trace_file.parent.glob(f"{trace_file.stem}*{trace_file.suffix}")
               if p == trace_file or p.name.startswith(trace_file.stem + ".pid"))
    return Side(side, policy, rc, out, err, seconds, traces)


def _text(b: Any) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def _load(paths: list[Path]):
    from ..telemetry.load import load_traces

    return load_traces([str(p) for p in paths]) if paths else None


def program_result(program: Program, stock: Side, jitlab: Side, rule: Rule,
                   plain: Side | None = None) -> tuple[dict, list[dict]]:
    """(the program's row, its kernel rows) from its measured runs (and the plain one, compared too)."""
    cmp: Comparison = compare(stock.stdout, jitlab.stdout, rule, stock.rc, jitlab.rc)
    vs_plain = compare(plain.stdout, stock.stdout, rule, plain.rc, stock.rc) if plain is not None else None
    df_s, df_j = _load(stock.traces), _load(jitlab.traces)
    timings = kernel_table.has_timings(df_j) and kernel_table.has_timings(df_s)
    krows = kernel_table.rows(program.name, kernel_table.launch_stats(df_s), kernel_table.launch_stats(df_j), timings)
    saved = [r["saved_ms"] for r in krows if r["saved_ms"] is not None]
    row = {"program": program.name, "file": program.file.name, "sha256": program.sha256,
           "cut": program.cut_description(), "argv": " ".join(program.argv()),
           "stock_rc": stock.rc, "jitlab_rc": jitlab.rc, "identical": cmp.identical, "difference": cmp.difference,
           "plain_rc": plain.rc if plain else None, "plain_s": round(plain.seconds, 2) if plain else None,
           "stock_same_as_plain": vs_plain.identical if vs_plain else None,
           "plain_difference": vs_plain.difference if vs_plain else None,
           "compared_lines": cmp.compared, "timing_lines": cmp.timing_lines,
           "stock_s": round(stock.seconds, 2), "jitlab_s": round(jitlab.seconds, 2), "kernels": len(krows),
           "launches": sum(r["launches"] for r in krows), "hits": sum(r["hits"] for r in krows),
           "saved_ms": sum(saved) if saved else None,
           "stock_traces": [str(p) for p in stock.traces], "jitlab_traces": [str(p) for p in jitlab.traces]}
    if not cmp.identical or stock.rc or jitlab.rc:
        row["stderr_tail"] = {s.name: s.stderr[-2000:] for s in (plain, stock, jitlab) if s is not None}
    return row, krows


def run(config: Config) -> dict:
    """Run every program of `config` plain, stock, then jitlab; print progress (stderr) and the tables (stdout);
    record the run. Returns {"programs": [...], "kernels": [...], "trace_file": ...}."""
    from rich.console import Console

    from .. import telemetry
    from ..provenance import provenance

    console = Console(stderr=True)
    run_id = config.run_id or telemetry.new_run_id()
    out = Path(config.out) if config.out else Path("traces" if config.cuda else "traces/cpu-demo")
    folder = out / f"{EXPERIMENT}-{run_id}.programs"  # not traces/any_program-<id>/: trace_any_program.py writes there
    prov = provenance()
    programs_rows: list[dict] = []
    kernel_rows: list[dict] = []
    attrs = {"jitlab.experiment.label": config.label, "jitlab.any_program.rule": config.rule.describe(),
             "jitlab.any_program.trace_level": config.trace, "jitlab.any_program.traces": str(folder),
             **config.attributes}
    with telemetry.Run(EXPERIMENT, level="off", run_id=run_id, trace_file=str(out / f"{EXPERIMENT}-{run_id}.jsonl"),
                       attributes=attrs) as rec:
        n = len(config.programs)
        for i, program in enumerate(config.programs, 1):
            with rec.trial(program.name, {"jitlab.any_program.file": str(program.file),
                                          "jitlab.any_program.cut": program.cut_description()}) as trial:
                sides = {}
                for side, policy in SIDES:
                    how = "python" if policy is None else f"jitlab run --policy {policy}"
                    with console.status(f"[{i}/{n}] {program.name}: {side} ({how}) ..."):
                        sides[side] = run_side(program, side, policy, config.trace,
                                               folder / f"{program.name}.{side}.jsonl", config.timeout_s)
                    s = sides[side]
                    console.print(f"[{i}/{n}] {program.name}: {side} exit {s.rc} in {s.seconds:.1f} s"
                                  + (f" ({len(s.traces)} trace file{'s' if len(s.traces) != 1 else ''})"
                                     if policy is not None else ""))
                row, krows = program_result(program, sides["stock"], sides["jitlab"], config.rule, sides["plain"])
                trial.set({f"jitlab.any_program.{k}": v for k, v in row.items()
                           if isinstance(v, (str, int, float, bool))})
                verdict = "identical" if row["identical"] else f"DIFFERS: {row['difference']}"
                console.print(f"[{i}/{n}] {program.name}: output {verdict}; {row['kernels']} kernels, "
                              f"{row['launches']} launches, {row['hits']} hits")
            programs_rows.append(row)
            kernel_rows += krows
        rec.set({"jitlab.results": json.dumps({"programs": programs_rows, "kernels": kernel_rows}, default=str)})
    trace_file = rec.summary.get("trace_file") if rec.summary else None
    print_tables(programs_rows, kernel_rows, config, prov, trace_file)
    return {"programs": programs_rows, "kernels": kernel_rows, "trace_file": trace_file, "folder": str(folder)}


def print_tables(programs_rows: list[dict], kernel_rows: list[dict], config: Config, prov: dict, trace_file) -> None:
    from rich.console import Console
    from rich.table import Table

    from .fmt import caption, num

    console = Console(file=sys.stdout, width=200)
    t = Table(title=f"{EXPERIMENT}: programs {config.label}".strip(),
              caption=f"output rule: {config.rule.describe()}\n{cuts_line(programs_rows)}")
    for c in ("program", "exit plain/stock/jitlab", "output stock vs jitlab", "stock vs plain", "lines compared",
              "timing lines", "plain s", "stock s", "jitlab s", "kernels", "launches", "hits", "saved ms"):
        t.add_column(c, justify="left" if c.startswith(("program", "output", "stock vs")) else "right")
    for r in programs_rows:
        t.add_row(r["program"], f"{r['plain_rc']}/{r['stock_rc']}/{r['jitlab_rc']}",
                  "identical" if r["identical"] else f"DIFFERS: {r['difference']}",
                  "identical" if r["stock_same_as_plain"] else f"DIFFERS: {r['plain_difference']}",
                  str(r["compared_lines"]), str(r["timing_lines"]), num(r["plain_s"], "{:.1f}"),
                  num(r["stock_s"], "{:.1f}"), num(r["jitlab_s"], "{:.1f}"),
                  str(r["kernels"]), str(r["launches"]), str(r["hits"]), num(r["saved_ms"], "{:.1f}", missing="n/a"))
    console.print(t)
    console.print(kernel_table.rich_table(kernel_rows, f"{EXPERIMENT}: kernels, stock (--policy {STOCK_POLICY}) "
                                          f"vs jitlab (--policy {JITLAB_POLICY}) {config.label}".strip(),
                                          caption(prov, trace_file) + f"\nhost CPU: {prov.get('cpu', '?')}"))


def cuts_line(programs_rows: list[dict]) -> str:
    """One line saying which programs ran with their benchmarks cut, and how (tables, reports)."""
    cuts: dict[str, list[str]] = {}
    for r in programs_rows:
        cuts.setdefault(r.get("cut") or "", []).append(r["program"])
    if set(cuts) == {""}:
        return "benchmarks run whole (not cut)."
    return " ".join(f"{', '.join(names)}: " + (how or "run whole") + "." for how, names in cuts.items())


def markdown(df: Any, path: str) -> str:
    """`jitlab report` of an any_program run trace: the programs and the per-kernel table."""
    run = df[df["name"] == "jitlab.run"].iloc[0]
    results = json.loads(run["jitlab.results"])
    from .fmt import _demo_line, provenance_line

    attrs = {k: v for k, v in run.items() if isinstance(k, str)}
    out = _demo_line(attrs) + [f"Run `{Path(path).stem}` ({provenance_line(attrs)}); output rule: "
                               f"{attrs.get('jitlab.any_program.rule')}.", "",
                               "| program | output | stock s | jitlab s | launches | hits | saved ms |",
                               "|---|---|---:|---:|---:|---:|---:|"]
    from .fmt import num

    for r in results["programs"]:
        verdict = "identical" if r["identical"] else f"differs: {r['difference']}"
        out.append(f"| {r['program']} | {verdict} | {num(r['stock_s'], '{:.1f}')} | {num(r['jitlab_s'], '{:.1f}')} | "
                   f"{r['launches']} | {r['hits']} | {num(r['saved_ms'], '{:.1f}', missing='n/a')} |")
    return "\n".join(out + ["", kernel_table.markdown(results["kernels"])])
