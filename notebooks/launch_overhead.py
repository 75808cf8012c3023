# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Launch overhead: host µs per launch, stock Triton vs jitlab policies vs the floors
#
# **What it shows.** For every workload kernel of the launch-overhead experiment
# (`experiments/launch_overhead.py`):
#
# 1. the host time per launch (p50 with p10–p90 whiskers) of stock Triton, the direct compiled
#    launch (Triton's stored `CompiledKernel` called directly), each jitcache policy, the two floors
#    (the same binary launched from Python through cuda-python, and from a C loop) and a CUDA-graph
#    replay (per captured launch), plus each one's multiple of the C floor;
# 2. for jitcache policies, the split of a hit into argument update (binding, key, argument update)
#    and the launcher call;
# 3. cache hits, misses and locked misses over the run, from the `jitlab.launch` spans and the
#    per-trial counters;
# 4. what each relaxation buys (µs saved against the safe policy) and what it risks;
# 5. the cost of tracing (levels summary / sampled / full against off);
# 6. the first launch of a fresh kernel object, jitcache vs stock Triton.
#
# **Reads** one trace file, `traces/launch_overhead-<run_id>.jsonl` (parameter `trace`; default:
# the newest such file directly under `traces/`). Trial spans carry each trial's aggregates
# (`jitlab.median_us`, `jitlab.p10_us`, `jitlab.p90_us`, `jitlab.arg_update_ns`,
# `jitlab.launch_call_ns`, `jitlab.counters`, `jitlab.policy.json`); the run span carries the
# provenance. Medians and p10/p90 are over repeats (each repeat: the mean of a few hundred launches
# with the GPU held busy). It never launches a kernel.

# %%
import importlib.util
import pathlib
import sys

# notebooks/_common.py: found from cwd = notebooks/ or the repository root, else next to the jitlab package
_spec = importlib.util.find_spec("jitlab")
for _d in (pathlib.Path.cwd(), pathlib.Path.cwd() / "notebooks",
           *([pathlib.Path(_spec.origin).parents[1] / "notebooks"] if _spec and _spec.origin else [])):
    if (_d / "_common.py").is_file():
        sys.path.insert(0, str(_d.resolve()))
        break
import _common as C  # noqa: E402

# %% tags=["parameters"]
trace = C.newest_trace("launch_overhead")  # a traces/launch_overhead-<run_id>.jsonl file
save_figure = False  # True: also write the key figure (section 1) to `figure_path`, for the README
figure_path = "docs/img/launch_overhead.png"
figure_dir = None  # a folder: every figure is also saved there as <name>.png

# %%
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

C.script_args(globals(), ["trace", "save_figure", "figure_path", "figure_dir"])
C.setup_matplotlib()
df, info = C.open_run(trace, "launch_overhead")
C.say(C.banner(info, trace))

# %% [markdown]
# ## The trials
# One trial span per (workload, variant). `kind`: `baseline` (stock Triton, the direct compiled
# launch, a Python no-op call), `jitcache` (a policy; `trace=<level>` variants run the safe policy
# with recording on), `floor`, `graph` (per launch of a CUDA-graph replay of 64 captured launches),
# `first` (the first launch of a fresh kernel object, in ms).

# %%
trials = C.kind(df, "trial")
T = pd.DataFrame({
    "workload": C.col(trials, "jitlab.workload", None),
    "variant": C.col(trials, "jitlab.variant", None),
    "kind": C.col(trials, "jitlab.variant.kind", None),
    "policy": C.col(trials, "jitlab.policy", None),
    "level": C.col(trials, "jitlab.trace_level", "off").fillna("off"),
    "p50_us": C.num(C.col(trials, "jitlab.median_us")),
    "p10_us": C.num(C.col(trials, "jitlab.p10_us")),
    "p90_us": C.num(C.col(trials, "jitlab.p90_us")),
    "arg_update_us": C.num(C.col(trials, "jitlab.arg_update_ns")) / 1e3,
    "launch_call_us": C.num(C.col(trials, "jitlab.launch_call_ns")) / 1e3,
    "correct": C.col(trials, "jitlab.correct", None),
    "note": C.col(trials, "jitlab.skip", None).fillna(C.col(trials, "jitlab.error", None)),
    "counters": C.col(trials, "jitlab.counters", None).map(lambda s: C.jloads(s, {})),
    "policy_json": C.col(trials, "jitlab.policy.json", None).map(lambda s: C.jloads(s)),
    "trace_cost_us": C.num(C.col(trials, "jitlab.trace_cost_us")),
    "span_id": trials["span_id"],
    "start_ns": trials["start_ns"],
}).reset_index(drop=True)
T = T[T["workload"].notna()]
if not T["p50_us"].notna().any():
    C.stop(f"**`{trace}` holds no timed launch-overhead trials**: it is not a run of "
           "`python -m experiments.launch_overhead` (this notebook shows only those). For a trace of your own "
           f"program: `python -m jitlab.bench.report {trace}` (a table per kernel), `jitlab-export {trace} "
           "--chrome out.json` (Perfetto), or `jitlab.telemetry.load_traces` in Python.")
