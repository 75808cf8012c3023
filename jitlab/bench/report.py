"""Markdown summaries of any jitlab trace file (what the README shows).

    python -m jitlab.bench.report traces/launch_overhead-<run_id>.jsonl
    python -m jitlab.bench.report traces/e2e_decode-<run_id>.jsonl [--layers 32 --context 1024]
    python -m jitlab.bench.report trace.jsonl      # any other trace (JITLAB_TRACE_FILE): a per-kernel table

The kind comes from the run span (`jitlab.experiment` with `jitlab.results`); anything else with
`jitlab.launch` spans gets the per-kernel table. CPU demonstrations are labelled as such. A file that
is missing, empty, a directory or not an OTLP JSON trace gives one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

# The run's text helpers live in fmt (any_program's report uses them too, without importing this module).
from .fmt import CPU_DEMO, _demo_line, _present, is_cpu_demo, provenance_line  # noqa: F401


def _run_attrs(df: Any) -> dict:
    run = df[df["name"] == "jitlab.run"]
    if run.empty:
        raise ValueError("no jitlab.run span in this trace")
    return {k: v for k, v in run.iloc[0].items() if isinstance(k, str)}


def load(path: str):
    """The trace as a DataFrame, or ValueError with one line saying why it is not a jitlab trace."""
    from pathlib import Path

    from ..telemetry.load import load_traces

    p = Path(path)
    if p.is_dir():
        raise ValueError("is a directory; give one trace file (.jsonl)")
    if not p.exists():
        raise ValueError("no such file")
    try:
        with warnings.catch_warnings():  # bad lines: one line each on stderr below, not a Python warning
            warnings.simplefilter("ignore")
            df = load_traces(str(p))
    except UnicodeDecodeError:
        raise ValueError("not a text file (expected OTLP JSON lines)") from None
    except Exception as e:  # json / protobuf parse errors: name the first line that failed
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"not an OTLP JSON trace ({type(e).__name__}: {msg[:160]})") from None
    bad = df.attrs.get("bad_lines") or []
    if df.empty:  # every line bad: name the first
        raise ValueError(f"line {bad[0][len(str(p)) + 1:]}" if bad else "no spans (empty file?)")
    for b in bad:
        print(f"warning: {b}; line skipped", file=sys.stderr)
    return df


def launch_overhead_markdown(path: str, df: Any = None) -> str:
    from .fmt import num as f

    df = load(path) if df is None else df
    attrs = _run_attrs(df)
    rows = json.loads(attrs["jitlab.results"])
    from pathlib import Path

    out = _demo_line(attrs) + [f"Run `{Path(path).stem}` ({provenance_line(attrs)}); host µs per launch, "
           "median over repeats (p10-p90), and the ratio to the C floor measured in the same run.", "",
           "| workload | variant | µs/launch | p10-p90 | x C floor | arg update µs | launch call µs |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("skip") or r.get("error") or r.get("median_us") is None:
            continue
        if r["variant"] == "python_nop":
            continue
        au = r.get("arg_update_ns")
        lc = r.get("launch_call_ns")
        out.append(f"| {r['workload']} | {r['variant']} | {f(r['median_us'])} | {f(r.get('p10_us'))}-"
                   f"{f(r.get('p90_us'))} | {f(r.get('x_floor'), '{:.2f}x')} | {f(au / 1e3 if au else None)} | "
                   f"{f(lc / 1e3 if lc else None)} |")
    from . import launch_parts

    parts = launch_parts.markdown(rows)
    out += ["", *parts] if parts else []
    ab = launch_parts.ab_markdown(rows)
    out += ["", *ab] if ab else []
    from . import first_launch

    misses = first_launch.markdown(rows)
    out += ["", *misses] if misses else []
    costs = [r for r in rows if r.get("trace_cost_us") is not None]
    if costs:
        out += ["", "Tracing cost, paired (blocks of launches alternating recording off / on, median difference):", "",
                "| workload | variant | µs per launch | pairs |", "|---|---|---:|---:|"]
        out += [f"| {r['workload']} | {r['variant']} | {r['trace_cost_us']:+.2f} | {r['trace_cost_pairs']} |"
                for r in costs]
    return "\n".join(out)


MODES = ("eager_stock", "eager_jitlab_safe", "eager_jitlab_tuned", "piecewise_stock", "piecewise_jitlab",
         "full_graph")


def _ms(x: Any) -> str:
    return f"{x:.1f}" if isinstance(x, (int, float)) else "-"


def e2e_markdown(path: str, layers: int | None = None, context: int | None = None, df: Any = None) -> str:
    """Tokens/s per mode and batch for one (layers, context) slice of an e2e_decode run, plus its goals.
    Without layers/context: 32 layers at context 1024 when the run has it, else its first slice."""
    from pathlib import Path

    df = load(path) if df is None else df
    attrs = _run_attrs(df)
    decode = [r for r in json.loads(attrs["jitlab.results"]) if r.get("kind") == "decode" and r.get("tokens_per_s")]
    slices = sorted({(r.get("layers"), r.get("context")) for r in decode}, key=str)
    if not slices:
        raise ValueError("no measured decode rows in this run")
    want = (layers if layers is not None else 32, context if context is not None else 1024)
    if want not in slices:
        if layers is not None or context is not None:
            raise ValueError(f"no decode rows at {want[0]} layers, context {want[1]}; this run has "
                             + ", ".join(f"--layers {a} --context {b}" for a, b in slices))
        want = slices[0]
    layers, context = want
    rows = [r for r in decode if (r.get("layers"), r.get("context")) == want]
    batches = sorted({r["batch"] for r in rows})
    by = {(r["batch"], r["mode"]): r for r in rows}
    model = "a tiny model" if is_cpu_demo(attrs) else "Llama-3.1-8B shapes"
    attention = attrs.get("jitlab.e2e.attention")
    attention = (f"KV write + attention: vLLM's own wrappers and kernels ({attrs.get('jitlab.e2e.attention_source')}); "
                 if attention == "vllm" else "")
    out = _demo_line(attrs) + [
        f"Run `{Path(path).stem}` ({provenance_line(attrs)}); {model}, {layers} layers, "
        f"context {context}; {attention}tokens/s (host ms / GPU ms per step).", "",
        "| mode | " + " | ".join(f"B={b}" for b in batches) + " |", "|---|" + "---:|" * len(batches)]
    for m in MODES:
        cells = []
        for b in batches:
            r = by.get((b, m))
            flag = "!" if r and r.get("host_unstable") else ""  # the trial's steps were not flat (telemetry.stability)
            cells.append(f"{r['tokens_per_s']:.0f} ({_ms(r.get('host_ms'))}{flag} / {_ms(r.get('gpu_busy_ms'))})"
                         if r else "")
        if any(cells):
            out.append(f"| {m} | " + " | ".join(cells) + " |")
    if any(r.get("host_unstable") for r in rows):
        out += ["", "`!`: that trial's host time per step was not flat (the host changed speed during it), so "
                "comparing it with another mode may set a fast stretch against a slow one; rerun it."]
    summary = json.loads(attrs.get("jitlab.e2e.summary") or "{}") if _present(attrs.get("jitlab.e2e.summary")) else {}
    if summary.get("goal_config") and all(isinstance(summary.get(k), (int, float)) for k in (
            "eager_jitlab_tuned.gap_closed", "eager_jitlab_safe.gap_closed", "piecewise_jitlab.x_full_graph")):
        out += ["", f"At {summary['goal_config']}: eager jitlab (tuned) closes "
                f"{summary['eager_jitlab_tuned.gap_closed']:.0%} of the eager-to-full-graph gap (safe: "
                f"{summary['eager_jitlab_safe.gap_closed']:.0%}); piecewise with eager jitlab attention reaches "
                f"{summary['piecewise_jitlab.x_full_graph']:.3f}x the full graph."]
    return "\n".join(out)


def _pct(vals: list, q: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def kernels_markdown(path: str, df: Any = None) -> str:
    """Any trace with jitlab.launch spans: one row per kernel (and scope/policy)."""
    from pathlib import Path

    df = load(path) if df is None else df
    launches = df[df["name"] == "jitlab.launch"]
    if launches.empty:
        raise ValueError("no jitlab.launch spans (was JITLAB_TRACE off, or did the program launch nothing?)")
    run = df[df["name"] == "jitlab.run"]
    attrs = _run_attrs(df) if not run.empty else {k: v for k, v in df.iloc[0].items() if str(k).startswith("resource.")}
    res = {k[len("resource."):]: v for k, v in df.iloc[0].items() if str(k).startswith("resource.") and _present(v)}
    head = (f"Trace `{Path(path).name}` ({res.get('jitlab.gpu.name', '?')}, driver {res.get('jitlab.gpu.driver_version', '?')}, "
            f"torch {res.get('jitlab.torch.version', '?')}, triton {res.get('jitlab.triton.version', '?')}, "
            f"jitlab {res.get('jitlab.git.commit', '?')}; level {res.get('jitlab.trace.level', attrs.get('jitlab.trace.level', '?'))}): "
            f"{len(launches)} launch spans. Times are host time per launch: argument update (bind + key) and the "
            "launcher call; medians and p90 over the recorded launches.")
    out = _demo_line(attrs) + [head, "",
                               "| kernel | scope | policy | launches | hits | misses | fallbacks (by reason) | "
                               "arg update µs p50 / p90 | launch µs p50 / p90 | compile ms |",
                               "|---|---|---|---:|---:|---:|---|---:|---:|---:|"]
    cols = {c: (launches[c] if c in launches.columns else None) for c in (
        "jitlab.kernel", "jitlab.scope", "jitlab.policy", "jitlab.cache.result", "jitlab.fallback.reason",
        "jitlab.arg_update.duration_ns", "jitlab.launch.duration_ns", "jitlab.compile.duration_ns")}
    groups: dict[tuple, list[dict]] = {}
    for i in range(len(launches)):
        row = {k: (None if v is None else v.iloc[i]) for k, v in cols.items()}
        key = tuple(str(row[k]) if _present(row[k]) else "" for k in ("jitlab.kernel", "jitlab.scope", "jitlab.policy"))
        groups.setdefault(key, []).append(row)
    for (kernel, scope, policy), rows in sorted(groups.items()):
        res_of = [r["jitlab.cache.result"] for r in rows]
        reasons: dict[str, int] = {}
        for r in rows:
            if r["jitlab.cache.result"] in ("fallback", "passthrough"):
                why = str(r["jitlab.fallback.reason"]) if _present(r["jitlab.fallback.reason"]) else "?"
                reasons[why] = reasons.get(why, 0) + 1
        hits = [r for r in rows if r["jitlab.cache.result"] == "hit"]
        timed = hits or rows  # hits are the steady state; without any, every launch

        def p50_p90(k: str) -> str:
            v = [float(r[k]) / 1e3 for r in timed if _present(r[k])]
            return f"{_pct(v, 0.5):.2f} / {_pct(v, 0.9):.2f}" if v else ""

        comp = [float(r["jitlab.compile.duration_ns"]) for r in rows if _present(r["jitlab.compile.duration_ns"])]
        fallbacks = ", ".join(f"{k}: {n}" for k, n in sorted(reasons.items()))
        out.append(f"| {kernel} | {scope} | {policy} | {len(rows)} | {res_of.count('hit')} | {res_of.count('miss')} | "
                   f"{fallbacks} | {p50_p90('jitlab.arg_update.duration_ns')} | {p50_p90('jitlab.launch.duration_ns')} | "
                   f"{f'{sum(comp) / 1e6:.1f}' if comp else ''} |")
    return "\n".join(out)


def markdown(path: str, layers: int | None = None, context: int | None = None) -> str:
    """The summary this trace's kind calls for (module docstring)."""
    df = load(path)
    run = df[df["name"] == "jitlab.run"]
    if not run.empty:
        attrs = _run_attrs(df)
        if _present(attrs.get("jitlab.results")):
            exp = attrs.get("jitlab.experiment")
            if exp == "e2e_decode":
                return e2e_markdown(path, layers, context, df=df)
            if exp in ("launch_overhead", "launch_overhead_misses"):
                return launch_overhead_markdown(path, df=df)
            if exp == "any_program":
                from .any_program import markdown as any_program_markdown

                return any_program_markdown(df, path)
    return kernels_markdown(path, df=df)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trace", help="a jitlab trace file: traces/launch_overhead-*.jsonl, traces/e2e_decode-*.jsonl, "
                                 "or any JITLAB_TRACE_FILE")
    p.add_argument("--layers", type=int, default=None, help="e2e: layers of the slice shown (default 32)")
    p.add_argument("--context", type=int, default=None, help="e2e: context of the slice shown (default 1024)")
    a = p.parse_args(argv)
    try:
        print(markdown(a.trace, a.layers, a.context))
    except (OSError, ValueError, KeyError, TypeError) as e:
        msg = (str(e).splitlines() or [""])[0]
        print(f"cannot summarize {a.trace}: {type(e).__name__ + ': ' if isinstance(e, (KeyError, TypeError)) else ''}"
              f"{msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
