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
# # Launch overhead on two cards, side by side
#
# **What it shows.** The default `launch_overhead` run of each card (H200, H100, any other GPU with a
# committed run), per workload:
#
# 1. the ratio to the ideal (a C no-op called like the kernel + the C floor, both measured in the same run)
#    and to the C floor, of stock Triton, jitcache `safe` and `seed`, with the goals (safe 1.2x, seed 1.1x);
# 2. what each relaxed policy saves over `safe`, in µs per launch, per card.
#
# Host overhead depends on the host's CPU as much as on the card, so each card is labelled with the GPU
# and, where the run recorded it, the host CPU from its provenance.
#
# **Reads** the run spans of `traces/launch_overhead-<run_id>.jsonl` files (parameter `traces`: a list of
# files; default: for each GPU named in the provenance of the traces directly under `traces/`, its newest
# default run, not `--quick` and not labelled as a demo or test). With one card's run it shows that card
# alone and says so; a second card's column appears once its trace is in `traces/`. Only the run span's
# `jitlab.results` (the experiment's summary rows) is read. It never launches a kernel.

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
traces = None  # a list of traces/launch_overhead-<run_id>.jsonl files; None: the newest default run per GPU
figure_dir = None  # a folder: every figure is also saved there as <name>.png

# %%
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

C.script_args(globals(), ["traces", "figure_dir"])
C.setup_matplotlib()
GOALS = {"safe": 1.2, "seed": 1.1}  # ratio to the ideal (issue 23)


def run_of(path):
    """(run-span attributes, summary rows) of one launch_overhead trace."""
    info = C.run_info(C.load(path))
    return info, pd.DataFrame(C.jloads(info.get("jitlab.results"), []) or [])


def gpu_of(info):
    return str(info.get("jitlab.provenance.gpu", "?"))


def default_runs(folder=C.TRACES):
    """The newest default (not quick, unlabelled) launch_overhead run per GPU, oldest GPU first."""
    newest = {}
    for p in sorted(pathlib.Path(folder).glob("launch_overhead-*.jsonl"), key=lambda p: p.name):
        info, _ = run_of(p)
        if info.get("jitlab.quick") in (True, "true", "True") or info.get("jitlab.experiment.label"):
            continue
        newest[gpu_of(info)] = p
    return list(newest.values())


paths = ([traces] if isinstance(traces, str) else list(traces)) if traces else default_runs()
if not paths:
    C.stop("_No default launch_overhead run under traces/: run `python -m experiments.launch_overhead` on a GPU "
           "machine and commit its trace._")
CARDS = []  # (label, info, rows)
for p in paths:
    info, rows = run_of(p)
    cpu = info.get("jitlab.provenance.cpu")
    label = gpu_of(info) + (f" ({cpu})" if cpu else "")
    if any(lab == label for lab, _, _ in CARDS):  # two runs of one card: tell them apart by run id
        label += f" [{info.get('jitlab.run.id', pathlib.Path(str(p)).stem)}]"
    CARDS.append((label, info, rows))
    C.say(C.banner(info, p))
if len(CARDS) == 1:
    C.say(f"**One card only** ({CARDS[0][0]}): a second card's column appears here once a default "
          "`launch_overhead` trace whose provenance names another GPU is in `traces/`.")

# %% [markdown]
# ## 1. Ratios to the ideal and to the C floor, per card
# Ideal = `c_call` (a C no-op called exactly like the kernel) + `c_floor` (the same binary launched from a
# C loop), both from the same run. Runs older than the `c_call` baseline have no ideal (shown empty).

# %%
SHOWN = {"triton": "stock Triton", "jitcache:safe": "safe", "jitcache:seed": "seed"}


def ratios(rows):
    """One row per (workload, variant shown): p50 µs, × ideal, × C floor."""
    if rows.empty:
        return pd.DataFrame(columns=["workload", "variant", "p50_us", "x_ideal", "x_floor"])
    r = rows[rows["variant"].isin(["c_call", "c_floor", *SHOWN])].copy()
    r["p50_us"] = C.num(r.get("median_us"))
    med = r.pivot_table(index="workload", columns="variant", values="p50_us", aggfunc="first")
    ideal = med["c_call"] + med["c_floor"] if {"c_call", "c_floor"} <= set(med.columns) else None
    out = r[r["variant"].isin(SHOWN)].copy()
    out["x_floor"] = out["p50_us"] / out["workload"].map(med["c_floor"]) if "c_floor" in med else np.nan
    out["x_ideal"] = out["p50_us"] / out["workload"].map(ideal) if ideal is not None else np.nan
    return out[["workload", "variant", "p50_us", "x_ideal", "x_floor"]]


R = pd.concat([ratios(rows).assign(card=label) for label, _, rows in CARDS], ignore_index=True)
WORKLOADS = list(dict.fromkeys(R["workload"]))
LABELS = [label for label, _, _ in CARDS]
if R.empty:
    C.stop("_These runs have no stock Triton or jitcache safe/seed rows._")
wide = R.assign(what=R["variant"].map(SHOWN)).pivot_table(index="workload", columns=["card", "what"],
                                                          values=["x_ideal", "x_floor"], aggfunc="first")