# a jitcache variant's label is its name ("safe", "seed", "safe python-path"): two variants may share a policy
jit = T["kind"] == "jitcache"
T.loc[jit, "policy"] = T.loc[jit, "variant"].str.replace(r"^jitcache:", "", regex=True).str.replace(
    r" trace=\w+$", "", regex=True)
WORKLOADS = list(dict.fromkeys(T.sort_values("start_ns")["workload"]))  # in run order
floor = T[T["variant"] == "c_floor"].set_index("workload")["p50_us"]
T["x_floor"] = T["p50_us"] / T["workload"].map(floor)
# policies in the sweep's order (trials of a workload are opened in the order of the TOML file)
POLICIES = list(dict.fromkeys(T[(T["kind"] == "jitcache") & (T["level"] == "off")].sort_values("start_ns")["policy"]))
C.say(f"{len(T)} trials: {len(WORKLOADS)} workloads ({', '.join(WORKLOADS)}) × "
      f"{T['variant'].nunique()} variants; jitcache policies: {', '.join(POLICIES)}.")
problems = T[T["note"].notna() | ~T["correct"].isin(["ok", "n/a", None])]
if len(problems):
    C.say("**Trials skipped, failed or with a failed correctness check:**")
    C.table(problems[["workload", "variant", "correct", "note"]])

# %% [markdown]
# ## 1. Host µs per launch against stock Triton, the direct compiled launch and the C floor
# Bars: p50 over repeats; whiskers: p10–p90. The dashed line is the C floor (the same binary and
# arguments launched from a C loop with a prebuilt parameter array: what any launcher pays).
# "Python call only" (where the run has it) is a no-op with the kernel's signature called as
# `kernel[grid](...)`: what binding the arguments in Python costs before any launch work.
# The number at each bar is its multiple of the C floor.

# %%
LABELS = {"triton": "stock Triton", "compiled_run": "direct compiled launch", "cuda_python_floor": "floor: cuda-python",
          "c_floor": "floor: C loop", "cuda_graph": "CUDA graph replay (per launch)", "python_nop": "Python no-op call",
          "python_call": "Python call, kernel's signature (no launch)"}
COLORS = {"baseline": "#d62728", "compiled": "#ff7f0e", "jitcache": "#1f77b4", "pycall": "#c5b0d5",
          "floor": "#7f7f7f", "graph": "#2ca02c"}
LEGEND = {"baseline": "stock Triton", "compiled": "direct compiled launch", "jitcache": "jitcache policy",
          "pycall": "Python call only", "floor": "floors", "graph": "CUDA graph"}


def label(v):
    return LABELS.get(v, v.replace("jitcache:", "jitcache ") if isinstance(v, str) else v)


def color(row):
    if row["variant"] == "compiled_run":
        return COLORS["compiled"]
    if row["variant"] == "python_call":
        return COLORS["pycall"]
    return COLORS.get(row["kind"], "#9467bd")


ORDER = ["triton"] + [f"jitcache:{p}" for p in POLICIES] + ["compiled_run", "python_call", "cuda_python_floor", "c_floor",
                                                            "cuda_graph"]
ORDER = [v for v in ORDER if v in set(T["variant"])]  # what this run has


