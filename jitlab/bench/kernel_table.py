"""Per-kernel launch statistics of a program run twice (stock, jitlab), from its trace files.

Input: the `jitlab.launch` spans of each run (`jitlab.telemetry.load_traces`). Per kernel name:

- launches and outcomes (hit, miss, locked_miss, fallback, passthrough) with the reasons given. At
  trace level `sampled` only every Nth hit is a span: each hit span counts N (the run's
  `jitlab.trace.sample_every`), every other outcome counts 1 (they are always recorded);
- host µs per launch: the (weighted) median of `jitlab.arg_update.duration_ns +
  jitlab.launch.duration_ns` (t_enter to t_exit of the launch call), so the few launches that
  compile do not move it;
- launch time saved: (stock median - jitlab median) x jitlab launches.

Timings are left out (None) for runs without a CUDA GPU: under TRITON_INTERPRET=1 everything passes
through and the interpreter's times say nothing about launch overhead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

LAUNCH = "jitlab.launch"
RESULT, KERNEL, REASON = "jitlab.cache.result", "jitlab.kernel", "jitlab.fallback.reason"
ARGS_NS, CALL_NS = "jitlab.arg_update.duration_ns", "jitlab.launch.duration_ns"
SAMPLE_EVERY, LEVEL = "resource.jitlab.trace.sample_every", "resource.jitlab.trace.level"
CUDA = "resource.jitlab.cuda.available"


@dataclass
class KernelStats:
    kernel: str
    outcomes: Counter = field(default_factory=Counter)  # weighted launch counts per outcome
    reasons: Counter = field(default_factory=Counter)  # fallback / pass-through reason -> launches
    samples: list = field(default_factory=list)  # (host ns, weight)

    @property
    def launches(self) -> int:
        return int(sum(self.outcomes.values()))

    def median_us(self) -> float | None:
        if not self.samples:
            return None
        pts = sorted(self.samples)
        half, acc = sum(w for _, w in pts) / 2, 0.0
        for ns, w in pts:
            acc += w
            if acc >= half:
                return ns / 1e3
        return pts[-1][0] / 1e3


def _present(v: Any) -> bool:
    try:
        return v is not None and bool(v == v)
    except TypeError:  # pandas.NA
        return False


def launch_stats(df: Any) -> dict[str, KernelStats]:
    """kernel name -> KernelStats of the launch spans in `df` (a load_traces DataFrame). Vectorized:
    a tutorial's trace holds hundreds of thousands of launches."""
    import numpy as np
    import pandas as pd

    out: dict[str, KernelStats] = {}
    if df is None or df.empty or "name" not in df:
        return out
    spans = df[df["name"] == LAUNCH]
    if spans.empty:
        return out

    def col(name: str, default: Any = None) -> pd.Series:
        return spans[name] if name in spans else pd.Series([default] * len(spans), index=spans.index)

    result = col(RESULT).astype(str)
    every = pd.to_numeric(col(SAMPLE_EVERY), errors="coerce").fillna(1).astype(int).clip(lower=1)
    sampled_hit = (result == "hit") & (col(LEVEL).astype(str) == "sampled")
    weight = pd.Series(np.where(sampled_hit, every, 1), index=spans.index)
    host = pd.to_numeric(col(ARGS_NS), errors="coerce") + pd.to_numeric(col(CALL_NS), errors="coerce")
    reason = col(REASON)
    frame = pd.DataFrame({"kernel": col(KERNEL).astype(str), "result": result, "weight": weight, "host": host,
                          "reason": reason.where(reason.notna() & (result != "hit"), None)})
    for name, g in frame.groupby("kernel", sort=True):
        st = out[name] = KernelStats(name)
        st.outcomes.update({str(k): int(v) for k, v in g.groupby("result")["weight"].sum().items()})
        why = g[g["reason"].notna()]
        by_reason = why.groupby(["result", "reason"])["weight"].sum()
        st.reasons.update({f"{r}: {w}": int(v) for (r, w), v in by_reason.items()})
        timed = g[g["host"].notna()]
        st.samples = list(zip(timed["host"].astype("int64").tolist(), timed["weight"].tolist()))
    return out


def has_timings(df: Any) -> bool:
    """True when the trace comes from a CUDA run (timings mean something)."""
    if df is None or df.empty or CUDA not in df:
        return False
    vals = [v for v in df[CUDA] if _present(v)]
    return bool(vals) and all(bool(v) for v in vals)


def rows(program: str, stock: dict[str, KernelStats], jitlab: dict[str, KernelStats], timings: bool) -> list[dict]:
    """One row per kernel seen in either run (JSON-ready: numbers, strings, None)."""
    out = []
    for name in sorted(set(stock) | set(jitlab)):
        s, j = stock.get(name), jitlab.get(name)
        launches = j.launches if j else 0
        hits = j.outcomes.get("hit", 0) if j else 0
        s_us = s.median_us() if (s and timings) else None
        j_us = j.median_us() if (j and timings) else None
        saved = (s_us - j_us) * launches / 1e3 if s_us is not None and j_us is not None else None
        out.append({
            "program": program, "kernel": name,
            "stock_launches": s.launches if s else 0, "launches": launches, "hits": hits,
            "hit_rate": hits / launches if launches else None,
            "misses": (j.outcomes.get("miss", 0) + j.outcomes.get("locked_miss", 0)) if j else 0,
            "fallbacks": (j.outcomes.get("fallback", 0) + j.outcomes.get("passthrough", 0)) if j else 0,
            "reasons": "; ".join(f"{k} ({v})" for k, v in sorted(j.reasons.items())) if j else "",
            "stock_us": s_us, "jitlab_us": j_us, "saved_ms": saved,
        })
    return out


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


LEFT = ("program", "kernel", "fallbacks / pass-throughs")
COLUMNS = ("program", "kernel", "stock launches", "jitlab launches", "hits", "hit rate", "misses",
           "fallbacks / pass-throughs", "stock µs/launch", "jitlab µs/launch", "saved ms")


def cells(r: dict) -> list[str]:
    from .fmt import num

    fb = str(r["fallbacks"]) + (f" ({r['reasons']})" if r["reasons"] else "")
    return [r["program"], r["kernel"], str(r["stock_launches"]), str(r["launches"]), str(r["hits"]),
            _pct(r["hit_rate"]), str(r["misses"]), fb, num(r["stock_us"], missing="n/a"),
            num(r["jitlab_us"], missing="n/a"), num(r["saved_ms"], "{:.1f}", missing="n/a")]


def markdown(kernel_rows: Iterable[dict]) -> str:
    """The per-kernel table in Markdown (docs/ANY_PROGRAM.md's H200 table)."""
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "".join("---|" if c in LEFT else "---:|" for c in COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells(r)) + " |" for r in kernel_rows]
    return "\n".join(lines)


def rich_table(kernel_rows: Iterable[dict], title: str, caption: str | None = None):
    from rich.table import Table

    t = Table(title=title, caption=caption)
    for c in COLUMNS:
        t.add_column(c, justify="left" if c in LEFT else "right")
    for r in kernel_rows:
        t.add_row(*cells(r))
    return t
