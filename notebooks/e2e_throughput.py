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
# # End to end: decode tokens/s per execution mode
#
# **What it shows.** The end-to-end decode experiment (`experiments/e2e_decode.py`: a
# Llama-3.1-8B-shaped decoder with random weights running vLLM's launch pattern) per execution mode
# (eager with stock Triton, eager with jitlab safe / tuned policies, piecewise CUDA graphs with stock
# Triton / jitlab for the eager attention pieces, and the full CUDA graph as the upper bound):
#
# 1. tokens/s over batch, context and layers, and the speedup over eager stock Triton;
# 2. host time against GPU time per step (what bounds each step);
# 3. the fraction of the eager → full-graph gap that eager jitlab closes;
# 4. where the gain vanishes (the crossover, as the GPU time per step overtakes the host time);
# 5. the mixed prefill + decode run, the step-time distribution and the launches per step.
#
# **Reads** one trace file, `traces/e2e_decode-<run_id>.jsonl` (parameter `trace`; default: the
# newest such file directly under `traces/`): trial spans (one per config × mode, attributes
# `jitlab.e2e.*`: `tokens_per_s`, `host_ms`, `gpu_busy_ms`, `step_ms`, launch counts, `gap_closed`,
# `speedup_vs_stock`, `host_unstable`, ...) and their step spans (`jitlab.e2e.wall_ms`, `host_ms`, `gpu_busy_ms`).
# Host ms: host time per step until the last launch returned (incl. input staging); GPU ms: device
# time per step measured with the GPU held busy; step ms: wall time per step incl. the token
# read-back. It never launches a kernel.

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
trace = C.newest_trace("e2e_decode")  # a traces/e2e_decode-<run_id>.jsonl file
focus_config = "B=1 ctx=1024 L=32"  # the config shown in detail (falls back to the first one in the trace)
gain_threshold = 0.05  # a speedup below 1 + this counts as "no gain"
figure_dir = None  # a folder: every figure is also saved there as <name>.png

# %%
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from jitlab.telemetry import stability  # noqa: E402  (the experiment's flat-steps rule, standard library only)

C.script_args(globals(), ["trace", "focus_config", "gain_threshold", "figure_dir"])
C.setup_matplotlib()
df, info = C.open_run(trace, "e2e_decode")
C.say(C.banner(info, trace))

# %%
MODE_STYLE = {  # name: (label, color, marker, linestyle)
    "eager_stock": ("eager, stock Triton", "#d62728", "o", "-"),
    "eager_jitlab_safe": ("eager, jitlab safe", "#6baed6", "s", "-"),
    "eager_jitlab_tuned": ("eager, jitlab tuned", "#1f4e9c", "D", "-"),
    "piecewise_stock": ("piecewise graphs, stock Triton", "#ff7f0e", "o", "--"),
    "piecewise_jitlab": ("piecewise graphs, jitlab tuned", "#2ca02c", "D", "--"),
    "piecewise_jitlab_safe": ("piecewise graphs, jitlab safe", "#98df8a", "s", "--"),
    "full_graph": ("full CUDA graph (upper bound)", "black", "^", ":"),
}
KEYS = ["config", "kind", "batch", "context", "layers", "mode", "mode_kind", "tokens_per_s", "step_ms", "step_ms_mean",
        "host_ms", "prep_ms", "gpu_busy_ms", "gpu_span_ms", "launches_per_step", "triton_launches_per_step",
        "torch_launches_per_step", "copies_per_step", "graph_replays_per_step", "device_kernels_per_step",
        "triton_by_kernel", "per_launch_us", "speedup_vs_stock", "gap_closed", "x_full_graph", "check", "check_ok",
        "bitwise", "max_abs_diff"]
trials = C.kind(df, "trial")
E = pd.DataFrame({k: C.col(trials, f"jitlab.e2e.{k}", None) for k in KEYS})
E["skip"] = C.col(trials, "jitlab.skip", None)
E["error"] = C.col(trials, "jitlab.error", None)
E["span_id"] = trials["span_id"].to_numpy()
E = E[E["config"].notna() & (E["mode"] != "sanity")].reset_index(drop=True)
for k in KEYS:
    if k not in ("config", "kind", "mode", "mode_kind", "triton_by_kernel", "check", "check_ok", "bitwise"):
        E[k] = C.num(E[k])
for k in ("batch", "context", "layers"):
    E[k] = E[k].round().astype("Int64")
