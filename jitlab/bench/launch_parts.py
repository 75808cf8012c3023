"""What a native-dispatcher hit costs, part by part: the launch-overhead experiment's breakdown.

For one policy (safe by default) the experiment times, next to the whole launch, hits of separate
jitcache wrappers whose dispatcher stops after each part (`jitlab._triton.native.STAGES`, dispatch.cpp's
STOP_*): binding the arguments, finding the entry (Triton state, device, scope, the key compared item by
item), the checks (used globals, verify, hooks, grid), counting the hit and reading the stream, and
converting the arguments into the parameter buffer (tensor addresses included) without the driver call.
Each part's cost is the difference of consecutive medians, `c_call` (the call site alone) first and
the whole launch last (the driver call, with the GIL released around it as Triton does), with the C
floor beside it: the breakdown the native-dispatcher issue asks for where a goal is not met.
Differences of medians of separately timed variants carry the host's drift (about ±0.1 µs on the H200).
"""

from __future__ import annotations

from typing import Any

from .runner import Variant

KIND = "parts"
# Part names in the tables, after the call site (c_call): one per stage, then the driver call.
PARTS = ("bind arguments", "find entry (key)", "checks (globals, hooks, grid)", "count + stream",
         "pack parameters", "driver call")


def variant_name(policy: str, stage: str) -> str:
    return f"jitcache:{policy} ..{stage}"


def variants(case: Any, policy: Any) -> list[Variant]:
    """One variant per stage: a fresh wrapper with `policy`, its entry made by one whole launch, then
    its dispatcher stopped after that stage (it launches nothing more)."""
    from .. import jitcache
    from .._triton import native

    k, g, a, kw = case.kernel, case.grid, case.args, case.kwargs
    mod, why = native.DISPATCH.get(wait=True)
    out = []
    for stage in native.STAGES:
        name = variant_name(policy.name, stage)
        if mod is None:
            out.append(Variant(name, KIND, skip=why))
            continue
        jk = jitcache(policy=policy)(k)
        jk[g](*a, **kw)  # compiles and stores the entry; the next call is a hit in C
        d = jk.native_dispatcher()
        if d is None:
            out.append(Variant(name, KIND, skip=f"no native dispatcher: {jk.dispatcher_reason}"))
            continue
        native.stop_hits(mod, d, stage)
        out.append(Variant(name, KIND, lambda jk=jk: jk[g](*a, **kw), check=False))
    return out


def breakdown(rows: list[dict], workload: str, policy: str = "safe") -> list[tuple[str, float | None]]:
    """[(part, µs)] for `workload`: the call site, each part, then the whole launch and the C floor (the
    last two as totals, not parts). A part is None where a variant it needs was not timed."""
    med = {r["variant"]: r.get("median_us") for r in rows if r.get("workload") == workload and not r.get("skip")}
    from .._triton.native import STAGES

    steps = [med.get("c_call")] + [med.get(variant_name(policy, s)) for s in STAGES] + [med.get(f"jitcache:{policy}")]
    out: list[tuple[str, float | None]] = [("call site (c_call)", steps[0])]
    for part, before, after in zip(PARTS, steps, steps[1:]):
        out.append((part, after - before if before is not None and after is not None else None))
    out += [(f"whole launch (jitcache:{policy})", steps[-1]), ("C floor", med.get("c_floor"))]
    return out


def markdown(rows: list[dict], policy: str = "safe") -> list[str]:
    """The breakdown as a markdown table, one column per workload (empty when no parts were timed)."""
    from .fmt import num

    names = list(dict.fromkeys(r["workload"] for r in rows if r.get("kind") == KIND and r.get("median_us")))
    if not names:
        return []
    table = {w: breakdown(rows, w, policy) for w in names}
    parts = [p for p, _ in table[names[0]]]
    out = [f"Where a `{policy}` hit's time goes (µs per launch, differences of medians of hits stopped after "
           "each part, same run):", "",
           "| part | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for i, part in enumerate(parts):
        cells = []
        for w in names:
            v = table[w][i][1]
            cells.append(num(v) if v is None or i == 0 or i >= len(parts) - 2 else f"{v:+.2f}")
        out.append(f"| {part} | " + " | ".join(cells) + " |")
    return out
