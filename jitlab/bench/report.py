"""Markdown summaries of recorded runs, read back from their trace files (what the README shows).

    python -m jitlab.bench.report traces/launch_overhead-<run_id>.jsonl
    python -m jitlab.bench.report traces/e2e_decode-<run_id>.jsonl [--layers 32 --context 1024]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _run_attrs(df: Any) -> dict:
    run = df[df["name"] == "jitlab.run"]
    if run.empty:
        raise ValueError("no jitlab.run span in this trace")
    return {k: v for k, v in run.iloc[0].items() if isinstance(k, str)}


def provenance_line(attrs: dict) -> str:
    def g(k: str) -> str:
        v = attrs.get(f"jitlab.provenance.{k}")
        return "?" if v is None or v != v else str(v)

    return (f"{g('gpu')}, driver {g('driver')}, torch {g('torch')}, triton {g('triton')}, "
            f"jitlab {g('jitlab_commit')}, {g('date')}")


def launch_overhead_markdown(path: str) -> str:
    from ..telemetry.load import load_traces
    from .fmt import num as f

    df = load_traces(path)
    attrs = _run_attrs(df)
    rows = json.loads(attrs["jitlab.results"])
    from pathlib import Path

    out = [f"Run `{Path(path).stem}` ({provenance_line(attrs)}); host µs per launch, "
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
    costs = [r for r in rows if r.get("trace_cost_us") is not None]
    if costs:
        out += ["", "Tracing cost, paired (blocks of launches alternating recording off / on, median difference):", "",
                "| workload | variant | µs per launch | pairs |", "|---|---|---:|---:|"]
        out += [f"| {r['workload']} | {r['variant']} | {r['trace_cost_us']:+.2f} | {r['trace_cost_pairs']} |"
                for r in costs]
    return "\n".join(out)


MODES = ("eager_stock", "eager_jitlab_safe", "eager_jitlab_tuned", "piecewise_stock", "piecewise_jitlab",
         "full_graph")


def e2e_markdown(path: str, layers: int = 32, context: int = 1024) -> str:
    """Tokens/s per mode and batch for one (layers, context) slice of an e2e_decode run, plus its goals."""
    from pathlib import Path

    from ..telemetry.load import load_traces

    df = load_traces(path)
    attrs = _run_attrs(df)
    rows = [r for r in json.loads(attrs["jitlab.results"]) if r.get("kind") == "decode"
            and r.get("layers") == layers and r.get("context") == context and r.get("tokens_per_s")]
    batches = sorted({r["batch"] for r in rows})
    by = {(r["batch"], r["mode"]): r for r in rows}
    out = [f"Run `{Path(path).stem}` ({provenance_line(attrs)}); Llama-3.1-8B shapes, {layers} layers, "
           f"context {context}; tokens/s (host ms / GPU ms per step).", "",
           "| mode | " + " | ".join(f"B={b}" for b in batches) + " |", "|---|" + "---:|" * len(batches)]
    for m in MODES:
        cells = []
        for b in batches:
            r = by.get((b, m))
            cells.append(f"{r['tokens_per_s']:.0f} ({r['host_ms']:.1f} / {r['gpu_busy_ms']:.1f})" if r else "")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    summary = json.loads(attrs.get("jitlab.e2e.summary", "{}"))
    if summary.get("goal_config"):
        out += ["", f"At {summary['goal_config']}: eager jitlab (tuned) closes "
                f"{summary['eager_jitlab_tuned.gap_closed']:.0%} of the eager-to-full-graph gap (safe: "
                f"{summary['eager_jitlab_safe.gap_closed']:.0%}); piecewise with eager jitlab attention reaches "
                f"{summary['piecewise_jitlab.x_full_graph']:.3f}x the full graph."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trace", help="a traces/launch_overhead-*.jsonl or traces/e2e_decode-*.jsonl file")
    p.add_argument("--layers", type=int, default=32, help="e2e: layers of the slice shown")
    p.add_argument("--context", type=int, default=1024, help="e2e: context of the slice shown")
    a = p.parse_args(argv)
    try:
        if "e2e_decode" in a.trace:
            print(e2e_markdown(a.trace, a.layers, a.context))
        else:
            print(launch_overhead_markdown(a.trace))
    except (OSError, ValueError, KeyError) as e:
        print(f"cannot summarize {a.trace}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