E["ok"] = E["tokens_per_s"].notna() & E["skip"].isna() & E["error"].isna()
declared = list((C.jloads(info.get("jitlab.e2e.modes"), {}) or {}).keys())
MODES = [m for m in dict.fromkeys(declared + list(MODE_STYLE) + list(E["mode"])) if m in set(E["mode"])]


def lab(m):
    return MODE_STYLE.get(m, (m,))[0]


def style(m):
    _, c, mk, ls = MODE_STYLE.get(m, (m, "grey", "x", "-"))
    return {"color": c, "marker": mk, "linestyle": ls}


D = E[(E["kind"] == "decode")]
LAYERS = sorted(int(x) for x in D["layers"].dropna().unique())
CONTEXTS = sorted(int(x) for x in D["context"].dropna().unique())
BATCHES = sorted(int(x) for x in D["batch"].dropna().unique())
configs = list(dict.fromkeys(E["config"]))
focus = focus_config if focus_config in configs else (configs[0] if configs else None)
C.say(f"{E['config'].nunique()} configs ({len(D['config'].unique())} decode: batch {BATCHES}, context {CONTEXTS}, "
      f"layers {LAYERS}" + ("; plus the mixed prefill+decode run" if (E["kind"] == "mixed").any() else "")
      + f") × {len(MODES)} modes: {', '.join(MODES)}. Detailed config: `{focus}`.")
sanity = trials[C.col(trials, "jitlab.e2e.mode", None) == "sanity"]
if len(sanity):
    ok = sanity["jitlab.e2e.sanity_ok"].iloc[0] if "jitlab.e2e.sanity_ok" in sanity else None
    C.say(f"Sanity check (eager stock Triton against a pure-torch reference): **{'passed' if ok else 'FAILED'}**.")
bad = E[E["skip"].notna() | E["error"].notna()]
if len(bad):
    C.say("**Trials not measured** (skipped or failed):")
    C.table(bad.groupby(["mode", bad["skip"].fillna(bad["error"])]).size().rename("trials").reset_index()
            .rename(columns={bad["skip"].fillna(bad["error"]).name or "skip": "reason"}))

# %% [markdown]
# ### Correctness before timing
# Every mode's logits for the first steps are compared with eager stock Triton before it is timed
# (bitwise where the same kernels run; graph modes within a tolerance).

# %%
chk = E[E["ok"]].groupby("mode").agg(trials=("config", "size"),
                                     check_ok=("check_ok", lambda s: int(sum(bool(x) for x in s if x is not None))),
                                     bitwise=("bitwise", lambda s: int(sum(bool(x) for x in s if x is not None))),
                                     max_abs_diff=("max_abs_diff", "max")).reindex(MODES).dropna(how="all")
C.table(chk, digits=4)
if len(chk) and (chk["check_ok"] < chk["trials"]).any():
    C.say("**Some measured trials failed their correctness check**: their tokens/s are not comparable.")

# %% [markdown]
# ### Flat step times before comparing modes
# Each mode is timed as one block of steps and summarised by its median. This host changes speed by
# 1.5-2x for hundreds of ms at a time, so one mode's block can land in a fast stretch and the next in a
# slow one. A trial is **not flat** when the medians of its two halves differ by more than 20% of its
# median host ms (`host_shift`), or when at least 10% of its steps ran 1.5x slower or faster than the
# median (`host_spread` = max(p90 / median, median / p10)); the experiment records this as
# `jitlab.e2e.host_unstable`, and for traces written before it the same rule is computed here from the
# step spans. Compare modes only between flat trials; rerun the others.

# %%
def host_stability(host):
    """Per-step host ms in step order -> (host_shift, host_spread, not flat?); (nan, nan, None) if too few
    steps (the experiment's own rule: jitlab.telemetry.stability)."""
    r = stability.host_stability([float(x) for x in host if pd.notna(x)])
    return r.get("host_shift", np.nan), r.get("host_spread", np.nan), r.get("host_unstable")


def _missing(x):
    return x is None or (isinstance(x, float) and np.isnan(x))


# recorded by the experiment (jitlab.e2e.host_*), else computed from the trial's measured step spans
_st = C.kind(df, "step")
_st = _st[C.col(_st, "jitlab.e2e.phase", None) == "measure"]
_calc = {pid: host_stability(C.num(C.col(g, "jitlab.e2e.host_ms")).tolist()) for pid, g in _st.groupby("parent_id")}
_rec = trials.set_index("span_id")
for i, k in enumerate(("host_shift", "host_spread", "host_unstable")):
    rec = C.col(_rec, f"jitlab.e2e.{k}", None).reindex(E["span_id"]).to_numpy()
    calc = [_calc.get(sid, (np.nan, np.nan, None))[i] for sid in E["span_id"]]
    E[k] = [c if _missing(r) else r for r, c in zip(rec, calc)]