def overview_figure(T):
    ws = [w for w in WORKLOADS if T[(T["workload"] == w) & T["p50_us"].notna()].shape[0]]
    fig, axes = plt.subplots(1, len(ws), figsize=(3.6 * len(ws) + 1.8, 0.34 * len(ORDER) + 2.0), sharey=True,
                             squeeze=False)
    y = np.arange(len(ORDER))
    for ax, w in zip(axes[0], ws):
        d = T[(T["workload"] == w) & (T["level"] == "off")].set_index("variant").reindex(ORDER)
        ok = d["p50_us"].notna().to_numpy()
        p50, lo, hi = d["p50_us"].to_numpy(), d["p10_us"].to_numpy(), d["p90_us"].to_numpy()
        cols = [color({"variant": v, "kind": k}) for v, k in zip(d.index, d["kind"])]
        ax.barh(y[ok], p50[ok], color=np.array(cols, dtype=object)[ok], alpha=0.85, height=0.7)
        ax.errorbar(p50[ok], y[ok], xerr=[np.clip(p50 - lo, 0, None)[ok], np.clip(hi - p50, 0, None)[ok]],
                    fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
        if w in floor.index and not np.isnan(floor[w]):
            ax.axvline(floor[w], color="black", ls="--", lw=0.9)
        for yi, (v, x, xf) in enumerate(zip(d.index, p50, d["x_floor"])):
            if not np.isnan(x):
                txt = f"{x:.1f}" if x >= 1 else f"{x:.2f}"
                if not np.isnan(xf):
                    txt += f" ({xf:.1f}×)" if xf >= 1 else f" ({xf:.2f}×)"
                ax.text(np.nanmax([x, hi[yi]]) + np.nanmax(hi) * 0.02, yi, txt, va="center", fontsize=7)
            else:
                ax.text(0, yi, "  not run", va="center", fontsize=7, color="grey")
        ax.set_xlim(0, np.nanmax(hi) * 1.35)
        ax.set_title(w)
        ax.set_xlabel("host time per launch (µs)")
        ax.grid(axis="y", visible=False)
    axes[0][0].set_yticks(y, [label(v) for v in ORDER])
    axes[0][0].invert_yaxis()
    present = {"baseline"} | {"jitcache", "floor", "graph"} | ({"compiled"} if "compiled_run" in ORDER else set()) | (
        {"pycall"} if "python_call" in ORDER else set())
    keys = [k for k in COLORS if k in present]
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[k]) for k in keys] + [
        plt.Line2D([], [], color="black", ls="--", lw=0.9)]
    fig.legend(handles, [LEGEND[k] for k in keys] + ["C floor"], loc="lower center", ncol=len(keys) + 1,
               bbox_to_anchor=(0.5, -0.01))
    fig.suptitle("Host µs per launch (bar p50, whiskers p10–p90 over repeats; label: p50 µs (× C floor))\n"
                 + C.provenance_line(info), fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


fig = overview_figure(T)
if save_figure:
    C.say(f"key figure written to `{C.save_png(fig, figure_path)}`")
C.show(fig, "launch_overhead_overview", figure_dir)

# %%
head = []
for w in WORKLOADS:
    d = T[(T["workload"] == w) & (T["level"] == "off")].set_index("variant")["p50_us"]
    jc = T[(T["workload"] == w) & (T["kind"] == "jitcache") & (T["level"] == "off")].set_index("policy")["p50_us"]
    if "triton" not in d or jc.dropna().empty:
        continue
    best = jc.idxmin()
    head.append(f"- **{w}**: stock Triton {C.fmt(d.get('triton'), '.1f')} µs → jitcache safe "
                f"{C.fmt(jc.get('safe'), '.1f')} µs ({C.fmt(d.get('triton') / jc.get('safe', np.nan), '.1f')}× faster), "
                f"best policy `{best}` {jc[best]:.1f} µs ({d.get('triton') / jc[best]:.1f}×); direct compiled launch "
                f"{C.fmt(d.get('compiled_run'), '.1f')} µs; C floor {C.fmt(d.get('c_floor'), '.1f')} µs "
                f"(safe is {C.fmt(jc.get('safe', np.nan) / d.get('c_floor', np.nan), '.1f')}× the floor, stock Triton "
                f"{C.fmt(d.get('triton') / d.get('c_floor', np.nan), '.1f')}×).")
C.say("**Per workload (p50):**\n\n" + "\n".join(head))

# %% [markdown]
# ### Multiples of the C floor (p50 / C-floor p50)

# %%
xf = (T[T["level"] == "off"].pivot_table(index="variant", columns="workload", values="x_floor", aggfunc="first")
      .reindex([v for v in ORDER + ["python_nop"] if v in set(T["variant"])]).reindex(columns=WORKLOADS))
xf.index = [label(v) for v in xf.index]
C.table(xf)

# %% [markdown]
# ## 2. Argument update vs launcher call (jitcache policies)
# Each jitcache trial ends with a traced pass of hits: the argument update (binding the call's
# arguments, checking the key, writing the launch arguments) and the launcher call, medians in µs.
# The marker is the trial's timed p50 per launch (it also includes the `kernel[grid]` call itself
# and Python overhead around the two parts); the dashed line is the C floor.

# %%
S = T[(T["kind"] == "jitcache") & (T["level"] == "off") & T["arg_update_us"].notna()]
if S.empty:
    C.say("_No argument-update / launch-call split in this trace (no jitcache trials were split)._")
else:
    ws = [w for w in WORKLOADS if w in set(S["workload"])]
    fig, axes = plt.subplots(1, len(ws), figsize=(3.4 * len(ws), 4.2), sharey=False, squeeze=False)
    for ax, w in zip(axes[0], ws):
        d = S[S["workload"] == w].set_index("policy").reindex([p for p in POLICIES if p in set(S["policy"])])
        x = np.arange(len(d))
        ax.bar(x, d["arg_update_us"], color="#1f77b4", label="argument update")
        ax.bar(x, d["launch_call_us"], bottom=d["arg_update_us"], color="#aec7e8", label="launcher call")
        ax.plot(x, d["p50_us"], "k_", ms=14, mew=2, label="timed p50 per launch")
        if w in floor.index:
            ax.axhline(floor[w], color="black", ls="--", lw=0.9, label="C floor")
        ax.set_xticks(x, d.index, rotation=60, ha="right")
        ax.set_title(w)
        ax.set_ylabel("host time per hit (µs)")
        ax.grid(axis="x", visible=False)
    h, lab = axes[0][0].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.01))
    fig.suptitle("Where a jitcache hit spends its host time (medians of traced hits)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    C.show(fig, "launch_overhead_split", figure_dir)
    sp = S.groupby("policy")[["arg_update_us", "launch_call_us"]].median().reindex(POLICIES).dropna()
    if "safe" in sp.index:
        s = sp.loc["safe"]
        lo = sp["arg_update_us"].idxmin()
        C.say(f"Across workloads (median), the safe policy spends {s['arg_update_us']:.1f} µs updating arguments and "
              f"{s['launch_call_us']:.1f} µs in the launcher call; `{lo}` cuts the argument update to "
              f"{sp.loc[lo, 'arg_update_us']:.1f} µs, and the launcher call "
              f"({sp['launch_call_us'].min():.1f}–{sp['launch_call_us'].max():.1f} µs over policies) is then most "
              f"of what is left (the C floor: {C.fmt(floor.median(), '.1f')} µs).")

# %% [markdown]
# ## 3. Hits, misses and locked misses over the run
# From the `jitlab.launch` spans (misses, locked misses and fallbacks are always recorded; hits
# only at the run's trace level: `sampled` keeps every Nth hit) and, complete, from the counters
# each jitcache trial stores (`jitlab.counters`: cumulative over the trial's check, timing and
# traced passes).

# %%
L = df[df["name"] == "jitlab.launch"].copy()
by_id = df.set_index("span_id")
L["parent_name"] = L["parent_id"].map(by_id["name"]) if len(L) else []
L["t_s"] = (L["start_ns"] - df["start_ns"].min()) / 1e9
L["result"] = C.col(L, "jitlab.cache.result", "?")
# the workload of a launch: its trial's; a launch outside any trial (the correctness check before a
# workload's trials, where the misses happen) belongs to the workload whose first trial starts next
L["workload"] = L["parent_id"].map(trials.set_index("span_id")["jitlab.workload"]) if len(L) else []
if len(L) and L["workload"].isna().any():
    w0 = T.groupby("workload")["start_ns"].min().sort_values().reset_index().rename(columns={"start_ns": "w_start"})
    orphan = L[L["workload"].isna()].sort_values("start_ns")
    nxt = pd.merge_asof(orphan[["start_ns"]].reset_index(), w0, left_on="start_ns", right_on="w_start",
                        direction="forward").set_index("index")["workload"]
    L.loc[nxt.index, "workload"] = nxt
L["workload"] = L["workload"].fillna("(outside trials)")
level, every = C.trace_level(info)
C.say(f"{len(L)} launch spans (trace level `{level}`" + (f", every {every}th hit recorded" if level == "sampled" else "")
      + "): " + ", ".join(f"{k} {v}" for k, v in L["result"].value_counts().items()) + ".")

# %%
if len(L):
    MARK = {"hit": ("o", "#1f77b4", 10), "miss": ("X", "#d62728", 60), "locked_miss": ("^", "#9467bd", 70),
            "fallback": ("s", "#ff7f0e", 40), "passthrough": ("D", "#8c564b", 40)}
    ws = [w for w in WORKLOADS if w in set(L["workload"])] + sorted(set(L["workload"]) - set(WORKLOADS))
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(ws) + 2))
    for res, g in L.groupby("result"):
        m, c, s = MARK.get(res, ("d", "black", 40))
        ax.scatter(g["t_s"], g["workload"].map({w: i for i, w in enumerate(ws)}) + (0.15 if res != "hit" else 0),
                   marker=m, color=c, s=s, label=f"{res} ({len(g)})", alpha=0.8, linewidths=0)
    ax.set_yticks(range(len(ws)), ws)
    ax.invert_yaxis()
    ax.set_xlabel("time since the run started (s)")
    ax.set_title("Recorded launches over the run, by cache result (one row per workload)")
    ax.legend(loc="upper right", ncol=5)
    fig.tight_layout()
    C.show(fig, "launch_overhead_timeline", figure_dir)

