"""Derived metrics, the summary, the printed tables and the time estimate of a sweep."""

from __future__ import annotations

import json
import sys
from typing import Any

# host stability: one rule, in jitlab.telemetry.stability (the notebooks judge old traces with it too)
from ...telemetry.stability import HOST_SHIFT_MAX, HOST_SPREAD_MAX, HOST_STABILITY_MIN_STEPS, host_stability  # noqa: F401
from ..fmt import caption, num
from .config import EXPERIMENT, GRAPH_MODE, MODES, REFERENCE_MODE, SweepConfig


_ATTR_SKIP = ("config", "kind", "batch", "context", "layers", "mode", "mode_kind", "kernels")


def _attrs(row: dict) -> dict:
    """A result row as trial-span attributes (`jitlab.e2e.<key>`; dicts as JSON strings)."""
    out = {}
    for k, v in row.items():
        if k in _ATTR_SKIP or v is None:
            continue
        out[f"jitlab.e2e.{k}"] = json.dumps(v, default=str) if isinstance(v, (dict, list)) else v
    return out


def derive(rows: list[dict]) -> None:
    """Per config: speedup vs eager_stock, fraction of the eager_stock -> full_graph tokens/s gap
    closed ((mode - stock) / (graph - stock)), and the ratio to the full graph."""
    by = {r["mode"]: r for r in rows if r.get("tokens_per_s")}
    # every mode runs the same device kernels per step (graphs only change who launches them); for
    # mixed runs piecewise pads the token count, which changes no kernel count either
    dk = by.get(REFERENCE_MODE, {}).get("device_kernels_per_step")
    for r in rows:
        if dk is not None and r.get("device_kernels_per_step") is not None:
            r["device_kernels_match"] = abs(r["device_kernels_per_step"] - dk) < 1e-9
    stock = by.get(REFERENCE_MODE, {}).get("tokens_per_s")
    graph = by.get(GRAPH_MODE, {}).get("tokens_per_s")
    for r in rows:
        tps = r.get("tokens_per_s")
        if not tps:
            continue
        if stock:
            r["speedup_vs_stock"] = tps / stock
        if graph:
            r["x_full_graph"] = tps / graph
        if stock and graph and r["mode"] not in (REFERENCE_MODE, GRAPH_MODE):
            gap = graph - stock
            # a gap under 2% of stock is noise: "gap closed" is not defined there
            r["gap_closed"] = (tps - stock) / gap if gap > 0.02 * stock else None


def summarize(results: list[dict]) -> dict:
    """The issue's goals (B=1, 32 layers, context 1024) and the crossover (speedup of eager jitlab
    tuned over eager stock, and of piecewise jitlab over piecewise stock, per config)."""
    out: dict[str, Any] = {}
    goal = [r for r in results if r.get("kind") == "decode" and r["batch"] == 1 and r["layers"] == 32
            and r["context"] == 1024]
    g = {r["mode"]: r for r in goal}
    if g:
        out["goal_config"] = "B=1 ctx=1024 L=32"
        for m in ("eager_jitlab_tuned", "eager_jitlab_safe", "piecewise_jitlab", "piecewise_jitlab_safe"):
            if m in g:
                out[f"{m}.gap_closed"] = g[m].get("gap_closed")
                out[f"{m}.x_full_graph"] = g[m].get("x_full_graph")
                out[f"{m}.speedup_vs_stock"] = g[m].get("speedup_vs_stock")
    cross = []
    configs = {}
    for r in results:
        if r.get("kind") == "decode":
            configs.setdefault(r["config"], {})[r["mode"]] = r
    for name, ms in configs.items():
        r0 = next(iter(ms.values()))
        item = {"config": name, "batch": r0["batch"], "context": r0["context"], "layers": r0["layers"]}
        for a, b in (("eager_jitlab_tuned", "eager_stock"), ("eager_jitlab_safe", "eager_stock"),
                     ("piecewise_jitlab", "piecewise_stock")):
            if ms.get(a, {}).get("tokens_per_s") and ms.get(b, {}).get("tokens_per_s"):
                item[f"{a}/{b}"] = ms[a]["tokens_per_s"] / ms[b]["tokens_per_s"]
                if ms[a].get("host_unstable") or ms[b].get("host_unstable"):
                    item[f"{a}/{b}.host_unstable"] = True  # one of the two trials' steps were not flat
        for m in ("eager_stock", "full_graph"):
            if ms.get(m, {}).get("host_ms") is not None:
                item[f"{m}.host_ms"] = ms[m]["host_ms"]
                if ms[m].get("host_unstable"):
                    item[f"{m}.host_unstable"] = True
            if ms.get(m, {}).get("gpu_busy_ms") is not None:
                item[f"{m}.gpu_busy_ms"] = ms[m]["gpu_busy_ms"]
        cross.append(item)
    out["crossover"] = cross
    return out


