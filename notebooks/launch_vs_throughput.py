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
# # The link: per-launch savings × launches per step → tokens/s, predicted vs measured
#
# **What it shows.** Whether the host µs jitlab saves per launch (measured in isolation by the
# launch-overhead experiment) explain the tokens/s the end-to-end decode loop gains, and where
# launch overhead matters at all:
#
# 1. host ms saved per step, predicted (µs saved per launch per kernel kind × that kernel's launches
#    per step) against measured (host ms per step of the stock mode − of the jitlab mode);
# 2. tokens/s predicted from that saving against tokens/s measured, with and without the bound the
#    GPU time per step puts on it;
# 3. how much of a step's host time is Triton launch overhead, against the GPU time per step;
# 4. a plain statement, computed from the data, of where launch overhead matters and where it does not.
#
# **Reads** two trace files: `traces/launch_overhead-<run_id>.jsonl` (parameter `launch_trace`;
# trial spans: p50 host µs per launch per workload and variant) and `traces/e2e_decode-<run_id>.jsonl`
# (parameter `e2e_trace`; trial spans: launches per step per kernel `jitlab.e2e.triton_by_kernel`,
# host / GPU / wall ms per step, tokens/s; step spans: whether attention ran 2D or 3D). Defaults:
# the newest of each directly under `traces/`. It never launches a kernel.
#
# **The model.** For a jitlab mode M and its stock counterpart S (eager jitlab → eager stock,
# piecewise jitlab → piecewise stock) in one config: saved = Σ over kernel kinds k of
# launches_k per step × (p50 stock Triton µs − p50 jitlab policy µs) of the workload standing in
# for k. Host ms predicted for M = host(S) − saved. A step takes about max(host, GPU) plus what
# follows the last launch (the token read-back), so the predicted step = max(host predicted, GPU) +
# (step(S) − max(host(S), GPU)), and tokens/s scale with 1 / step. "Unbounded" ignores the GPU
# (step(S) − saved): the gain launch overhead alone would promise.

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
launch_trace = C.newest_trace("launch_overhead")  # a traces/launch_overhead-<run_id>.jsonl file
e2e_trace = C.newest_trace("e2e_decode")  # a traces/e2e_decode-<run_id>.jsonl file
# which launch-overhead workload stands in for each e2e kernel kind (attention: by the step's 2D/3D);
# None: jitlab.kernels' registry (a kind's own workload where the sweep runs it, else "tiny")
kernel_workload = None
# which launch-overhead policy stands in for each jitlab mode (the e2e tuned policies check the
# varying constexprs/ints only and freeze the per-model arguments: closest to minimal-checks)
mode_policy = {"eager_jitlab_safe": "safe", "eager_jitlab_tuned": "minimal-checks",
               "piecewise_jitlab": "minimal-checks", "piecewise_jitlab_safe": "safe"}
gain_threshold = 0.05  # a tokens/s gain below this fraction counts as "no gain"
figure_dir = None  # a folder: every figure is also saved there as <name>.png

# %%
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

C.script_args(globals(), ["launch_trace", "e2e_trace", "kernel_workload", "mode_policy", "gain_threshold",
                          "figure_dir"])
C.setup_matplotlib()
from jitlab.kernels import decode_workloads, launch_sweep  # noqa: E402  (the registry: no Triton, no torch)
from jitlab.telemetry import stability  # noqa: E402  (the experiment's flat-steps rule, standard library only)

SWEEP = launch_sweep()
if kernel_workload is None:
    kernel_workload = {kind: (w if w in SWEEP else "tiny") for kind, w in decode_workloads().items()}
    kernel_workload.setdefault("reduce", "tiny")
ldf, linfo = C.open_run(launch_trace, "launch_overhead")
edf, einfo = C.open_run(e2e_trace, "e2e_decode")
C.say("**Launch overhead** — " + C.banner(linfo, launch_trace) + "\n\n**End to end** — " + C.banner(einfo, e2e_trace))
if linfo.get("jitlab.provenance.gpu") != einfo.get("jitlab.provenance.gpu"):
    C.say(f"> The two runs were made on different GPUs ({linfo.get('jitlab.provenance.gpu')} vs "
          f"{einfo.get('jitlab.provenance.gpu')}): the prediction mixes machines.")