# %%
cnt = T[T["kind"] == "jitcache"][["workload", "variant", "counters"]]
cnt = cnt[cnt["counters"].map(bool)]
if len(cnt):
    Cn = pd.concat([cnt[["workload", "variant"]].reset_index(drop=True),
                    pd.json_normalize(cnt["counters"].tolist())], axis=1)
    for c in ("hit", "miss", "locked_miss", "fallback"):
        Cn[c] = C.num(Cn[c]).fillna(0).astype(int) if c in Cn else 0
    Cn["hit / miss / locked miss"] = [f"{h:,} / {m} / {lm}" for h, m, lm in zip(Cn["hit"], Cn["miss"], Cn["locked_miss"])]
    C.say("**Cache outcomes per trial** (from `jitlab.counters`: hits / misses / locked misses):")
    C.table(Cn.pivot_table(index="variant", columns="workload", values="hit / miss / locked miss", aggfunc="first")
            .reindex(columns=WORKLOADS))
    tot = Cn[["hit", "miss", "locked_miss", "fallback"]].sum()
    entries = int(C.num(Cn["entries"]).sum()) if "entries" in Cn else None
    C.say(f"All jitcache trials together: {int(tot['hit']):,} hits, {int(tot['miss'])} misses"
          + (f" ({entries} cache entries: each miss compiled one)" if entries is not None else "")
          + f", {int(tot['locked_miss'])} locked misses, {int(tot['fallback'])} fallbacks."
          + (" No locked miss: the static policies met no new key after `lock()`." if tot["locked_miss"] == 0 else
             " **Locked misses happened**: a static policy met a key it had not seen before `lock()`."))