def attention_label(sweep: SweepConfig, vllm: Any = None) -> str:
    """What ran each layer's KV write and attention (table titles, the report)."""
    if sweep.attention != "vllm":
        return "jitlab's kernels (jitlab.kernels)"
    return f"vLLM's kernels and wrappers ({vllm.source if vllm is not None else sweep.vllm_dir})"


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(text)


def _one_line(r: dict) -> str:
    if r.get("skip"):
        return f"  {r['config']} {r['mode']}: skipped ({r['skip']})"
    if r.get("error"):
        return f"  {r['config']} {r['mode']}: [red]error[/] {escape(r['error'][:300])}"
    flag = UNSTABLE_MARK + " (steps not flat)" if r.get("host_unstable") else ""
    return (f"  {r['config']} {r['mode']}: {num(r.get('tokens_per_s'), '{:.0f}', '-')} tok/s, "
            f"host {num(r.get('host_ms'), missing='-')} ms{flag}, GPU {num(r.get('gpu_busy_ms'), missing='-')} ms, "
            f"{num(r.get('launches_per_step'), '{:.0f}', '-')} launches/step, check {escape(str(r.get('check', '?')))}")


UNSTABLE_MARK = "[bold yellow]![/]"


def host_cell(r: dict) -> str:
    """A row's host ms for the table: the median, then "!" when its per-step host times were not flat."""
    return num(r.get("host_ms")) + (UNSTABLE_MARK if r.get("host_unstable") else "")


def unstable_footnote(n: int) -> str:
    """The line under the table when `n` rows are flagged `host_unstable`."""
    return (f"{UNSTABLE_MARK} host ms per step not flat in {n} trial{'s' if n != 1 else ''} (the medians of the "
            f"trial's two halves differ by > {HOST_SHIFT_MAX:.0%} of its median, or >= 10% of its steps ran "
            f"{HOST_SPREAD_MAX:g}x slower or faster than the median: the host changed speed during the trial). Such "
            "a row's medians (host ms, tok/s, x stock, gap closed) may come from a fast stretch and another mode's "
            "from a slow one: compare modes only between rows without !, and rerun the flagged configs (a narrower "
            "sweep, or more --steps) before trusting them. Per step: `jitlab.e2e.host_ms` of the step spans.")