# %% [markdown]
# ## Per-launch savings from the launch-overhead trace
# p50 host µs per launch of stock Triton and of each jitlab policy, per workload; the saving is
# their difference.

# %%
lt = C.kind(ldf, "trial")
LT = pd.DataFrame({"workload": C.col(lt, "jitlab.workload", None), "variant": C.col(lt, "jitlab.variant", None),
                   "level": C.col(lt, "jitlab.trace_level", "off").fillna("off"),
                   "p50_us": C.num(C.col(lt, "jitlab.median_us")),
                   "split_us": (C.num(C.col(lt, "jitlab.arg_update_ns")) + C.num(C.col(lt, "jitlab.launch_call_ns"))) / 1e3})
LT = LT[LT["workload"].notna() & (LT["level"] == "off")]
US = LT.pivot_table(index="workload", columns="variant", values="p50_us", aggfunc="first")
SPLIT = LT.pivot_table(index="workload", columns="variant", values="split_us", aggfunc="first")
policies = sorted({p for p in mode_policy.values() if f"jitcache:{p}" in US.columns})
SAVE = pd.DataFrame({p: US.get("triton") - US.get(f"jitcache:{p}") for p in policies})
shown = pd.concat([US[["triton"] + [f"jitcache:{p}" for p in policies]].rename(columns=lambda c: f"{c} µs"),
                   SAVE.rename(columns=lambda p: f"saved by {p} µs")], axis=1) if "triton" in US else SAVE
C.table(shown, digits=1)
FALLBACK = list(SWEEP)  # the launch-overhead sweep's workloads (jitlab.kernels' registry)


def workload_for(kind_key):
    """The launch-overhead workload standing in for an e2e kernel kind (the first available of the
    mapped one and the fallbacks, so a partial launch-overhead run still gives an estimate)."""
    want = kernel_workload.get(kind_key, "tiny")
    chain = [want] + ([w for w in FALLBACK if "attention" in w] if "attn" in kind_key else []) + ["tiny"] + FALLBACK
    for w in chain:
        if w in SAVE.index:
            return w
    return None


used = {k: workload_for(k) for k in kernel_workload}
C.say("Stand-ins (e2e kernel kind → launch-overhead workload): " +
      ", ".join(f"`{k}` → `{w}`" + ("" if w == kernel_workload[k] else f" (wanted `{kernel_workload[k]}`, not in this trace)")
                for k, w in used.items()) + ". Modes → policies: " +
      ", ".join(f"`{m}` → `{p}`" for m, p in mode_policy.items()) + ".")

# %% [markdown]
# ## Launches per step from the e2e trace

# %%
et = C.kind(edf, "trial")
KEYS = ["config", "kind", "batch", "context", "layers", "mode", "tokens_per_s", "step_ms", "step_ms_mean", "host_ms",
        "gpu_busy_ms", "triton_by_kernel", "triton_launches_per_step", "launches_per_step", "per_launch_us"]
E = pd.DataFrame({k: C.col(et, f"jitlab.e2e.{k}", None) for k in KEYS})
E["span_id"] = et["span_id"].to_numpy()
E["skip"] = C.col(et, "jitlab.skip", None).fillna(C.col(et, "jitlab.error", None)).to_numpy()
E = E[E["config"].notna() & (E["mode"] != "sanity")].reset_index(drop=True)
for k in ("tokens_per_s", "step_ms", "step_ms_mean", "host_ms", "gpu_busy_ms", "triton_launches_per_step",
          "launches_per_step", "per_launch_us"):
    E[k] = C.num(E[k])
for k in ("batch", "context", "layers"):
    E[k] = C.num(E[k]).round().astype("Int64")