for metric, title in (("x_ideal", "× ideal"), ("x_floor", "× C floor")):
    t = wide[metric].reindex(index=WORKLOADS) if metric in wide.columns.get_level_values(0) else pd.DataFrame()
    if not t.empty:
        t = t.reindex(columns=pd.MultiIndex.from_product([LABELS, list(SHOWN.values())]))
        t.columns = [f"{c} · {w}" for c, w in t.columns]
        C.say(f"**{title}** (p50 / the same run's {'ideal' if metric == 'x_ideal' else 'C floor'}):")
        C.table(t)

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), squeeze=False)
bars = [(label, w) for label in LABELS for w in ("safe", "seed")]
wid = 0.8 / max(1, len(bars))
x = np.arange(len(WORKLOADS))
for ax, (metric, title) in zip(axes[0], (("x_ideal", "ratio to the ideal"), ("x_floor", "ratio to the C floor"))):
    for i, (label, what) in enumerate(bars):
        d = R[(R["card"] == label) & (R["variant"] == f"jitcache:{what}")].set_index("workload").reindex(WORKLOADS)
        ax.bar(x + (i - (len(bars) - 1) / 2) * wid, d[metric], wid, label=f"{what} · {label}",
               hatch="//" if what == "seed" else None, alpha=0.85)
    if metric == "x_ideal":
        for what, goal in GOALS.items():
            ax.axhline(goal, ls="--" if what == "safe" else ":", color="black", lw=0.9)
            ax.text(len(WORKLOADS) - 0.5, goal, f" {what} goal {goal}x", va="bottom", ha="right", fontsize=7)
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.set_xticks(x, WORKLOADS, rotation=15, ha="right")
    ax.set_title(title)
    ax.grid(axis="x", visible=False)
axes[0][0].set_ylabel("p50 / reference")
h, lab = axes[0][0].get_legend_handles_labels()
fig.legend(h, lab, loc="lower center", ncol=min(4, len(bars)), bbox_to_anchor=(0.5, -0.02), fontsize=8)
fig.suptitle("jitcache safe and seed per card (same-run references)", fontsize=11)
fig.tight_layout(rect=(0, 0.1, 1, 1))
C.show(fig, "launch_overhead_cards_ratios", figure_dir)

# %%
lines = []
for label in LABELS:
    d = R[(R["card"] == label)].pivot_table(index="workload", columns="variant", values="x_ideal", aggfunc="first")
    for what, goal in GOALS.items():
        col = f"jitcache:{what}"
        if col not in d or d[col].dropna().empty:
            continue
        met = d[col].dropna()
        lines.append(f"- {label}, `{what}` (goal {goal}x): met on {int((met <= goal).sum())} of {len(met)} workloads; "
                     + ", ".join(f"{w} {v:.2f}x" for w, v in met.items()))
C.say("**Goals against the ideal, per card:**\n\n" + ("\n".join(lines) if lines else "_no ideal in these runs_"))
if len(LABELS) >= 2:
    a, b = LABELS[:2]
    s = R[R["variant"] == "jitcache:safe"].pivot_table(index="workload", columns="card", values="x_ideal",
                                                       aggfunc="first").reindex(WORKLOADS)
    if {a, b} <= set(s.columns):
        diff = (s[b] - s[a]).dropna()
        C.say(f"**Safe × ideal, {b} minus {a}:** " + ", ".join(f"{w} {v:+.2f}" for w, v in diff.items())
              + (f" (largest difference {diff.abs().max():.2f})" if len(diff) else ""))

# %% [markdown]
# ## 2. What each relaxed policy saves over safe, per card
# µs per launch, p50 safe − p50 policy from the same run (positive: the policy is faster). The last column
# per card is the safe p50 itself, for scale.

# %%
def savings(rows):
    if rows.empty:
        return pd.DataFrame()
    j = rows[(rows.get("kind") == "jitcache") & rows["variant"].str.match(r"^jitcache:[^ ]+$")].copy()
    j["p50_us"] = C.num(j["median_us"])
    j["policy"] = j["variant"].str.replace("jitcache:", "", regex=False)
    m = j.pivot_table(index="workload", columns="policy", values="p50_us", aggfunc="first")
    if "safe" not in m:
        return pd.DataFrame()
    out = m.drop(columns="safe").rsub(m["safe"], axis=0)
    out["(safe p50 µs)"] = m["safe"]
    return out


for label, _, rows in CARDS:
    S = savings(rows)
    if S.empty:
        C.say(f"_{label}: no jitcache safe rows._")
        continue
    C.say(f"**{label}**: µs saved per launch over safe:")
    C.table(S.reindex(WORKLOADS).dropna(how="all"))
    rel = S.drop(columns="(safe p50 µs)")
    best = rel.max(axis=1)
    C.say(f"{label}: the best relaxed policy saves {best.min():.2f}–{best.max():.2f} µs per launch over safe "
          f"(per workload: " + ", ".join(f"{w} `{rel.loc[w].idxmax()}` {best[w]:+.2f}" for w in best.dropna().index)
          + ").")