E["host_unstable"] = E["host_unstable"].map(lambda x: None if _missing(x) else bool(x))
for k in ("host_shift", "host_spread"):
    E[k] = C.num(E[k])


def flat(x):
    return "-" if x is None else ("NOT FLAT" if x else "yes")


E["host flat"] = E["host_unstable"].map(flat)
U = E[E["ok"] & (E["host_unstable"] == True)]  # noqa: E712 (None: not judged)
judged = int((E["ok"] & E["host_unstable"].map(lambda x: x is not None)).sum())
if not judged:
    C.say("_Step-time flatness not judged (fewer than 8 measured steps per trial, or no step spans)._")
elif U.empty:
    C.say(f"Host time per step was flat in all {judged} judged trials.")
else:
    C.say(f"**Host time per step not flat in {len(U)} of {judged} trials**: comparisons that involve them (tokens/s, "
          "speedups, gap closed below) may compare a fast stretch with a slow one. Rerun those configs.")
    C.table(U.set_index(["config", "mode"])[["host_ms", "host_shift", "host_spread", "tokens_per_s"]], digits=2)

# %% [markdown]
# ## 1. Tokens/s per mode over batch, context and layers
# One panel per (layers, context); log scales. Then the same as a speedup over eager stock Triton.


# %%
def grid(value, ylabel, title, logy=True, ref=None, name="grid"):
    if D.empty or not LAYERS or not CONTEXTS:
        C.say("_No decode configs in this trace._")
        return
    fig, axes = plt.subplots(len(LAYERS), len(CONTEXTS), figsize=(4.6 * len(CONTEXTS), 3.6 * len(LAYERS)),
                             squeeze=False, sharex=True)
    for i, L in enumerate(LAYERS):
        for j, ctx in enumerate(CONTEXTS):
            ax = axes[i][j]
            sub = D[(D["layers"] == L) & (D["context"] == ctx) & D["ok"]]
            for m in MODES:
                d = sub[sub["mode"] == m].sort_values("batch")
                if d[value].notna().any():
                    ax.plot(d["batch"], d[value], label=lab(m), ms=5, lw=1.4, **style(m))
            if ref is not None:
                for r in np.atleast_1d(ref):
                    ax.axhline(r, color="grey", lw=0.8, ls="-" if r == 1 else ":")
            ax.set_xscale("log", base=2)
            if logy:
                ax.set_yscale("log")
            ax.set_xticks(BATCHES, [str(b) for b in BATCHES])
            ax.set_title(f"{L} layers, context {ctx}")
            if i == len(LAYERS) - 1:
                ax.set_xlabel("batch (sequences per decode step)")
            if j == 0:
                ax.set_ylabel(ylabel)
    h, lbl = [], []
    for ax in axes.flat:
        for hh, ll in zip(*ax.get_legend_handles_labels()):
            if ll not in lbl:
                h.append(hh)
                lbl.append(ll)
    fig.legend(h, lbl, loc="lower center", ncol=min(4, len(lbl)), bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(title + "\n" + C.provenance_line(info), fontsize=10)
    fig.tight_layout(rect=(0, 0.07 if len(lbl) > 4 else 0.04, 1, 1))
    C.show(fig, name, figure_dir)


grid("tokens_per_s", "decode tokens/s", "Decode throughput per mode", name="e2e_tokens_per_s")
grid("speedup_vs_stock", "tokens/s ÷ eager stock Triton", "Speedup over eager stock Triton",
     logy=False, ref=[1.0, 1.0 + gain_threshold], name="e2e_speedup")

# %%
if len(D[D["ok"]]):
    P = D[D["ok"]].pivot_table(index=["layers", "context", "batch"], columns="mode", values="tokens_per_s",
                               aggfunc="first")
    P = P[[m for m in MODES if m in P.columns]]
    C.say("**Tokens/s** (decode configs):")
    C.table(P, digits=0)

# %% [markdown]
# ## 2. Host time vs GPU time per step
# Each point is one (config, mode): above the diagonal the host is slower than the GPU (the step is
# bound by launching), below it the GPU is (launch overhead is hidden behind GPU work). Then the
# detailed config: host, GPU and wall time per step for each mode.

# %%
H = E[E["ok"] & E["host_ms"].notna() & E["gpu_busy_ms"].notna()]
if H.empty:
    C.say("_No GPU time per step in this trace (gpu_busy_ms is measured on a CUDA GPU only)._")
else:
    fig, ax = plt.subplots(figsize=(9.5, 6))
    for m in MODES:
        d = H[H["mode"] == m]
        if len(d):
            st = style(m)
            ax.scatter(d["gpu_busy_ms"], d["host_ms"], color=st["color"], marker=st["marker"], s=36, label=lab(m),
                       alpha=0.85)
    lo = max(1e-3, min(H["gpu_busy_ms"].min(), H["host_ms"].min()) / 1.5)
    hi = max(H["gpu_busy_ms"].max(), H["host_ms"].max()) * 1.5
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
    ax.text(hi / 1.6, hi / 1.3, "host = GPU", rotation=45, ha="right", va="bottom", fontsize=8, color="grey")
    ax.fill_between([lo, hi], [lo, hi], [hi, hi], color="#d62728", alpha=0.05)
    ax.text(lo * 1.3, hi / 1.5, "launch-bound (host > GPU)", fontsize=9, color="#d62728")
    ax.text(hi / 1.5, lo * 1.3, "GPU-bound", fontsize=9, ha="right")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("GPU time per step (ms, GPU held busy)")
    ax.set_ylabel("host time per step (ms, until the last launch returned)")
    ax.set_title("What bounds a decode step")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    C.show(fig, "e2e_host_vs_gpu", figure_dir)

# %%
F = E[(E["config"] == focus) & E["ok"]].set_index("mode").reindex([m for m in MODES])
F = F[F["tokens_per_s"].notna()]
if len(F):
    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(F))
    w = 0.27
    ax.bar(x - w, F["host_ms"], w, label="host ms per step", color="#1f77b4")
    ax.bar(x, F["gpu_busy_ms"], w, label="GPU ms per step", color="#7f7f7f")
    ax.bar(x + w, F["step_ms"], w, label="wall ms per step", color="#ff7f0e")
    ax.set_xticks(x, [lab(m) for m in F.index], rotation=20, ha="right")
    ax.set_ylabel("time per decode step (ms)")
    ax.set_title(f"{focus}: host vs GPU vs wall time per step (medians)")
    ax.legend()
    ax.grid(axis="x", visible=False)
    fig.tight_layout()
    C.show(fig, "e2e_focus_times", figure_dir)
    C.table(F[["tokens_per_s", "step_ms", "host_ms", "host flat", "gpu_busy_ms", "speedup_vs_stock", "x_full_graph"]])

