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
# # vLLM's own kernels: host µs per launch per batch, stock vs jitlab policies vs the C floor
#
# **What it shows.** For vLLM 0.26's Triton attention kernels launched exactly as vLLM's wrappers
# launch them (`experiments/vllm_kernels.py`: `kernel_unified_attention`, `reduce_segments` for
# 3D split-KV batches, `reshape_and_cache_kernel_flash`), per batch of the matrix (num_seqs ×
# decode / prefill chunk / mixed × 2D / 3D):
#
# 1. the policy matrix check: each plugin policy, installed with `verify=1`, bitwise against
#    unwrapped vLLM over every batch, twice (the second pass hits entries other batches prepared);
# 2. host µs per launch of stock Triton, the direct compiled launch (`compiled_run`), each policy,
#    the C floor, and the GPU µs per launch (CUDA-graph replays timed with CUDA events);
# 3. one layer's step (vLLM's cache write + `unified_attention()`) with stock vs jitlab kernels.
#
# **Reads** one trace file, `traces/vllm_kernels-<run_id>.jsonl` (parameter `trace`; default: the
# newest such file directly under `traces/`). Trial spans carry the per-variant aggregates
# (`jitlab.median_us`, `jitlab.p10_us`, `jitlab.p90_us`); the run span carries the matrix check
# (`jitlab.vllm.matrix`), the policies, the batches, the layer shape and the provenance. It never
# launches a kernel.

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
trace = C.newest_trace("vllm_kernels")  # a traces/vllm_kernels-<run_id>.jsonl file
figure_dir = None  # a folder: every figure is also saved there as <name>.png

# %%
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

C.script_args(globals(), ["trace", "figure_dir"])
C.setup_matplotlib()
df, info = C.open_run(trace, "vllm_kernels")
C.say(C.banner(info, trace))
shape = C.jloads(info.get("jitlab.vllm.shape"), {}) or {}
POLICIES = C.jloads(info.get("jitlab.vllm.policies"), []) or []
BATCHES = C.jloads(info.get("jitlab.vllm.batches"), []) or []
C.say(f"**vLLM** {info.get('jitlab.vllm.source', '?')} · layer: "
      + ", ".join(f"{k} {v}" for k, v in shape.items()) + f" · policies: {', '.join(POLICIES) or '?'} · "
      f"{len(BATCHES)} batches")

# %% [markdown]
# ## 1. The matrix check: every policy bitwise against unwrapped vLLM
# `verify=1`: every hit re-derives Triton's full key and raises `AssumptionViolated` naming the
# argument a relaxation got wrong. Hits, verified hits and entries are `kernel_unified_attention`'s.

# %%
matrix = C.jloads(info.get("jitlab.vllm.matrix"), []) or []
M = pd.DataFrame([{
    "policy": r.get("policy"), "batches": r.get("batches"), "passes": r.get("passes"),
    "bitwise equal": r.get("bitwise_equal"), "mismatches": ", ".join(r.get("mismatches") or []),
    "hits": r.get("counters", {}).get("kernel_unified_attention", {}).get("hit"),
    "verified hits": r.get("counters", {}).get("kernel_unified_attention", {}).get("verify"),
    "entries": r.get("counters", {}).get("kernel_unified_attention", {}).get("entries"),
    "error": r.get("error") or "",
} for r in matrix])
if M.empty:
    C.say("**This run has no matrix check** (`jitlab.vllm.matrix` missing).")
else:
    C.table(M)
    bad = M[M["bitwise equal"] != True]  # noqa: E712 - a missing value is not a pass
    C.say(f"**Matrix check: {'PASSED' if bad.empty else 'FAILED'}**: "
          + (f"all {len(M)} policies bitwise equal to unwrapped vLLM on every batch of every pass."
             if bad.empty else "not bitwise (or raised): " + ", ".join(bad["policy"].astype(str))))

# %% [markdown]
# ## The trials
# One trial span per (workload, variant). A workload is one kernel launch as vLLM issued it on one
# batch (`<kernel> <kind> n=<num_seqs> <2d|3d>`), or `step <batch>`: one layer through vLLM's wrappers.

# %%
trials = C.kind(df, "trial")
T = pd.DataFrame({
    "workload": C.col(trials, "jitlab.workload", None),
    "variant": C.col(trials, "jitlab.variant", None),
    "kind": C.col(trials, "jitlab.variant.kind", None),
    "p50_us": C.num(C.col(trials, "jitlab.median_us")),
    "p10_us": C.num(C.col(trials, "jitlab.p10_us")),
    "p90_us": C.num(C.col(trials, "jitlab.p90_us")),
    "correct": C.col(trials, "jitlab.correct", None),
    "note": C.col(trials, "jitlab.skip", None).fillna(C.col(trials, "jitlab.error", None)),
    "start_ns": trials["start_ns"],
}).reset_index(drop=True)
T = T[T["workload"].notna()].copy()
parts = T["workload"].str.split(" ", n=1, expand=True)
T["kernel"], T["batch"] = parts[0], parts[1]
KERNELS = [k for k in ("kernel_unified_attention", "reduce_segments", "reshape_and_cache_kernel_flash")
           if k in set(T["kernel"])]