# %%
mis = L[L["result"].isin(["miss", "locked_miss"])]
if len(mis) and "jitlab.compile.duration_ns" in mis:
    mm = mis.assign(compile_ms=C.num(mis["jitlab.compile.duration_ns"]) / 1e6,
                    miss_ms=(C.num(mis["jitlab.arg_update.duration_ns"]) + C.num(mis["jitlab.launch.duration_ns"])) / 1e6)
    C.say("**Misses** (compile = Triton compile + load, warm on-disk cache; total = the whole missed launch), ms:")
    C.table(mm.groupby("workload")[["compile_ms", "miss_ms"]].agg(["median", "max"]).reindex(WORKLOADS).dropna(how="all"),
            digits=3)

# %% [markdown]
# ## 4. What each relaxation buys, and what it risks
# µs saved per launch against the safe policy (p50 safe − p50 policy; positive = faster). The
# whiskers show the safe trial's own p10–p90 spread around its p50: savings inside it are noise.
# The table lists, per policy, the relaxations its fields make and what each relaxation risks.

# %%
off = T[(T["kind"] == "jitcache") & (T["level"] == "off")]
safe = off[off["policy"] == "safe"].set_index("workload")
sav = off.assign(saved_us=off["workload"].map(safe["p50_us"]) - off["p50_us"],
                 pct=100 * (off["workload"].map(safe["p50_us"]) - off["p50_us"]) / off["workload"].map(safe["p50_us"]))