# %% [markdown]
# ## 3. How much of the eager → full-graph gap eager jitlab closes
# gap closed = (tokens/s of the mode − eager stock) / (full graph − eager stock). 100 %: as fast as
# the full CUDA graph; 0 %: no better than eager stock Triton. Not defined where the full graph is
# less than 2 % faster than eager stock (no gap to close) or was not run.

# %%
GAP_MODES = [m for m in ("eager_jitlab_safe", "eager_jitlab_tuned", "piecewise_stock", "piecewise_jitlab",
                         "piecewise_jitlab_safe") if m in MODES]
G = D[D["ok"] & D["mode"].isin(GAP_MODES)].pivot_table(index=["layers", "context", "batch"], columns="mode",
                                                       values="gap_closed", aggfunc="first")
if G.empty or G.isna().all().all():
    C.say("_No gap-closed values in this trace (they need eager stock and the full graph in the same config)._")
else:
    G = G[[m for m in GAP_MODES if m in G.columns]]
    fig, ax = plt.subplots(figsize=(max(9, 0.55 * len(G) + 5), 4.4))
    x = np.arange(len(G))
    wid = 0.8 / len(G.columns)
    for i, m in enumerate(G.columns):
        ax.bar(x + (i - (len(G.columns) - 1) / 2) * wid, 100 * G[m], wid, label=lab(m), color=style(m)["color"])
    ax.axhline(100, color="black", lw=0.8, ls=":")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [f"L={a} ctx={b} B={c}" for a, b, c in G.index], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("eager → full-graph gap closed (%)")
    ax.set_title("Fraction of the eager stock → full CUDA graph tokens/s gap closed")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", visible=False)
    fig.tight_layout()
    C.show(fig, "e2e_gap_closed", figure_dir)
    C.table((100 * G).rename(columns=lambda m: f"{m} (% of gap)"), digits=0)
    lines = []
    for m in [m for m in ("eager_jitlab_tuned", "eager_jitlab_safe", "piecewise_jitlab") if m in G.columns]:
        s = G[m].dropna()
        if len(s):
            lines.append(f"- `{m}` closes {100 * s.median():.0f}% of the gap (median over {len(s)} configs; "
                         f"{100 * s.min():.0f}% to {100 * s.max():.0f}%)")
    if focus in set(D["config"]):
        fr = D[(D["config"] == focus) & D["ok"]].set_index("mode")["gap_closed"]
        lines.append(f"- at `{focus}`: " + ", ".join(f"`{m}` {C.fmt(100 * fr.get(m, np.nan), '.0f')}%"
                                                       for m in GAP_MODES if m in fr.index))
    C.say("\n".join(lines))