E = E[E["tokens_per_s"].notna() & E["skip"].isna()]
E["by_kernel"] = E["triton_by_kernel"].map(lambda s: C.jloads(s, {}) or {})
# share of measured steps whose attention ran 3D (from the step spans), per trial
st = C.kind(edf, "step")
st = st[C.col(st, "jitlab.e2e.phase", None) == "measure"]
frac3d = (st.assign(is3d=C.col(st, "jitlab.e2e.is_3d", None).map(lambda x: bool(x) if x is not None else False))
          .groupby("parent_id")["is3d"].mean()) if len(st) else pd.Series(dtype=float)
E["frac_3d"] = E["span_id"].map(frac3d).fillna(0.0)

# Were a trial's host times per step flat? (the experiment's own rule, jitlab.telemetry.stability: not flat when
# the host changed speed during the trial, so its median may compare a fast stretch with another mode's slow
# one). Recorded as jitlab.e2e.host_unstable; computed from the step spans for traces written before it.
def host_unstable(host):
    return stability.host_stability([float(x) for x in host if pd.notna(x)]).get("host_unstable")


_calc = {pid: host_unstable(C.num(C.col(g, "jitlab.e2e.host_ms")).tolist()) for pid, g in st.groupby("parent_id")} \
    if len(st) else {}
_rec = C.col(et.set_index("span_id"), "jitlab.e2e.host_unstable", None).reindex(E["span_id"]).to_numpy()
E["host_unstable"] = [_calc.get(sid) if r is None or (isinstance(r, float) and np.isnan(r)) else bool(r)
                      for sid, r in zip(E["span_id"], _rec)]


def saved_ms(by_kernel, frac_3d, policy):
    """Predicted host ms saved per step: Σ launches per step × µs saved per launch."""
    total, parts = 0.0, {}
    for k, n in by_kernel.items():
        if k == "attn":
            w2, w3 = workload_for("attn_2d"), workload_for("attn_3d")
            s = (1 - frac_3d) * SAVE.loc[w2, policy] + frac_3d * SAVE.loc[w3, policy]
        else:
            w = workload_for(k)
            s = SAVE.loc[w, policy] if w is not None else np.nan
        parts[k] = n * s / 1e3
        total += parts[k]
    return total, parts


def triton_ms(by_kernel, frac_3d):
    """Host ms per step stock Triton spends launching (Σ launches × p50 stock µs)."""
    total = 0.0
    for k, n in by_kernel.items():
        if k == "attn":
            us = (1 - frac_3d) * US.loc[workload_for("attn_2d"), "triton"] + frac_3d * US.loc[workload_for("attn_3d"), "triton"]
        else:
            us = US.loc[workload_for(k), "triton"]
        total += n * us / 1e3
    return total


PAIRS = {"eager_jitlab_safe": "eager_stock", "eager_jitlab_tuned": "eager_stock", "piecewise_jitlab": "piecewise_stock",
         "piecewise_jitlab_safe": "piecewise_stock"}