def print_table(results: list[dict], sweep: SweepConfig, meta: dict, file: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, width=200)
    title = f"{EXPERIMENT}: {sweep.model.name} ({sweep.model.dtype}) {sweep.label}".strip()
    title += f"; attention: {meta.get('attention') or attention_label(sweep)}"
    t = Table(title=title, caption=caption(meta.get("provenance", {}), meta.get("trace_file")))
    for col in ("config", "mode", "tok/s", "x stock", "gap closed", "x graph", "host ms", "GPU ms", "step ms",
                "launches", "µs/launch", "check"):
        t.add_column(col, justify="left" if col in ("config", "mode", "check") else "right")

    last = None
    for r in results:
        if last is not None and r["config"] != last:
            t.add_section()
        last = r["config"]
        note = r.get("skip") or r.get("error")
        if note:
            t.add_row(r["config"], r["mode"], "", "", "", "", "", "", "", "", "",
                      escape(("skip: " if r.get("skip") else "ERROR: ") + note[:90]))
            continue
        check = escape(str(r.get("check", "")))
        if r.get("check_ok") is False:
            check = f"[bold red]{check}[/]"
        t.add_row(r["config"], r["mode"], num(r.get("tokens_per_s"), "{:.1f}" if not sweep.cuda else "{:.0f}"),
                  num(r.get("speedup_vs_stock"), "{:.2f}x"), num(r.get("gap_closed"), "{:.0%}"),
                  num(r.get("x_full_graph"), "{:.2f}"), host_cell(r), num(r.get("gpu_busy_ms")),
                  num(r.get("step_ms")), num(r.get("launches_per_step"), "{:.0f}"), num(r.get("per_launch_us")), check)
    console.print(t)
    console.print("host ms: median host time per step until the last launch returned (incl. input staging); "
                  "GPU ms: device time per step with the GPU held busy; step ms: median wall per step incl. the "
                  "token read-back sync; launches: host-issued kernels + copies + graph replays per step; "
                  "µs/launch: jitlab's median (argument update + launcher call) from sampled records; "
                  "gap closed = (mode - eager_stock) / (full_graph - eager_stock) in tokens/s.")
    flagged = [r for r in results if r.get("host_unstable")]
    if flagged:
        console.print(unstable_footnote(len(flagged)))
    s = summarize(results)
    if s.get("goal_config"):
        console.print(f"[bold]Goals at {s['goal_config']}[/]: eager_jitlab_tuned closes "
                      f"{num(s.get('eager_jitlab_tuned.gap_closed'), '{:.0%}', 'n/a')} of the eager->full-graph gap "
                      f"(goal >= 80%; safe: {num(s.get('eager_jitlab_safe.gap_closed'), '{:.0%}', 'n/a')}); "
                      f"piecewise_jitlab reaches {num(s.get('piecewise_jitlab.x_full_graph'), '{:.3f}', 'n/a')}x "
                      "the full graph (goal >= 0.95).")
    cross = [c for c in s.get("crossover", []) if len(c) > 4]
    if len(cross) > 1:
        ct = Table(title="crossover: tokens/s ratio jitlab / stock (eager tuned; piecewise)")
        for col in ("layers", "context", "batch", "eager tuned/stock", "eager safe/stock", "piecewise jit/stock",
                    "eager host ms", "GPU ms"):
            ct.add_column(col, justify="right")
        for c in sorted(cross, key=lambda c: (c["layers"], c["context"], c["batch"])):
            def mark(x):
                if not isinstance(x, (int, float)):
                    return ""
                return f"{x:.2f}" if x >= 1.05 else f"[dim]{x:.2f}[/]"

            def flag(key):
                return UNSTABLE_MARK if c.get(f"{key}.host_unstable") else ""

            ct.add_row(str(c["layers"]), str(c["context"]), str(c["batch"]),
                       *(mark(c.get(k)) + flag(k) for k in ("eager_jitlab_tuned/eager_stock",
                                                            "eager_jitlab_safe/eager_stock",
                                                            "piecewise_jitlab/piecewise_stock")),
                       num(c.get("eager_stock.host_ms")) + flag("eager_stock"),
                       num(c.get("full_graph.gpu_busy_ms") or c.get("eager_stock.gpu_busy_ms")))
        console.print(ct)
        if any(k.endswith(".host_unstable") for c in cross for k in c):
            console.print(f"{UNSTABLE_MARK}: a ratio or host ms that involves a trial whose step times were not flat "
                          "(see the footnote of the table above)")
        if sweep.cuda:
            console.print("dim: < 5% gain (launch overhead no longer turns into tokens/s: the GPU time per step "
                          "exceeds the host time)")
        else:
            console.print("CPU demo: interpreter times, not launch overhead; the ratios carry no meaning")


