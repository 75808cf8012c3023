"""What a native-dispatcher hit costs, part by part, and A/B variants of its driver call: the
launch-overhead experiment's breakdown.

For one policy (safe by default) the experiment times, next to the whole launch, hits of separate
jitcache wrappers on the bench build of the dispatcher (`native.DISPATCH_BENCH`, compiled with
-DJITLAB_BENCH_STOPS; the shipping dispatcher has no stops) whose dispatcher stops after each part
(`jitlab._triton.native.STAGES`, dispatch.cpp's STOP_*): binding the arguments, finding the entry (Triton state, device, scope, the key compared item by
item), the checks (used globals, verify, hooks, grid), counting the hit and reading the stream, and
converting the arguments into the parameter buffer (tensor addresses included) without the driver call.
Each part's cost is the difference of consecutive medians, `c_call` (the call site alone) first and
the whole launch last (the driver call, with the GIL released around it as Triton does), with the C
floor beside it: the breakdown the native-dispatcher issue asks for where a goal is not met.
Differences of medians of separately timed variants carry the host's drift (about ±0.1 µs on the H200).

The same build also launches whole hits with one change each (`native.AB_VARIANTS`: the GIL kept around
the driver call, cuLaunchKernelEx instead of cuLaunchKernel, the parameter array built once, the stream
read once, and for a callable grid Triton's whole dict instead of the items the grid reads), next to its
own stock launch (`ab:launch`): each row's difference from that one is what the change is worth. And
`launcher_c_loop` calls jitlab's launcher (packing included) from a C loop, as the C floor calls a bare
cuLaunchKernel: what the driver call costs when no Python runs between launches.
"""

from __future__ import annotations

from typing import Any

from .runner import Variant

KIND = "parts"
AB_KIND = "ab"
STOCK = "launch"  # the bench build's whole launch, no stop, no A/B variant: the A/B rows' reference
LOOP = "launcher_c_loop"  # jitlab's launcher called from a C loop (no Python between launches), beside c_floor
# Part names in the tables, after the call site (c_call): one per stage, then the driver call.
PARTS = ("bind arguments", "find entry (key)", "checks (globals, hooks, grid)", "count + stream",
         "pack parameters", "driver call")


def variant_name(policy: str, stage: str) -> str:
    return f"jitcache:{policy} ..{stage}"


def ab_name(policy: str, ab: str) -> str:
    return f"jitcache:{policy} ab:{ab}"


def _bench_wrapper(case: Any, policy: Any) -> tuple[Any, Any, str | None]:
    """(bench module, a fresh jitcache wrapper of `case` on the bench build with its entry made, skip
    reason or None)."""
    from .. import jitcache
    from .._triton import native

    native.DISPATCH.get(wait=True)  # the shipping build first: it must not replace the bench one later
    mod, why = native.DISPATCH_BENCH.get(wait=True)
    if mod is None:
        return None, None, why
    jk = jitcache(policy=policy)(case.kernel)
    jk.use_dispatcher_build(mod)
    if jk.native_dispatcher() is None:
        return mod, None, f"no native dispatcher: {jk.dispatcher_reason}"
    case.launch(jk)  # compiles and stores the entry (its launcher from the bench build); then hits in C
    return mod, jk, None


def variants(case: Any, policy: Any) -> list[Variant]:
    """One variant per stage: a fresh wrapper with `policy` on the bench build, its entry made by one whole
    launch, then its dispatcher stopped after that stage (it launches nothing more)."""
    from .._triton import native

    g, a, kw = case.grid, case.args, case.kwargs
    out = []
    for stage in native.STAGES:
        name = variant_name(policy.name, stage)
        mod, jk, why = _bench_wrapper(case, policy)
        if why is not None:
            out.append(Variant(name, KIND, skip=why))
            continue
        native.stop_hits(mod, jk.native_dispatcher(), stage)
        out.append(Variant(name, KIND, lambda jk=jk: jk[g](*a, **kw), check=False))
    return out