rows = []
for cfg, g in E.groupby("config", sort=False):
    g = g.set_index("mode")
    for m, s in PAIRS.items():
        pol = mode_policy.get(m)
        if m not in g.index or s not in g.index or pol not in SAVE.columns:
            continue
        S, M = g.loc[s], g.loc[m]
        sv, parts = saved_ms(S["by_kernel"], S["frac_3d"], pol)
        gpu = np.nanmedian([S["gpu_busy_ms"], M["gpu_busy_ms"]]) if pd.notna(S["gpu_busy_ms"]) or pd.notna(M["gpu_busy_ms"]) else np.nan
        step_s = S["step_ms_mean"] if pd.notna(S["step_ms_mean"]) else S["step_ms"]
        host_pred = S["host_ms"] - sv
        tail = max(0.0, step_s - max(S["host_ms"], gpu if pd.notna(gpu) else 0.0))
        step_pred = max(host_pred, gpu) + tail if pd.notna(gpu) else np.nan
        rows.append({"config": cfg, "kind": S["kind"], "batch": S["batch"], "context": S["context"],
                     "layers": S["layers"], "mode": m, "stock": s, "policy": pol,
                     "triton_launches": sum(S["by_kernel"].values()), "saved_ms_pred": sv,
                     "saved_ms_meas": S["host_ms"] - M["host_ms"], "host_ms_stock": S["host_ms"], "host_ms": M["host_ms"],
                     "gpu_ms": gpu, "triton_ms": triton_ms(S["by_kernel"], S["frac_3d"]),
                     "tps_stock": S["tokens_per_s"], "tps_meas": M["tokens_per_s"],
                     "not_flat": ("-" if S["host_unstable"] is None or M["host_unstable"] is None else
                                  {(True, True): "both", (True, False): "stock", (False, True): "jitlab"}.get(
                                      (S["host_unstable"], M["host_unstable"]), "no")),
                     "tps_pred": S["tokens_per_s"] * step_s / step_pred if pd.notna(step_pred) else np.nan,
                     "tps_pred_unbounded": S["tokens_per_s"] * step_s / max(1e-9, step_s - sv),
                     **{f"saved_ms.{k}": v for k, v in parts.items()}})
X = pd.DataFrame(rows)
if X.empty:
    raise SystemExit("no (jitlab mode, stock mode) pairs measured in the same config: nothing to link")
X["gain_meas"] = X["tps_meas"] / X["tps_stock"] - 1
X["gain_pred"] = X["tps_pred"] / X["tps_stock"] - 1
X["gain_pred_unbounded"] = X["tps_pred_unbounded"] / X["tps_stock"] - 1
X["host_bound"] = X["host_ms_stock"] > X["gpu_ms"]
MODES = [m for m in PAIRS if m in set(X["mode"])]
COL = {"eager_jitlab_safe": "#6baed6", "eager_jitlab_tuned": "#1f4e9c", "piecewise_jitlab": "#2ca02c",
       "piecewise_jitlab_safe": "#98df8a"}
C.say(f"{X['config'].nunique()} configs × {len(MODES)} jitlab modes paired with their stock mode "
      f"({len(X)} pairs); GPU time per step known for {int(X['gpu_ms'].notna().sum())} of them.")

# %% [markdown]
# ## 1. Host ms saved per step: predicted from per-launch savings vs measured

# %%
fig, ax = plt.subplots(figsize=(7.5, 6))
for m in MODES:
    d = X[X["mode"] == m]
    ax.scatter(d["saved_ms_pred"], d["saved_ms_meas"], color=COL.get(m, "grey"), s=40, label=m, alpha=0.85)
lo = min(0.0, X["saved_ms_pred"].min(), X["saved_ms_meas"].min())
hi = max(X["saved_ms_pred"].max(), X["saved_ms_meas"].max()) * 1.1 or 1.0
ax.plot([lo, hi], [lo, hi], color="grey", lw=1, label="measured = predicted")
ax.set_xlabel("predicted host ms saved per step (launches × µs saved per launch)")
ax.set_ylabel("measured host ms saved per step (stock − jitlab)")
ax.set_title("Do microbenchmark savings carry over to the decode loop?")
ax.legend(loc="upper left")
fig.tight_layout()
C.show(fig, "link_host_saved", figure_dir)
ok = X[X["saved_ms_pred"] > 0]
if len(ok):
    ratio = (ok["saved_ms_meas"] / ok["saved_ms_pred"])
    C.say(f"Measured / predicted host saving per step: median {ratio.median():.2f} "
          f"(range {ratio.min():.2f}–{ratio.max():.2f}) over {len(ok)} pairs. "
          + ("Close to 1: the per-launch savings measured in isolation are what the loop saves." if 0.75 <= ratio.median() <= 1.33
             else "Far from 1: the loop's launches cost differently than the microbenchmark's (argument count, "
                  "cache state, Python around the launches), so the stand-in workloads are only a rough guide."))