def profile_rows(info: dict | None, cuda: bool) -> list[tuple[str, str]]:
    """What `--torch-profile` did, as (what, value) rows: the files and the merge's alignment checks."""
    if not info:
        return [("torch profile", "not made (the sweep stopped before its first configuration finished)")]
    if info.get("error"):
        return [("torch profile", f"FAILED: {info['error']}")]
    rows = [("torch profile", f"{info['torch_profile']} ({', '.join(info['modes'])}: {info['steps']} steps each, "
                              f"{info['activities']}, {info['bytes'] / 1e6:.1f} MB)")]
    if info.get("merge_error"):
        return rows + [("merged timeline", f"FAILED: {info['merge_error']}")]
    if "merged" not in info:
        return rows
    rows.append(("merged timeline", f"{info['merged']} (open in ui.perfetto.dev; clock {info.get('clock')}, "
                                    f"{info.get('events')} jitlab events + {info.get('torch_events')} torch events)"))
    rows.append(("steps aligned", f"{info.get('annotations_inside_jitlab_spans')} of {info.get('annotations')} "
                                  "profiled steps (torch record_function) lie inside their jitlab step span"))
    launches = (f"{info.get('jitlab_launches_with_a_launch_call', 0)} of {info.get('jitlab_launches_in_profile', 0)} "
                "jitlab.launch spans in the window contain a torch launch call; "
                f"{info.get('launch_calls_inside_jitlab_launches')} of {info.get('launch_calls')} torch launch calls "
                "lie inside a jitlab.launch span (the rest: eager_stock's and torch's own launches)")
    if not cuda:
        launches = "none on CPU (no CUDA launch calls under the interpreter): " + launches
    rows.append(("launches aligned", launches))
    return rows


def print_profile(info: dict | None, cuda: bool, file: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="torch.profiler window (--torch-profile)", show_header=False)
    t.add_column("what")
    t.add_column("value", overflow="fold")
    for k, v in profile_rows(info, cuda):
        t.add_row(k, escape(v))
    Console(file=file or sys.stdout, width=200).print(t)


# ========================================================================================= estimate


def estimate(s: SweepConfig) -> dict:
    """A rough wall-clock estimate of the sweep on an H200 (or the CPU demo)."""
    if not s.cuda:
        n = len(s.configs()) * sum(MODES[m].kind == "eager" for m in s.mode_names())  # graph modes skip
        return {"total_s": 3.0 + n * s.steps_per_trial() * 0.35, "note": " (CPU demo; interpreter speed varies)"}
    m = s.model
    hbm = 3.0e12  # effective bytes/s
    # host ms per layer, from the H200 launch-overhead trials (stock unified attention 52-72 us/launch,
    # cache write 40 us; jitlab safe ~25 us, tuned ~17 us) plus the Python helpers and 4 GEMM launches
    host_per_layer_ms = {"eager_stock": 0.35, "eager_jitlab_safe": 0.20, "eager_jitlab_tuned": 0.15,
                         "piecewise_stock": 0.16, "piecewise_jitlab": 0.07, "piecewise_jitlab_safe": 0.08,
                         "full_graph": 0.0}
    total = 5.0  # startup, weights
    for c in s.configs():
        steps = s.steps_per_trial() if c.kind == "decode" else 8 * (2 + s.mixed_warmup_cycles + s.mixed_cycles)
        tokens_ctx = (c.batch * c.context) if c.kind == "decode" else 32 * c.context
        kv = tokens_ctx * c.layers * m.block_bytes / m.block_size
        gpu_ms = (m.weight_bytes(c.layers) + kv) / hbm * 1e3
        total += 0.3 + kv * 2 / 1e12  # allocation + random fill
        for name in s.mode_names():
            if c.kind == "mixed" and name == "full_graph":
                continue
            host_ms = host_per_layer_ms.get(name, 0.2) * c.layers + 0.3
            total += steps * (max(host_ms, gpu_ms) + 0.3) / 1e3
            if name.startswith("piecewise"):
                total += (c.layers + 1) * 0.006 * (8 if c.kind == "mixed" else 1) + 0.2
            elif name == "full_graph":
                total += 0.05 + gpu_ms / 1e3
    return {"total_s": total, "note": " (+ up to ~1 min of Triton compilation on a cold cache)"}
