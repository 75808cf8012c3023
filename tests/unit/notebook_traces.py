"""SYNTHETIC traces for the notebook tests (never committed, never a measurement).

They are written through the real producers' code paths (`jitlab.telemetry.Run`, the launch-overhead
runner's trial attributes, `jitlab.bench.decode`'s result attributes and derived metrics), so their
schema is the one the experiments write; the numbers come from a simple made-up model. Every run span
is labelled `SYNTHETIC TEST DATA` (`jitlab.experiment.label`), which the notebooks show as a warning.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

LABEL = "SYNTHETIC TEST DATA (tests/unit/notebook_traces.py): not a measurement"

# workload -> (runtime args, stock Triton µs) of the made-up launch-overhead model
_WORKLOADS = {"tiny": (3, 19.0), "unified_attention_2d": (77, 72.0), "unified_attention_3d": (77, 52.0),
              "cache_write": (14, 40.0)}
_POLICIES = [
    {"name": "safe"},
    {"name": "static", "static": True},
    {"name": "grid-cached", "cache_launch_grid": True},
    {"name": "const-strides", "assume_const": ("stride_a", "stride_b")},
    {"name": "minimal-checks", "check_keys": (), "check_specialization": ("n",)},
    {"name": "seed", "check_keys": (), "check_specialization": ("n",), "assume_const": ("stride_a", "stride_b"),
     "cache_launch_grid": True, "static": True},
]


def _spin(ns: int) -> tuple[int, int]:
    t0 = time.perf_counter_ns()
    while time.perf_counter_ns() - t0 < ns:
        pass
    return t0, time.perf_counter_ns()


def launch_overhead_trace(path: Path, gpu: str | None = None, speed: float = 1.0) -> Path:
    """A small launch_overhead-shaped trace: 4 workloads x (baselines, 6 policies, tracing levels,
    floors, graph, first launch), with sampled hit spans inside trials and misses before them. `gpu`:
    the card its provenance names (and a c_call baseline, so the ideal exists); `speed` scales the host."""
    from jitlab import Policy, telemetry
    from jitlab.bench import runner

    path = Path(path)
    with telemetry.Run("launch_overhead", level="sampled", sample_every=10, trace_file=path, otlp=False,
                       attributes={"jitlab.experiment.label": LABEL,
                                   "jitlab.config": json.dumps({"trace": "sampled", "sample_every": 10}),
                                   **({"jitlab.provenance.gpu": gpu, "jitlab.provenance.cpu": "synthetic CPU"}
                                      if gpu else {})}) as run:
        rec = run.recorder
        results = []
        for wi, (w, (nargs, triton_us)) in enumerate(_WORKLOADS.items()):
            floor_us = 4.5
            safe_us = 6.0 + 0.28 * nargs
            variants = [runner.Variant("python_nop", "baseline"), runner.Variant("triton", "baseline"),
                        runner.Variant("compiled_run", "baseline")]
            if gpu:
                variants.append(runner.Variant("c_call", "baseline"))
            pols = []
            for d in _POLICIES:
                p = Policy(**d)
                pols.append(p)
                variants.append(runner.Variant(f"jitcache:{p.name}", "jitcache", policy=p))
            variants += [runner.Variant(f"jitcache:safe trace={lv}", "jitcache", policy=pols[0], trace_level=lv)
                         for lv in ("summary", "sampled", "full")]
            variants += [runner.Variant("cuda_python_floor", "floor"), runner.Variant("c_floor", "floor"),
                         runner.Variant("cuda_graph", "graph"), runner.Variant("first_launch:triton", "first"),
                         runner.Variant("first_launch:jitcache", "first")]
            kernel = f"kernel_{w}"
            # the correctness check launches (outside trials): one miss per jitcache entry
            for p in pols:
                t0, t1 = _spin(20_000)
                rec.record(kernel, "global", p.name, 1, 0, t0, t1 - 5_000, t1, compile_ns=90_000)
            for v in variants:
                relax = {"safe": 1.0, "static": 1.0, "grid-cached": 0.95, "const-strides": 0.9,
                         "minimal-checks": 0.7, "seed": 0.6}.get(v.policy.name if v.policy else "", 1.0)
                p50 = speed * {"python_nop": 0.05, "c_call": 0.4, "triton": triton_us,
                               "compiled_run": 9.0 + 0.05 * nargs, "cuda_python_floor": 5.8, "c_floor": floor_us,
                               "cuda_graph": 0.09, "first_launch:triton": 5000.0 + 80 * nargs,
                               "first_launch:jitcache": 8000.0 + 120 * nargs}.get(v.name, safe_us * relax)
                if v.trace_level != "off":
                    p50 += {"summary": 0.05, "sampled": 0.2, "full": 1.2}[v.trace_level]
                row = {**runner._row(w, v), "correct": "ok" if v.kind != "first" else "n/a", "median_us": p50,
                       "p10_us": p50 * 0.95, "p90_us": p50 * 1.08, "repeats": 9, "launches_per_repeat": 400,
                       "x_floor": p50 / floor_us}
                with run.trial(f"{w}/{v.name}", runner._attrs(w, v)) as trial:
                    if v.kind == "jitcache" and v.trace_level == "off":
                        au, lc = 0.45 * p50 * 1e3, 0.4 * p50 * 1e3
                        for _ in range(20):
                            t0, t1 = _spin(int(p50 * 1e3))
                            rec.record(kernel, "global", v.policy.name, 0, 0, t0, t0 + int(au), t0 + int(au + lc))
                        row.update(arg_update_ns=au, launch_call_ns=lc,
                                   counters={"hit": 4550, "miss": 1, "prepare": 1, "locked_miss": 0, "verify": 0,
                                             "entries": 1, "fallback": 0})
                    trial.set({f"jitlab.{k}": (json.dumps(x) if isinstance(x, (dict, list)) else x)
                               for k, x in row.items() if k not in ("workload", "variant", "kind", "policy")})
                results.append({k: x for k, x in row.items() if k != "policy"})
            run.set({f"jitlab.{w}.c_floor_us": floor_us})
        run.set({"jitlab.results": json.dumps(results)})
    return path


# e2e: kernels launched per layer in eager mode (decode), as jitlab.bench.decode counts them
_EAGER_PER_LAYER = {"rms": 2, "rope": 1, "cache": 1, "attn": 1, "silu": 1}
_HOST_PER_LAYER_MS = {"eager_stock": 0.32, "eager_jitlab_safe": 0.13, "eager_jitlab_tuned": 0.09,
                      "piecewise_stock": 0.12, "piecewise_jitlab": 0.04, "full_graph": 0.0}


def e2e_trace(path: Path) -> Path:
    """A small e2e_decode-shaped trace: batch {1, 16, 64} x context {1024, 8192} x layers {8, 32}
    plus a mixed run, all default modes, step spans, skip rows as the real run writes them."""
    from jitlab import telemetry
    from jitlab.bench.decode import config as decode_config
    from jitlab.bench.decode import results as decode_results

    path = Path(path)
    modes = [decode_config.MODES[m] for m in decode_config.DEFAULT_MODES]
    configs = [decode_config.TrialConfig("decode", b, c, L) for L in (8, 32) for c in (1024, 8192) for b in (1, 16, 64)]
    configs.append(decode_config.TrialConfig("mixed", 32, 1024, 32))
    results = []
    with telemetry.Run("e2e_decode", level="sampled", sample_every=20, trace_file=path, otlp=False,
                       attributes={"jitlab.experiment.label": LABEL,
                                   "jitlab.e2e.modes": json.dumps({m.name: m.description for m in modes})}) as run:
        with run.trial("sanity/eager_stock_vs_torch", {"jitlab.e2e.mode": "sanity"}) as tr:
            tr.set({"jitlab.e2e.sanity_ok": True})
        for c in configs:
            rows = {}
            handles = {}
            for m in modes:
                attrs = {"jitlab.e2e.config": c.name, "jitlab.e2e.kind": c.kind, "jitlab.e2e.batch": c.batch,
                         "jitlab.e2e.context": c.context, "jitlab.e2e.layers": c.layers, "jitlab.e2e.mode": m.name,
                         "jitlab.e2e.mode_kind": m.kind, "jitlab.e2e.kernels": m.kernels,
                         "jitlab.policy": m.kernels, "jitlab.e2e.label": LABEL}
                row = {"config": c.name, "kind": c.kind, "batch": c.batch, "context": c.context, "layers": c.layers,
                       "mode": m.name, "mode_kind": m.kind, "kernels": m.kernels}
                with run.trial(f"{c.name}/{m.name}", attrs) as tr:
                    handles[m.name] = tr
                    if m.decode_only and c.kind != "decode":
                        row["skip"] = "full graph is decode-only (synthetic)"
                        tr.set({"jitlab.skip": row["skip"]})
                    else:
                        row.update(_e2e_row(c, m, tr))
                    tr.set(decode_results._attrs(row))
                rows[m.name] = row
                results.append(row)
            decode_results.derive(list(rows.values()))
            for name, row in rows.items():
                handles[name].set(decode_results._attrs({k: row.get(k) for k in ("speedup_vs_stock", "gap_closed",
                                                                          "x_full_graph")}))
        run.set({"jitlab.results": json.dumps(results, default=str),
                 "jitlab.e2e.summary": json.dumps(decode_results.summarize(results), default=str)})
    return path


def _e2e_row(c, m, tr) -> dict:
    tokens = c.batch if c.kind == "decode" else c.batch + 8
    is_3d = c.kind == "decode" and c.batch <= 16
    per_layer = dict(_EAGER_PER_LAYER, **({"reduce": 1} if is_3d else {}))
    if m.kind == "eager":
        by_kernel = {k: v * c.layers + (1 if k == "rms" else 0) for k, v in per_layer.items()}
        torch_l, copies, graphs, in_graph = 4 * c.layers + 3, 6, 0, 0
    elif m.kind == "piecewise":
        by_kernel = {k: c.layers for k in ("cache", "attn", "reduce") if k in per_layer}
        torch_l, copies, graphs = 0, 6, c.layers + 1
        in_graph = sum(per_layer.values()) * c.layers - sum(by_kernel.values()) + 4 * c.layers + 3
    else:
        by_kernel, torch_l, copies, graphs = {}, 0, 6, 1
        in_graph = (sum(per_layer.values()) + 4) * c.layers + 4
    gpu = 0.4 + c.layers * (0.11 + 2.0e-6 * tokens * c.context)
    host = 0.3 + _HOST_PER_LAYER_MS[m.name] * c.layers
    step = max(host, gpu) + 0.15
    steps = 6
    for i in range(steps):
        with tr.step("step", {"jitlab.e2e.step": i, "jitlab.e2e.phase": "measure"}) as st:
            pass
        jit = 1 + 0.02 * ((i * 7) % 5 - 2)
        st.set({"jitlab.e2e.wall_ms": step * jit, "jitlab.e2e.host_ms": host * jit, "jitlab.e2e.prep_ms": 0.1,
                "jitlab.e2e.tokens": tokens, "jitlab.e2e.num_seqs": c.batch, "jitlab.e2e.is_3d": is_3d,
                "jitlab.e2e.gpu_span_ms": step - 0.1})
    with tr.step("step", {"jitlab.e2e.step": 0, "jitlab.e2e.phase": "gpu_busy"}) as st:
        pass
    st.set({"jitlab.e2e.gpu_busy_ms": gpu})
    triton = sum(by_kernel.values())
    row = {"capture_s": 0.0, "graphs": graphs, "launches_per_step": triton + torch_l + copies + graphs,
           "triton_launches_per_step": triton, "torch_launches_per_step": torch_l, "copies_per_step": copies,
           "graph_replays_per_step": graphs, "device_kernels_per_step": triton + torch_l + in_graph,
           "triton_by_kernel": by_kernel, "check": "reference" if m.name == "eager_stock" else "bitwise",
           "check_ok": True, "bitwise": m.kind == "eager", "steps": steps, "tokens": tokens * steps,
           "wall_s": step * steps / 1e3, "tokens_per_s": tokens / step * 1e3, "step_ms": step, "host_ms": host,
           "prep_ms": 0.1, "gpu_span_ms": step - 0.1, "step_ms_mean": step, "host_ms_p90": host * 1.02,
           "gpu_busy_ms": gpu, "gpu_busy_steps": 1}
    if m.kernels.startswith("jitlab"):
        us = 9.0 if m.kernels == "jitlab_safe" else 6.5
        row.update(per_launch_us=us, arg_update_ns=us * 400, launch_call_ns=us * 500,
                   per_launch_by_kernel={k: {"n": 10, "arg_update_ns": us * 400, "launch_ns": us * 500}
                                         for k in by_kernel},
                   jitlab_launches_per_step=triton, jitlab_counts_agree=True)
    return row


# vllm_kernels: (kernel, stock Triton µs, GPU µs) of the made-up model
_VLLM_KERNELS = (("kernel_unified_attention", 38.0, 20.0), ("reduce_segments", 16.5, 2.5),
                 ("reshape_and_cache_kernel_flash", 21.0, 1.5))
_VLLM_BATCHES = ("decode n=1 3d", "decode n=17 2d", "mixed n=3 2d")


def vllm_kernels_trace(path: Path) -> Path:
    """A small vllm_kernels-shaped trace: the matrix check in the run span, 3 batches x vLLM's kernels
    (reduce_segments only for the 3D batch) x (baselines, 2 policies, C floor, GPU time), and steps."""
    from jitlab import Policy, telemetry
    from jitlab.bench import runner

    path = Path(path)
    policies = ("safe", "tuned")
    matrix = [{"policy": p, "batches": len(_VLLM_BATCHES), "passes": 2, "bitwise_equal": True, "mismatches": [],
               "counters": {"kernel_unified_attention": {"hit": 4, "miss": 2, "verify": 4, "entries": 2}}}
              for p in policies]
    shape = {"num_query_heads": 32, "num_kv_heads": 8, "head_size": 128, "block_size": 16, "dtype": "bfloat16"}
    with telemetry.Run("vllm_kernels", level="sampled", sample_every=10, trace_file=path, otlp=False,
                       attributes={"jitlab.experiment.label": LABEL, "jitlab.vllm.matrix": json.dumps(matrix),
                                   "jitlab.vllm.policies": json.dumps(list(policies)),
                                   "jitlab.vllm.batches": json.dumps(list(_VLLM_BATCHES)),
                                   "jitlab.vllm.shape": json.dumps(shape),
                                   "jitlab.vllm.source": "vllm 0.26.0 (synthetic)"}) as run:
        results = []
        for b in _VLLM_BATCHES:
            for kernel, triton_us, gpu_us in _VLLM_KERNELS:
                if kernel == "reduce_segments" and not b.endswith("3d"):
                    continue
                w = f"{kernel} {b}"
                variants = [runner.Variant("triton", "baseline"), runner.Variant("compiled_run", "baseline")]
                variants += [runner.Variant(f"jitcache:{p}", "jitcache", policy=Policy(name=p)) for p in policies]
                variants += [runner.Variant("c_floor", "floor"), runner.Variant("gpu_time", "graph")]
                for v in variants:
                    p50 = {"triton": triton_us, "compiled_run": 7.0, "jitcache:safe": 6.8, "jitcache:tuned": 6.3,
                           "c_floor": 3.0, "gpu_time": gpu_us}[v.name]
                    row = {**runner._row(w, v), "correct": "ok", "median_us": p50, "p10_us": p50 * 0.95,
                           "p90_us": p50 * 1.08, "repeats": 5, "launches_per_repeat": 200}
                    with run.trial(f"{w}/{v.name}", runner._attrs(w, v)) as trial:
                        trial.set({f"jitlab.{k}": x for k, x in row.items()
                                   if k not in ("workload", "variant", "kind", "policy")})
                    results.append({k: x for k, x in row.items() if k != "policy"})
            for name, p50 in (("stock", 93.0), ("jitcache:safe", 41.0), ("jitcache:tuned", 40.0)):
                v = runner.Variant(name, "baseline" if name == "stock" else "jitcache",
                                   policy=None if name == "stock" else Policy(name=name.split(":")[1]))
                with run.trial(f"step {b}/{name}", runner._attrs(f"step {b}", v)) as trial:
                    trial.set({"jitlab.median_us": p50, "jitlab.p10_us": p50 * 0.97, "jitlab.p90_us": p50 * 1.05,
                               "jitlab.correct": "ok"})
        run.set({"jitlab.results": json.dumps(results)})
    return path