relaxed = [p for p in POLICIES if p != "safe"]
if len(safe) and relaxed:
    fig, ax = plt.subplots(figsize=(11, 4.2))
    wid = 0.8 / max(1, len(WORKLOADS))
    x = np.arange(len(relaxed))
    for i, w in enumerate(WORKLOADS):
        d = sav[sav["workload"] == w].set_index("policy").reindex(relaxed)
        if w not in safe.index:
            continue
        lo, hi = safe.loc[w, "p50_us"] - safe.loc[w, "p10_us"], safe.loc[w, "p90_us"] - safe.loc[w, "p50_us"]
        ax.bar(x + (i - (len(WORKLOADS) - 1) / 2) * wid, d["saved_us"], wid, label=w,
               yerr=[[lo] * len(d), [hi] * len(d)], error_kw={"elinewidth": 0.6, "capsize": 1.5, "alpha": 0.5})
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, relaxed, rotation=20, ha="right")
    ax.set_ylabel("µs saved per launch vs safe")
    ax.set_title("What each relaxation buys (p50 safe − p50 policy; whiskers: safe's p10–p90 spread)")
    ax.legend(ncol=len(WORKLOADS), loc="upper left")
    ax.grid(axis="x", visible=False)
    fig.tight_layout()
    C.show(fig, "launch_overhead_relaxations", figure_dir)

# %%
RISK = {
    "check_keys": "an unlisted constexpr changes: the binary compiled for its first value is reused (wrong results)",
    "check_specialization": ("an unlisted int becomes 1 (compiled in as a constant), crosses i32 or changes %16; "
                             "a pointer loses 16-byte alignment, changes dtype, or None becomes a tensor: wrong binary"),
    "assume_const": ("a frozen value changes (a new layout's strides, a per-layer scale tensor): the change is "
                     "ignored, the old value is used"),
    "cache_launch_grid": "the grid depends on something that changes within an entry (batch, tokens): stale grid",
    "static": "a new key after lock() raises LockedMiss instead of compiling (an error, never silent)",
    "verify": "none: it adds checks (every Nth hit re-derives Triton's key; AssumptionViolated on a mismatch)",
}


def relaxations(pjs):
    """(relaxation, what it does) of a policy, from its `jitlab.Policy.to_dict()` on every workload
    (name lists are expanded per workload, so they are joined over workloads)."""
    pjs = [pj for pj in pjs if pj]
    if not pjs:
        return []

    def names(field):
        return sorted({n for pj in pjs for n in (pj.get(field) or [])})

    out = []
    if any(pj.get("check_keys") is not None for pj in pjs):
        out.append(("check_keys", "constexprs still checked: " + (", ".join(names("check_keys")) or "none")))
    if any(pj.get("check_specialization") is not None for pj in pjs):
        out.append(("check_specialization", "runtime arguments still checked: "
                    + (", ".join(names("check_specialization")) or "none")))
    if any(pj.get("assume_const") for pj in pjs):
        n = [len(pj.get("assume_const") or []) for pj in pjs]
        out.append(("assume_const", f"{min(n)}–{max(n)} arguments frozen per workload (listed below)"))
    if any(pj.get("cache_launch_grid") for pj in pjs):
        out.append(("cache_launch_grid", "grid evaluated once per entry"))
    if any(pj.get("static") for pj in pjs):
        out.append(("static", "cache locked after warm-up"))
    if any(pj.get("verify") for pj in pjs):
        out.append(("verify", f"every {max(pj.get('verify') or 0 for pj in pjs)}th hit verified"))
    return out


order = sav.groupby("policy")["saved_us"].median().reindex(POLICIES).sort_values(ascending=False).index.tolist()
buy = sav.pivot_table(index="policy", columns="workload", values="saved_us", aggfunc="first").reindex(
    index=order, columns=WORKLOADS)
buy.columns = [f"{w} (µs)" for w in buy.columns]
buy["median % of safe"] = sav.groupby("policy")["pct"].median().reindex(order)
C.say("**What it buys**: µs saved per launch against safe (p50), per workload:")
C.table(buy, digits=1)