ORDER_B = [b for b in BATCHES if b in set(T["batch"])] or list(dict.fromkeys(T.sort_values("start_ns")["batch"]))
pols = [f"jitcache:{p}" for p in POLICIES]
COLUMNS = ["triton", "compiled_run"] + pols + ["c_floor", "gpu_time"]
NAMES = {"triton": "stock Triton", "compiled_run": "compiled_run", "c_floor": "C floor", "gpu_time": "GPU µs/launch",
         **{p: p.replace("jitcache:", "") for p in pols}}
C.say(f"{len(T)} trials: kernels {', '.join(KERNELS)} and `step` over {len(ORDER_B)} batches.")
problems = T[T["note"].notna() | ~T["correct"].isin(["ok", "n/a", None])]
if len(problems):
    C.say("**Trials skipped, failed or with a failed correctness check:**")
    C.table(problems[["workload", "variant", "correct", "note"]])

# %% [markdown]
# ## 2. Host µs per launch per batch (p50 over repeats)
# Per kernel, one row per batch: stock Triton, the direct compiled launch, each policy, the C floor
# (the same binary and arguments launched from a C loop: what any launcher pays), and the GPU time
# per launch (what the launch overhead is measured against: host µs above it cannot be hidden by the
# GPU's queue when the host launches back to back).


# %%
def per_batch(kernel):
    d = T[T["kernel"] == kernel].pivot_table(index="batch", columns="variant", values="p50_us", aggfunc="first")
    d = d.reindex([b for b in ORDER_B if b in d.index]).reindex(columns=[c for c in COLUMNS if c in d.columns])
    return d.rename(columns=NAMES)


for k in KERNELS:
    C.say(f"**{k}** (host µs per launch; last column: GPU µs per launch)")
    C.table(per_batch(k))


# %%
def kernel_figure(kernel):
    d = per_batch(kernel)
    host = [c for c in d.columns if c != NAMES["gpu_time"]]
    y = np.arange(len(d.index))
    h = 0.8 / max(1, len(host))
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(d.index) * max(1, len(host)) * 0.35 + 2))
    for i, c in enumerate(host):
        ax.barh(y + i * h, d[c].to_numpy(), height=h, label=c)
    if NAMES["gpu_time"] in d.columns:
        ax.scatter(d[NAMES["gpu_time"]].to_numpy(), y + 0.4 - h / 2, marker="|", s=300, color="black",
                   label="GPU µs per launch", zorder=3)
    ax.set_yticks(y + 0.4 - h / 2, d.index)
    ax.invert_yaxis()
    ax.set_xlabel("µs per launch (host p50; black tick: GPU)")
    ax.set_title(f"{kernel}\n" + C.provenance_line(info), fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


for k in KERNELS:
    C.show(kernel_figure(k), f"vllm_kernels_{k}", figure_dir)

# %%
lines = []
for k in KERNELS:
    d = T[T["kernel"] == k].pivot_table(index="batch", columns="variant", values="p50_us", aggfunc="first")
    if "triton" not in d or "c_floor" not in d:
        continue
    best = d[[p for p in pols if p in d.columns]].min(axis=1) if any(p in d.columns for p in pols) else None
    lines.append(f"- **{k}**: stock Triton {C.span(d['triton'])} µs, compiled_run "
                 f"{C.span(d.get('compiled_run', pd.Series(dtype=float)))} µs, best policy "
                 f"{C.span(best) if best is not None else 'n/a'} µs, C floor {C.span(d['c_floor'])} µs, GPU "
                 f"{C.span(d.get('gpu_time', pd.Series(dtype=float)))} µs per launch (ranges over batches).")
C.say("**Per kernel, over the batches:**\n\n" + "\n".join(lines))

# %% [markdown]
# ## 3. One layer through vLLM's wrappers: stock vs jitlab kernels
# `step <batch>`: `triton_reshape_and_cache_flash()` then `unified_attention()`, host µs per layer, with
# vLLM's kernel globals stock or wrapped by each policy (the wrappers' own Python is in both).

# %%
S = T[T["kernel"] == "step"].pivot_table(index="batch", columns="variant", values="p50_us", aggfunc="first")
S = S.reindex([b for b in ORDER_B if b in S.index]).reindex(columns=[c for c in ["stock"] + pols if c in S.columns])
if S.empty:
    C.say("This run has no `step` workloads.")
else:
    C.table(S.rename(columns=NAMES))
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(S.index) * len(S.columns) + 2))
    y = np.arange(len(S.index))
    h = 0.8 / len(S.columns)
    for i, c in enumerate(S.columns):
        ax.barh(y + i * h, S[c].to_numpy(), height=h, label=NAMES.get(c, c))
    ax.set_yticks(y + 0.4 - h / 2, S.index)
    ax.invert_yaxis()
    ax.set_xlabel("host µs per layer (cache write + unified_attention())")
    ax.set_title("one layer through vLLM's wrappers\n" + C.provenance_line(info), fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    C.show(fig, "vllm_kernels_step", figure_dir)
    if "stock" in S.columns and len(S.columns) > 1:
        gain = (S["stock"] - S.drop(columns="stock").min(axis=1))
        C.say(f"**Per layer**: the best policy saves {C.span(gain)} µs of host time against stock Triton "
              f"({C.span(S['stock'] / S.drop(columns='stock').min(axis=1), '.2f')}× less).")