# %%
# the same check per kernel, for jitlab's side: µs per hit in the decode loop (the e2e run's sampled
# records: argument update + launcher call) against the stand-in workload's traced hits in isolation
KE = C.col(et, "jitlab.e2e.per_launch_by_kernel", None)
rows_k = []
for (mode, pbk) in zip(C.col(et, "jitlab.e2e.mode", None), KE):
    for k, v in (C.jloads(pbk, {}) or {}).items():
        if mode in mode_policy and isinstance(v, dict):
            rows_k.append({"mode": mode, "kernel": k,
                           "loop_us": (float(v.get("arg_update_ns") or 0) + float(v.get("launch_ns") or 0)) / 1e3})
if rows_k:
    K = pd.DataFrame(rows_k).groupby(["mode", "kernel"])["loop_us"].median().reset_index()
    K["stand-in"] = [workload_for("attn_2d" if k == "attn" else k) for k in K["kernel"]]
    K["isolated_us"] = [SPLIT.loc[w, f"jitcache:{mode_policy[m]}"] if w in SPLIT.index and
                        f"jitcache:{mode_policy[m]}" in SPLIT.columns else np.nan for m, w in zip(K["mode"], K["stand-in"])]
    C.say("**jitlab µs per hit, in the decode loop vs in isolation** (argument update + launcher call, medians; "
          "the loop's from the e2e trace's sampled launch records, over configs):")
    C.table(K.set_index(["mode", "kernel"]).rename(columns={"loop_us": "in the loop (µs)",
                                                            "isolated_us": "stand-in in isolation (µs)"}))

# %% [markdown]
# ## 2. Tokens/s: predicted vs measured
# Filled markers: prediction bounded by the GPU time per step; hollow: unbounded (launch savings
# alone). Points on the diagonal are explained by launch overhead.

# %%
fig, ax = plt.subplots(figsize=(7.5, 6))
for m in MODES:
    d = X[X["mode"] == m]
    c = COL.get(m, "grey")
    if d["tps_pred"].notna().any():
        ax.scatter(d["tps_meas"], d["tps_pred"], color=c, s=42, label=f"{m} (GPU-bounded)")
    ax.scatter(d["tps_meas"], d["tps_pred_unbounded"], facecolors="none", edgecolors=c, s=42,
               label=f"{m} (unbounded)")
vals = pd.concat([X["tps_meas"], X["tps_pred"].dropna(), X["tps_pred_unbounded"]])
lo, hi = vals[vals > 0].min() / 1.3, vals.max() * 1.3
ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlim(lo, hi)
ax.set_ylim(lo, hi)
ax.set_xlabel("measured tokens/s")
ax.set_ylabel("predicted tokens/s")
ax.set_title("Tokens/s predicted from per-launch savings × launches per step")
ax.legend(loc="upper left", fontsize=7)
fig.tight_layout()
C.show(fig, "link_tokens_per_s", figure_dir)

# %%
T = X[["config", "mode", "policy", "triton_launches", "saved_ms_pred", "saved_ms_meas", "host_ms_stock", "gpu_ms",
       "tps_stock", "tps_meas", "tps_pred", "gain_meas", "gain_pred", "gain_pred_unbounded", "not_flat"]].copy()
for c in ("gain_meas", "gain_pred", "gain_pred_unbounded"):
    T[c] = 100 * T[c]
T = T.rename(columns={"triton_launches": "Triton launches/step", "saved_ms_pred": "saved ms pred",
                      "saved_ms_meas": "saved ms meas", "host_ms_stock": "stock host ms", "gpu_ms": "GPU ms",
                      "tps_stock": "stock tok/s", "tps_meas": "tok/s meas", "tps_pred": "tok/s pred",
                      "gain_meas": "gain % meas", "gain_pred": "gain % pred", "gain_pred_unbounded": "gain % unbounded",
                      "not_flat": "host not flat"})