risk_rows = []
for p in order:
    rel = relaxations(sav[sav["policy"] == p]["policy_json"].tolist())
    for k, what in rel or [("—", "none: the full key (everything Triton specializes on)")]:
        risk_rows.append({"policy": p, "relaxation": k, "what it does": what, "risk": RISK.get(k, "none")})
C.say("**What it risks**, built from each policy's fields (`jitlab.policy.json`):")
C.table(pd.DataFrame(risk_rows).set_index(["policy", "relaxation"]))

# %%
if len(safe) and relaxed:
    med = sav.groupby("policy")["saved_us"].median().reindex(relaxed).sort_values(ascending=False)
    spread = float(((safe["p90_us"] - safe["p10_us"]) / 2).median())
    lines = [f"- `{p}`: {med[p]:+.1f} µs per launch (median over workloads, "
             f"{C.fmt(sav[sav['policy'] == p]['pct'].median(), '.0f')}% of safe)"
             + (" — within the run-to-run spread" if abs(med[p]) < spread else "") for p in med.index]
    C.say(f"**Relaxations, ranked.** Half the safe trials' p10–p90 spread is {spread:.1f} µs (median over "
          f"workloads): savings below that are not distinguishable from noise in this run.\n\n" + "\n".join(lines))
    groups = {}
    for _, r in sav.iterrows():
        names = tuple(r["policy_json"].get("assume_const") or ()) if r["policy_json"] else ()
        if names:
            groups.setdefault((r["workload"], names), []).append(r["policy"])
    if groups:
        C.say("**Frozen arguments** (`assume_const`; a change of any of these is ignored), per workload and policy:\n\n"
              + "\n".join(f"- {w} — {', '.join(f'`{p}`' for p in ps)}: {', '.join(names)}"
                           for (w, names), ps in sorted(groups.items(), key=lambda kv: WORKLOADS.index(kv[0][0])
                                                          if kv[0][0] in WORKLOADS else 99)))

# %% [markdown]
# ## 5. What tracing costs
# The safe policy timed with the recorder at each level (the headline numbers are timed with
# tracing off): `summary` records no hits, `sampled` every Nth hit, `full` every launch.

# %%
tr = T[(T["kind"] == "jitcache") & (T["policy"] == "safe")].copy()
LEVELS = [lv for lv in ("off", "summary", "sampled", "full") if lv in set(tr["level"])]
if len(LEVELS) > 1:
    base = tr[tr["level"] == "off"].set_index("workload")["p50_us"]
    tr["delta_us"] = tr["p50_us"] - tr["workload"].map(base)
    fig, ax = plt.subplots(figsize=(10, 4))
    wid = 0.8 / len(LEVELS)
    x = np.arange(len(WORKLOADS))
    for i, lv in enumerate(LEVELS):
        d = tr[tr["level"] == lv].set_index("workload").reindex(WORKLOADS)
        ax.bar(x + (i - (len(LEVELS) - 1) / 2) * wid, d["p50_us"], wid, label=f"trace={lv}",
               yerr=[(d["p50_us"] - d["p10_us"]).clip(lower=0), (d["p90_us"] - d["p50_us"]).clip(lower=0)],
               error_kw={"elinewidth": 0.7, "capsize": 2})
    ax.set_xticks(x, WORKLOADS)
    ax.set_ylabel("host time per launch (µs), safe policy")
    ax.set_title("Tracing overhead per level (bar p50, whiskers p10–p90)")
    ax.legend(ncol=len(LEVELS))
    ax.grid(axis="x", visible=False)
    fig.tight_layout()
    C.show(fig, "launch_overhead_tracing", figure_dir)
    D = tr.pivot_table(index="workload", columns="level", values="delta_us", aggfunc="first").reindex(WORKLOADS)
    D = D[[lv for lv in LEVELS if lv != "off"]]
    D.columns = [f"{c}: µs added" for c in D.columns]
    C.table(D)
    offs = tr[tr["level"] == "off"].set_index("workload")
    tr["noise_us"] = tr["workload"].map((offs["p90_us"] - offs["p10_us"]) / 2)
    lines = []
    for lv in [lv for lv in LEVELS if lv != "off"]:
        d = tr[tr["level"] == lv]
        above = d[d["delta_us"] > d["noise_us"]]
        lines.append(f"- `{lv}`: {d['delta_us'].median():+.2f} µs per launch (median over workloads); above the "
                     f"run-to-run spread on {len(above)} of {len(d)} workloads"
                     + (f" ({', '.join(above['workload'])})" if len(above) else ""))
    C.say("**Tracing cost against trace=off** (differences within half the off trial's p10–p90 spread are noise):\n\n"
          + "\n".join(lines))
    P = tr[tr["trace_cost_us"].notna()]
    if len(P):  # runs since commit ebf835c also time back-to-back off/on blocks: drift cancels in each pair
        C.say("**Paired tracing cost** (median of back-to-back off/on block differences, µs per launch):")
        C.table(P.pivot_table(index="workload", columns="level", values="trace_cost_us", aggfunc="first"))
    elif info.get("jitlab.experiment.label"):  # the CPU demo: 3 launches per repeat, no block of 25 to pair
        C.say("_No paired tracing cost in this labelled run: it times too few launches per repeat for the "
              "paired blocks of 25 (a run on a CUDA GPU has them)._")
    else:
        C.say("_No paired tracing cost in this run (runs before commit ebf835c have none); for one see "
              "traces/focused/launch_overhead-20261129T103544Z-814f3c.jsonl, e.g. "
              "`python notebooks/launch_overhead.py trace=traces/focused/launch_overhead-20261129T103544Z-814f3c.jsonl`._")