def ab_variants(case: Any, policy: Any) -> list[Variant]:
    """The bench build's stock whole launch (`ab:launch`) and one whole launch per A/B variant
    (`native.AB_VARIANTS`; the grid variants only for a callable grid), each checked like any launch."""
    from .._triton import native

    g, a, kw = case.grid, case.args, case.kwargs
    names = [STOCK] + [n for n in native.AB_VARIANTS if not n.startswith("grid-") or callable(g)]
    out = []
    for ab in names:
        mod, jk, why = _bench_wrapper(case, policy)
        if why is not None:
            out.append(Variant(ab_name(policy.name, ab), AB_KIND, skip=why))
            continue
        native.ab_launches(mod, jk.native_dispatcher(), [] if ab == STOCK else [ab])
        out.append(Variant(ab_name(policy.name, ab), AB_KIND, lambda jk=jk: jk[g](*a, **kw), policy=policy))
    return out


def loop_variant(case: Any) -> Variant:
    """jitlab's launcher for `case`'s loaded kernel (the bench build's), timed in a C loop like the C floor."""
    from .._triton import native

    mod, why = native.DISPATCH_BENCH.get(wait=True)
    if mod is None:
        return Variant(LOOP, AB_KIND, skip=why)
    try:
        import torch

        from .floors import loaded

        compiled, vals, (gx, gy, gz) = loaded(case)
        launcher, why = native.make_launch(compiled, {}, device=torch.cuda.current_device(), module=mod)
        if launcher is None:
            return Variant(LOOP, AB_KIND, skip=why)
    except Exception as e:  # noqa: BLE001 - a variant that cannot run is reported, the sweep goes on
        return Variant(LOOP, AB_KIND, skip=f"{type(e).__name__}: {e}")

    def timer(n: int) -> int:
        return mod.launch_loop(launcher, n, gx, gy, gz, torch.cuda.current_stream().cuda_stream, vals)

    v = Variant(LOOP, AB_KIND, lambda: timer(1), timer=timer)
    v.keep = (launcher, vals)
    return v


def ab_table(rows: list[dict], workload: str, policy: str = "safe") -> list[tuple[str, float | None]]:
    """[(A/B variant, µs per launch minus the bench build's stock launch)] for `workload` (None where either
    was not timed)."""
    from .._triton.native import AB_VARIANTS

    med = {r["variant"]: r.get("median_us") for r in rows if r.get("workload") == workload and not r.get("skip")}
    stock = med.get(ab_name(policy, STOCK))
    return [(ab, med[ab_name(policy, ab)] - stock
             if stock is not None and med.get(ab_name(policy, ab)) is not None else None) for ab in AB_VARIANTS]


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


def ab_markdown(rows: list[dict], policy: str = "safe") -> list[str]:
    """The A/B table, one column per workload (empty when no A/B variant was timed)."""
    from .._triton.native import AB_VARIANTS
    from .fmt import num

    names = list(dict.fromkeys(r["workload"] for r in rows if r.get("kind") == AB_KIND and r.get("median_us")))
    if not names:
        return []
    table = {w: dict(ab_table(rows, w, policy)) for w in names}
    med = {(r["workload"], r["variant"]): r.get("median_us") for r in rows if not r.get("skip")}
    out = [f"The driver call, A/B (µs per launch of a `{policy}` hit on the bench build with one change, minus "
           "that build's stock launch, same run; negative: the change saves):", "",
           "| change | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names),
           "| stock launch, bench build (µs) | " + " | ".join(num(med.get((w, ab_name(policy, STOCK)))) for w in names)
           + " |"]
    for ab, (_, what) in AB_VARIANTS.items():
        out.append(f"| {ab}: {what} | " + " | ".join(
            "" if table[w][ab] is None else f"{table[w][ab]:+.2f}" for w in names) + " |")
    out.append("| jitlab's launcher in a C loop, no Python between launches (µs) | "
               + " | ".join(num(med.get((w, LOOP))) for w in names) + " |")
    out.append("| C floor: cuLaunchKernel in a C loop, prebuilt parameters (µs) | "
               + " | ".join(num(med.get((w, "c_floor"))) for w in names) + " |")
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