C.table(T.set_index(["config", "mode"]), digits=1)
nf = X[X["not_flat"].isin(["stock", "jitlab", "both"])]
if len(nf):
    C.say(f"**host not flat**: in {len(nf)} of {len(X)} pairs the stock trial, the jitlab trial or both had host times "
          "per step that were not flat (the host changed speed during the trial): their measured saving and gain "
          "may compare a fast stretch with a slow one; rerun those configs before reading them. `-`: too few steps "
          "to judge.")
b = X.dropna(subset=["tps_pred"])
if len(b):
    err = (b["tps_pred"] / b["tps_meas"] - 1).abs()
    C.say(f"GPU-bounded prediction vs measurement: median |error| {100 * err.median():.0f}% "
          f"(worst {100 * err.max():.0f}% at `{b.loc[err.idxmax(), 'config']}` / `{b.loc[err.idxmax(), 'mode']}`); the "
          f"unbounded one is off by a median {100 * (X['tps_pred_unbounded'] / X['tps_meas'] - 1).abs().median():.0f}%.")

# %% [markdown]
# ## 3. How much of a step is Triton launch overhead
# Per decode config (eager stock): host ms per step spent in stock Triton launches (Triton
# launches × p50 µs), the rest of the host time, and the GPU time per step.

# %%
Y = X[(X["stock"] == "eager_stock") & (X["kind"] == "decode")].drop_duplicates("config").sort_values(
    ["layers", "context", "batch"])