else:
    C.say("_No tracing-overhead trials in this trace._")

# %% [markdown]
# ## 6. The first launch: jitcache vs stock Triton
# A fresh kernel object launched once (in-memory caches cold, Triton's on-disk cache warm: what a
# new process pays), each launch followed by a sync, in ms.

# %%
F = T[T["kind"] == "first"].copy()
if len(F):
    F["who"] = F["variant"].str.replace("first_launch:", "", regex=False)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    whos = list(dict.fromkeys(sorted(F["who"], key=lambda s: s != "triton")))
    wid = 0.8 / len(whos)
    x = np.arange(len(WORKLOADS))
    for i, who in enumerate(whos):
        d = F[F["who"] == who].set_index("workload").reindex(WORKLOADS)
        ax.bar(x + (i - (len(whos) - 1) / 2) * wid, d["p50_us"] / 1e3, wid,
               label="stock Triton" if who == "triton" else who,
               color="#d62728" if who == "triton" else "#1f77b4",
               yerr=[(d["p50_us"] - d["p10_us"]).clip(lower=0) / 1e3, (d["p90_us"] - d["p50_us"]).clip(lower=0) / 1e3],
               error_kw={"elinewidth": 0.7, "capsize": 2})
    ax.set_xticks(x, WORKLOADS)
    ax.set_ylabel("first launch incl. sync (ms)")
    ax.set_title("First launch of a fresh kernel object (bar p50, whiskers p10–p90)")
    ax.legend()
    ax.grid(axis="x", visible=False)
    fig.tight_layout()
    C.show(fig, "launch_overhead_first_launch", figure_dir)
    P = F.pivot_table(index="workload", columns="who", values="p50_us", aggfunc="first").reindex(WORKLOADS) / 1e3
    if {"triton", "jitcache"} <= set(P.columns):
        P["jitcache − triton (ms)"] = P["jitcache"] - P["triton"]
        C.table(P.rename(columns={"triton": "stock Triton (ms)", "jitcache": "jitcache (ms)"}))
        extra_ms = P["jitcache − triton (ms)"]
        per = T[T["level"] == "off"].pivot_table(index="workload", columns="variant", values="p50_us", aggfunc="first")
        gain_us = (per.get("triton") - per.get("jitcache:safe")).reindex(WORKLOADS) if "jitcache:safe" in per else None
        lines = []
        for w in WORKLOADS:
            if w in extra_ms.index and not np.isnan(extra_ms[w]):
                g = gain_us[w] if gain_us is not None else np.nan
                lines.append(f"- {w}: {extra_ms[w]:+.1f} ms once"
                             + (f"; safe hits save {g:.1f} µs each, so it pays back after ~{max(0, extra_ms[w]) * 1e3 / g:,.0f} launches"
                                if g and g > 0 and extra_ms[w] > 0 else ""))
        C.say("**First launch, jitcache minus stock Triton** (jitcache compiles through Triton's own path, then "
              "prepares its entry; paid once per cache entry):\n\n" + "\n".join(lines))
else:
    C.say("_No first-launch trials in this trace._")