# %% [markdown]
# ## 4. Where the gain vanishes
# The speedup of eager jitlab over eager stock Triton (and of piecewise jitlab over piecewise stock)
# against how GPU-heavy a step is: GPU ms per step ÷ the eager stock host ms per step. While the
# host is the bottleneck (ratio < 1) cheaper launches turn into tokens/s; once the GPU takes longer
# than the host needs to launch the step, the saved host time is hidden behind GPU work.

# %%
pairs = [("eager_jitlab_tuned", "eager_stock"), ("eager_jitlab_safe", "eager_stock"),
         ("piecewise_jitlab", "piecewise_stock")]
rows = []
for cfg, g in D[D["ok"]].groupby("config"):
    g = g.set_index("mode")
    gpu = g["gpu_busy_ms"].median()
    for a, b in pairs:
        if a in g.index and b in g.index:
            rows.append({"config": cfg, "layers": g["layers"].iloc[0], "context": g["context"].iloc[0],
                         "batch": g["batch"].iloc[0], "pair": f"{a} / {b}", "mode": a,
                         "speedup": g.loc[a, "tokens_per_s"] / g.loc[b, "tokens_per_s"],
                         "gpu_ms": gpu, "host_ms_base": g.loc[b, "host_ms"], "host_ms": g.loc[a, "host_ms"]})
X = pd.DataFrame(rows)
if X.empty:
    C.say("_No jitlab / stock pairs measured in the same config._")
else:
    X["gpu_over_host"] = X["gpu_ms"] / X["host_ms_base"]
    if X["gpu_over_host"].notna().any():
        fig, ax = plt.subplots(figsize=(8.5, 4.8))
        for a, _ in pairs:
            d = X[X["mode"] == a]
            if len(d):
                st = style(a)
                ax.scatter(d["gpu_over_host"], d["speedup"], color=st["color"], marker=st["marker"], s=40,
                           label=lab(a) + (" ÷ eager stock" if a.startswith("eager") else " ÷ piecewise stock"))
        ax.axhline(1.0, color="black", lw=0.8)
        ax.axhline(1.0 + gain_threshold, color="grey", lw=0.8, ls=":")
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.text(1.02, ax.get_ylim()[1], " GPU time = host time of the stock mode", va="top", fontsize=8, color="grey")
        ax.set_xscale("log")
        ax.set_xlabel("GPU ms per step ÷ host ms per step of the stock mode")
        ax.set_ylabel("tokens/s speedup of jitlab over stock")
        ax.set_title("The crossover: launch savings stop paying once the GPU is the bottleneck")
        ax.legend(loc="upper right")
        fig.tight_layout()
        C.show(fig, "e2e_crossover", figure_dir)