if len(Y):
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(Y) + 3), 4.4))
    x = np.arange(len(Y))
    tri = np.minimum(Y["triton_ms"], Y["host_ms_stock"])
    ax.bar(x, tri, color="#d62728", label="stock Triton launch overhead (launches × p50 µs)")
    ax.bar(x, Y["host_ms_stock"] - tri, bottom=tri, color="#fcbba1", label="rest of the host time per step")
    if Y["gpu_ms"].notna().any():
        ax.plot(x, Y["gpu_ms"], "k_", ms=18, mew=2.5, label="GPU time per step")
    ax.set_xticks(x, [f"L={a} ctx={c} B={b_}" for a, c, b_ in Y[["layers", "context", "batch"]].itertuples(index=False)],
                  rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("ms per decode step (eager, stock Triton)")
    ax.set_title("Host time per step and its Triton launch share, against the GPU time")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", visible=False)
    fig.tight_layout()
    C.show(fig, "link_step_budget", figure_dir)

# %% [markdown]
# ## 4. Where launch overhead matters, and where it does not

# %%
thr = 100 * gain_threshold
lines = []
for m in [m for m in ("eager_jitlab_tuned", "eager_jitlab_safe", "piecewise_jitlab") if m in MODES]:
    d = X[X["mode"] == m]
    yes, no = d[d["gain_meas"] >= gain_threshold], d[d["gain_meas"] < gain_threshold]
    lines.append(f"**`{m}` vs `{d['stock'].iloc[0]}`** (policy stand-in `{d['policy'].iloc[0]}`): a tokens/s gain of "
                 f"≥ {thr:.0f}% in {len(yes)} of {len(d)} configs.")
    if len(yes):
        lines.append("- **It matters** in " + ", ".join(
            f"`{r.config}` (+{100 * r.gain_meas:.0f}% measured, +{C.fmt(100 * r.gain_pred, '.0f')}% predicted; "
            f"host {r.host_ms_stock:.1f} ms vs GPU {C.fmt(r.gpu_ms, '.1f', 'n/a')} ms)"
            for r in yes.sort_values("gain_meas", ascending=False).itertuples()) + ".")
    if len(no):
        lines.append("- **It does not** in " + ", ".join(
            f"`{r.config}` ({100 * r.gain_meas:+.0f}%; host {r.host_ms_stock:.1f} ms vs GPU {C.fmt(r.gpu_ms, '.1f', 'n/a')} ms)"
            for r in no.sort_values("gain_meas").itertuples()) + ".")
    hb = d.dropna(subset=["gpu_ms"])
    if len(hb):
        agree = ((hb["gain_meas"] >= gain_threshold) == hb["host_bound"]).mean()
        lines.append(f"- The rule *host time per step (stock) > GPU time per step ⇒ a gain* holds in "
                     f"{100 * agree:.0f}% of the {len(hb)} configs with a GPU time.")
    lines.append("")
Y2 = X[X["stock"] == "eager_stock"].drop_duplicates("config")
if len(Y2):
    share = (Y2["triton_ms"] / Y2["host_ms_stock"]).clip(upper=1)
    lines.append(f"Stock Triton's launch overhead is {C.span(100 * share, '.0f')}% of the eager host time per step "
                 f"({C.span(Y2['triton_launches'], '.0f')} Triton launches per step, at the launch-overhead trial's p50 µs).")
    hbY = Y2.dropna(subset=["gpu_ms"])
    if len(hbY):
        host_b = hbY[hbY["host_bound"]]
        gpu_b = hbY[~hbY["host_bound"]]
        lines.append(f"Eager stock is host-bound (host ms > GPU ms per step) in {len(host_b)} of {len(hbY)} "
                     f"configs" + (f": {', '.join(f'`{c}`' for c in host_b['config'])}" if len(host_b) else "") + "; "
                     + (f"GPU-bound in {', '.join(f'`{c}`' for c in gpu_b['config'])}." if len(gpu_b) else
                        "never GPU-bound in this sweep."))
    lines.append("")
main = "eager_jitlab_tuned" if "eager_jitlab_tuned" in MODES else MODES[0]
d = X[(X["mode"] == main)].dropna(subset=["gpu_ms"])
if len(d):
    agree = ((d["gain_meas"] >= gain_threshold) == d["host_bound"]).mean()
    gains = d[d["gain_meas"] >= gain_threshold]
    flat = d[d["gain_meas"] < gain_threshold]
    hb_d = d[d["host_bound"]] if d["host_bound"].any() else d  # where launch overhead can matter
    pe = (hb_d["tps_pred"] / hb_d["tps_meas"] - 1).abs().median()
    ratio = d["gpu_ms"] / d["host_ms_stock"]
    if agree >= 0.8:
        verdict = (f"**In short:** launch overhead turns into tokens/s where the host needs longer to issue a step than "
                   f"the GPU needs to run it: `{main}` gains ≥ {thr:.0f}% in {len(gains)} of {len(d)} configs, all with "
                   f"GPU/host ≤ {C.fmt(ratio[gains.index].max() if len(gains) else np.nan, '.2f')}, by up to "
                   f"+{C.fmt(100 * d['gain_meas'].max(), '.0f')}%. Where the GPU time per step exceeds the host time "
                   f"({len(flat)} configs, GPU/host ≥ {C.fmt(ratio[flat.index].min() if len(flat) else np.nan, '.2f')}), the "
                   f"saved host time is hidden behind GPU work and buys no tokens/s (it still frees host CPU time).")
    else:
        verdict = (f"**In short:** the host-vs-GPU rule explains only {100 * agree:.0f}% of the configs here, so something "
                   f"besides launch overhead moves tokens/s in this run (see the table above).")
    verdict += (f" Per-launch savings × launches per step, bounded by the GPU time, predict `{main}`'s tokens/s in "
                f"the host-bound configs to within a median {100 * pe:.0f}%" + (" — launch overhead is the whole story where it matters."
                                                        if pe <= 0.15 else
                                                        ": the microbenchmark's per-launch savings do not fully carry "
                                                        "over to this loop (different argument counts and cache state), "
                                                        "so read the predictions as a rough guide."))
    pw = X[X["mode"] == "piecewise_jitlab"]
    if len(pw):
        verdict += (f" With piecewise CUDA graphs only {int(pw['triton_launches'].min())}–"
                    f"{int(pw['triton_launches'].max())} Triton launches per step stay eager; jitlab there gains at most "
                    f"{100 * pw['gain_meas'].max():+.0f}% tokens/s.")
    lines.append(verdict)
C.say("\n".join(lines))