# %%
if not X.empty:
    t = X[X["mode"] == "eager_jitlab_tuned"] if (X["mode"] == "eager_jitlab_tuned").any() else X[X["mode"] == X["mode"].iloc[0]]
    m0 = t["mode"].iloc[0]
    gain = t[t["speedup"] >= 1 + gain_threshold]
    none = t[t["speedup"] < 1 + gain_threshold]
    lines = [f"**`{m0}` over its stock mode**: a gain of at least {100 * gain_threshold:.0f}% in "
             f"{len(gain)} of {len(t)} decode configs."]
    if len(gain):
        lines.append(f"- it pays: speedup {gain['speedup'].min():.2f}× to {gain['speedup'].max():.2f}×, where the GPU "
                     f"needs {C.fmt(gain['gpu_over_host'].min(), '.2f')}–{C.fmt(gain['gpu_over_host'].max(), '.2f')}× "
                     f"the eager stock host time (" + ", ".join(f"`{c}`" for c in gain.sort_values('speedup',
                                                                                                   ascending=False)['config'][:6])
                     + (", ..." if len(gain) > 6 else "") + ")")
    if len(none):
        lines.append(f"- it vanishes (< {100 * gain_threshold:.0f}%): " + ", ".join(
            f"`{c}` ({s:.2f}×, GPU/host {C.fmt(r, '.2f')})" for c, s, r in
            none.sort_values("gpu_over_host")[["config", "speedup", "gpu_over_host"]].itertuples(index=False)))
    cross = []
    for (L, ctx), g in t.groupby(["layers", "context"]):
        g = g.sort_values("batch")
        lost = g[g["speedup"] < 1 + gain_threshold]
        cross.append(f"layers {int(L)}, context {int(ctx)}: " + (
            f"gain gone from batch {int(lost['batch'].iloc[0])}" if len(lost) else
            f"still ≥ {100 * gain_threshold:.0f}% at batch {int(g['batch'].iloc[-1])}"))
    lines.append("- crossover per (layers, context): " + "; ".join(cross))
    if t["gpu_over_host"].notna().any() and len(gain) and len(none):
        lines.append(f"- boundary: gains appear at GPU/host ≤ {gain['gpu_over_host'].max():.2f}, and are gone at "
                     f"GPU/host ≥ {none['gpu_over_host'].min():.2f}")
    C.say("\n".join(lines))

# %% [markdown]
# ## 5. The mixed prefill + decode run
# Continuous batching: a cycle of decode-only, mixed and prefill steps (the full graph is
# decode-only, so it is not run here).

# %%
M = E[(E["kind"] == "mixed") & E["ok"]].set_index("mode").reindex(MODES)
M = M[M["tokens_per_s"].notna()]
if M.empty:
    C.say("_No mixed run in this trace._")
else:
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.barh([lab(m) for m in M.index], M["tokens_per_s"], color=[style(m)["color"] for m in M.index])
    for i, (v, s) in enumerate(zip(M["tokens_per_s"], M["speedup_vs_stock"])):
        ax.text(v, i, f" {v:,.0f} ({C.fmt(s, '.2f')}×)", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("tokens/s (prefill + decode tokens)")
    ax.set_title(f"Mixed run: {M['config'].iloc[0]} (label: tokens/s, × eager stock)")
    ax.grid(axis="y", visible=False)
    fig.tight_layout()
    C.show(fig, "e2e_mixed", figure_dir)

# %% [markdown]
# ## 6. Step times and launches per step of the detailed config
# Wall time of each measured step (step spans, `jitlab.e2e.phase` = measure), and what one step
# launches from the host.

# %%
steps = C.kind(df, "step")
if len(steps) and focus is not None:
    fid = E[E["config"] == focus].set_index("span_id")["mode"]
    s = steps[steps["parent_id"].isin(fid.index) & (C.col(steps, "jitlab.e2e.phase", None) == "measure")].copy()
    s["mode"] = s["parent_id"].map(fid)
    s["wall_ms"] = C.num(C.col(s, "jitlab.e2e.wall_ms"))
    s["host_ms"] = C.num(C.col(s, "jitlab.e2e.host_ms"))
    ms = [m for m in MODES if m in set(s["mode"])]
    if ms:
        fig, ax = plt.subplots(figsize=(9, 4.2))
        ax.boxplot([s[s["mode"] == m]["wall_ms"].dropna().to_numpy() for m in ms], widths=0.6, showfliers=True)
        ax.set_xticks(range(1, len(ms) + 1), [lab(m) for m in ms], rotation=20, ha="right")
        ax.set_ylabel("wall time per decode step (ms)")
        ax.grid(axis="x", visible=False)
        ax.set_title(f"{focus}: measured steps ({s.groupby('mode').size().min()}–{s.groupby('mode').size().max()} per mode)")
        fig.tight_layout()
        C.show(fig, "e2e_step_times", figure_dir)

# %%
cnt_cols = ["launches_per_step", "triton_launches_per_step", "torch_launches_per_step", "copies_per_step",
            "graph_replays_per_step", "device_kernels_per_step", "per_launch_us"]
if focus is not None:
    Q = E[(E["config"] == focus) & E["ok"]].set_index("mode").reindex(MODES)[cnt_cols].dropna(how="all")
    Q.columns = ["host launches", "Triton", "torch", "copies", "graph replays", "kernels on the GPU",
                 "jitlab µs per launch"]
    C.say(f"**Per step at `{focus}`** (host launches = Triton + torch kernels + copies + graph replays; "
          f"kernels on the GPU includes those inside graphs):")
    C.table(Q, digits=1)
