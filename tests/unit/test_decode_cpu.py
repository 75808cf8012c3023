"""The end-to-end decode loop (jitlab.bench.decode) on CPU: the tiny fp32 model with its Triton kernels
under the interpreter against a pure-torch reference of the same model (decode step in 3D attention,
a prefill+decode cycle in 2D), block-table / slot-mapping bookkeeping, persistent buffers updated in
place, launch counting, the tuned policies, the result maths, and the experiment script's CPU
demonstration end to end (subprocess) with its trace file.

Kernel modules are imported at the top on purpose (see tests/unit/test_kernels_basic.py): a kernel
module first imported while TRITON_INTERPRET=1 is set would hold interpreter kernels for the session.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jitlab.bench.decode import config as cfg
from jitlab.bench.decode import engine as eng
from jitlab.bench.decode import model as mdl
from jitlab.bench.decode import ops as dops
from jitlab.bench.decode import results as res
from jitlab.bench.decode import runner as drun
from jitlab.kernels import cache_write, layers, unified_attention  # noqa: F401 - see the module docstring
from jitlab._triton.interpreter import interpreted

from .conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]


def stock_cpu() -> dops.KernelSet:
    return dops.KernelSet("stock", **{k: interpreted(v) for k, v in dops.RAW_KERNELS.items()})


def make_engine(num_layers: int = 2, max_tokens: int = 32, max_seqs: int = 8, max_len: int = 160) -> eng.Engine:
    model = mdl.Model(cfg.TINY, "cpu", num_layers=num_layers, max_position=max_len + 1)
    return eng.Engine(model, max_tokens, max_seqs, max_len)


def run_step(e: eng.Engine, ops: dops.Ops, sched, i: int = 0) -> tuple[eng.Views, torch.Tensor, torch.Tensor]:
    """Stage step i, run it eagerly, and return (views, logits, reference logits)."""
    plan = sched.plan(i)
    v = e.stage(ops, plan)
    kv_copy = [kv.clone() for kv in e.kv_layers]  # context as it was before this step's cache write
    e.forward_eager(ops, v, e.max_k)
    e.tail(ops, v)
    e.sync()
    got = v.logits.clone()
    ref = eng.reference_logits(e, kv_copy, v)
    sched.commit(plan, e.n_next)
    return v, got, ref


def assert_close_logits(got: torch.Tensor, ref: torch.Tensor) -> None:
    assert torch.isfinite(got).all()
    scale = float(ref.abs().max())
    assert scale > 0.1, "degenerate logits: the check would be vacuous"
    torch.testing.assert_close(got.float(), ref, atol=2e-4 * scale, rtol=1e-4)


# ------------------------------------------------------------------------------------------ numerics


def test_decode_step_matches_torch_reference():
    e = make_engine(num_layers=2)
    e.prepare_config(2, 32, seed=0)
    sched = mdl.DecodeSchedule(e.seqs, batch=2, context=20, vocab=cfg.TINY.vocab)
    ops = dops.Ops(stock_cpu())
    v, got, ref = run_step(e, ops, sched)
    assert v.is_3d and v.n == 2 and v.T == 2  # decode-only, 2 <= 128 // 2 seqs: 3D + reduce_segments
    assert_close_logits(got, ref)
    # the sampled token (greedy) is the argmax of the logits, and it was read back to the host
    assert e.n_next[:2].tolist() == got.argmax(-1).tolist()
    assert sched.seqs.next_tok[:2].tolist() == got.argmax(-1).tolist()
    assert sched.seqs.seq_len[:2].tolist() == [21, 21]


def test_mixed_cycle_matches_torch_reference():
    """One cycle of the tiny mixed pattern: 3D decode, prefill chunk + decodes (2D), a chunk alone
    (2D, max_seqlen_q > 1), 3D decode of 3 seqs; the request's prompt completes and is released."""
    e = make_engine(num_layers=1)
    e.prepare_config(1, 40, seed=0)
    sched = mdl.MixedSchedule(e.seqs, cfg.TINY_MIXED_PATTERN, cfg.TINY_MIXED_DECODE_SEQS, 20,
                                 cfg.TINY_MIXED_CHUNK, cfg.TINY.vocab)
    ops = dops.Ops(stock_cpu())
    free0 = e.seqs.alloc.num_free
    seen = []
    for i in range(sched.cycle):
        v, got, ref = run_step(e, ops, sched, i)
        seen.append((v.n, v.T, v.is_3d))
        assert_close_logits(got, ref)
    chunk = cfg.TINY_MIXED_CHUNK
    assert seen == [(1, 1, True), (3, 2 + chunk, False), (1, chunk, False), (3, 3, True)]
    # the first request (2 chunks) finished and a new one took its slot, with no blocks yet
    assert sched.requests == 2 and e.seqs.seq_len[sched.prefill_slot] == 0 and e.seqs.nblk[sched.prefill_slot] == 0
    sched.reset()
    assert e.seqs.alloc.num_free == free0


# ---------------------------------------------------------------------------------------- bookkeeping


def test_block_table_and_slot_mapping():
    e = make_engine(num_layers=1)
    e.prepare_config(1, 16, seed=3)
    bs = cfg.TINY.block_size
    sched = mdl.DecodeSchedule(e.seqs, batch=3, context=bs, vocab=cfg.TINY.vocab)  # blocks exactly full
    alloc = e.seqs.alloc
    assert e.seqs.nblk[:3].tolist() == [1, 1, 1] and alloc.num_free == 16 - 3
    ops = dops.Ops(stock_cpu())
    plan = sched.plan(0)
    e.stage(ops, plan)
    # position 16 needs a second block per sequence
    assert e.seqs.nblk[:3].tolist() == [2, 2, 2] and alloc.num_free == 16 - 6
    blocks = e.seqs.blocks
    assert e.d_pos[:3].tolist() == [bs] * 3
    assert e.d_slot[:3].tolist() == [int(blocks[s, 1]) * bs for s in range(3)]
    assert e.d_seq_lens[:3].tolist() == [bs + 1] * 3
    assert e.d_qsl[:4].tolist() == [0, 1, 2, 3]
    assert e.d_lidx[:3].tolist() == [0, 1, 2]
    assert torch.equal(e.d_bt[:3], torch.from_numpy(blocks[:3].copy()))
    used = {int(b) for s in range(3) for b in blocks[s, :2]}
    assert len(used) == 6  # distinct blocks
    sched.commit(plan, np.array([5, 6, 7]))
    assert e.seqs.seq_len[:3].tolist() == [bs + 1] * 3 and e.seqs.next_tok[:3].tolist() == [5, 6, 7]
    sched.reset()  # back to the context: the appended blocks return to the pool
    assert e.seqs.nblk[:3].tolist() == [1, 1, 1] and alloc.num_free == 16 - 3
    assert e.seqs.next_tok[:3].tolist() == sched.tokens0.tolist()
    with pytest.raises(MemoryError):
        alloc.allocate(alloc.num_free + 1)


def test_mixed_staging_prefill_tokens_and_slots():
    e = make_engine(num_layers=1)
    e.prepare_config(1, 40, seed=1)
    sched = mdl.MixedSchedule(e.seqs, (("mixed", 2),), 3, 20, 8, cfg.TINY.vocab)  # prefill slot 3
    plan = sched.plan(0)
    assert plan.prefill == (2,) and plan.T == 10 and plan.n == 3 and not plan.decode_only and not plan.identity
    e.stage(dops.Ops(stock_cpu()), plan)
    ctx = sched.contexts
    pslot = sched.prefill_slot
    assert e.d_qsl[:4].tolist() == [0, 1, 2, 10]
    assert e.d_lidx[:3].tolist() == [0, 1, 9]
    assert e.d_seq_lens[:3].tolist() == [int(ctx[0]) + 1, int(ctx[1]) + 1, 8]
    assert e.d_pos[:10].tolist() == [int(ctx[0]), int(ctx[1])] + list(range(8))
    assert e.d_ids[2:10].tolist() == e.seqs.prompt[pslot][:8].tolist()
    bs, blocks = cfg.TINY.block_size, e.seqs.blocks
    want = [int(blocks[0, ctx[0] // bs]) * bs + int(ctx[0] % bs), int(blocks[1, ctx[1] // bs]) * bs + int(ctx[1] % bs)]
    want += [int(blocks[pslot, 0]) * bs + j for j in range(8)]
    assert e.d_slot[:10].tolist() == want
    # the batch's block-table rows are gathered (slots 0, 1, 3), not copied by slot
    assert pslot == 3 and e.d_bt[2].tolist() == blocks[pslot].tolist() != blocks[2].tolist()


def test_persistent_buffers_updated_in_place():
    """Step inputs live in buffers allocated once: every step writes into them, so addresses never
    change (what CUDA graphs and jitlab's frozen pointers rely on); views are cached per shape."""
    e = make_engine(num_layers=1)
    e.prepare_config(1, 40, seed=0)
    names = ("d_ids", "d_pos", "d_slot", "d_seq_lens", "d_qsl", "d_bt", "d_lidx", "w_res", "w_x", "w_qkv",
             "w_attn", "w_logits", "w_next", "h_next")
    ptrs = {n: getattr(e, n).data_ptr() for n in names}
    segm = [t.data_ptr() for t in e.segm]
    sched = mdl.MixedSchedule(e.seqs, (("decode", 1), ("mixed", 1)), 1, 20, 4, cfg.TINY.vocab)
    ops = dops.Ops(stock_cpu())
    views = []
    for i in range(4):
        plan = sched.plan(i)
        v = e.stage(ops, plan)
        e.forward_eager(ops, v, e.max_k)
        e.tail(ops, v)
        sched.commit(plan, e.n_next)
        views.append(v)
    assert {n: getattr(e, n).data_ptr() for n in names} == ptrs
    assert [t.data_ptr() for t in e.segm] == segm
    assert views[0] is views[2] and views[1] is views[3] and views[0] is not views[1]
    assert views[1].q.data_ptr() == e.w_qkv.data_ptr() and views[1].slot.data_ptr() == e.d_slot.data_ptr()
    # the last step (seq 0 at its 4th token, the second request's single chunk), written in place
    assert e.d_seq_lens[:2].tolist() == [int(sched.contexts[0]) + 4, 4] and sched.requests == 3


# ------------------------------------------------------------------------------------ modes, policies


def test_launch_counts():
    e = make_engine(num_layers=2)
    e.prepare_config(2, 32, seed=0)
    sched = mdl.DecodeSchedule(e.seqs, batch=1, context=20, vocab=cfg.TINY.vocab)
    ops = dops.CountingOps(stock_cpu())
    v = e.stage(ops, sched.plan(0))
    e.forward_eager(ops, v, e.max_k)
    e.tail(ops, v)
    c = ops.counts
    # per layer: 2 rms + rope + cache write + attention + reduce (3D) + silu; then the final rms
    assert c["triton"] == 2 * 7 + 1
    assert c["triton.attn"] == 2 and c["triton.reduce"] == 2 and c["triton.rms"] == 5
    # per layer 4 GEMMs; embedding, logits gather, LM head, argmax
    assert c["torch"] == 2 * 4 + 4
    assert c["copy"] == 7 + 1 and c["graph"] == 0


def test_tuned_policies_hold_only_what_this_loop_keeps():
    pols = dops.tuned_policies()
    assert set(pols) == set(dops.RAW_KERNELS)
    for key, p in pols.items():
        assert not p.cache_launch_grid, key  # every grid depends on the token count / num_seqs
        assert not set(p.assume_const) & set(dops.PER_LAYER_ARGS), key
        assert p.check_specialization is not None and p.check_keys is not None
    assert pols["attn"].check_keys == ("IS_3D", "NUM_SEGMENTS_PER_SEQ", "TILE_SIZE")
    assert pols["attn"].check_specialization == ("num_seqs",)
    assert pols["reduce"].check_specialization == ("num_seqs",)
    assert pols["rms"].check_keys == ("HAS_RESIDUAL",)
    assert {"block_tables_ptr", "seq_lens_ptr", "stride_k_cache_0", "scale"} <= set(pols["attn"].assume_const)
    assert "cos_sin_ptr" in pols["rope"].assume_const and "slot_mapping_ptr" in pols["cache"].assume_const
    assert dops.tuned_policies(verify=1)["attn"].verify == 1
    # the view strides of q/k/v change between steps of the mixed run: never frozen
    assert not {"query_stride_0", "query_stride_1"} & set(pols["attn"].assume_const)
    assert not {"key_stride", "value_stride"} & set(pols["cache"].assume_const)
    assert not {"q_token_stride", "k_token_stride"} & set(pols["rope"].assume_const)


def _toml(tmp_path, text: str) -> Path:
    path = tmp_path / "policies.toml"
    path.write_text(text)
    return path


def test_tuned_policy_file_is_checked(tmp_path):
    others = "".join(f"[policy.{k}]\n" for k in dops.RAW_KERNELS if k not in ("attn", "silu"))
    with pytest.raises(ValueError, match="expected one \\[policy.<kernel>\\] table for each of"):
        dops.tuned_policies(path=_toml(tmp_path, others + "[policy.attn]\n"))
    with pytest.raises(ValueError, match="policy.attn freezes \\['k_scale', 'v_scale'\\], which change from layer"):
        dops.tuned_policies(path=_toml(tmp_path, others + '[policy.silu]\n[policy.attn]\nassume_const = "@scales"\n'))


def test_policy_name_lists_add_and_remove_left_to_right():
    from jitlab.policy import policy_of as policy_for, sweep_tables as load_sweep

    case = dops._policy_cases()["cache"]
    pol = policy_for({"name": "p", "assume_const": "@strides - key_stride - value_stride + slot_mapping_ptr"}, case)
    assert pol.assume_const == ("block_stride", "head_stride", "dim_stride_k", "dim_stride_v", "page_stride",
                                "slot_mapping_ptr")
    assert policy_for({"name": "p", "assume_const": ["k_scale"]}, case).assume_const == ("k_scale",)
    for bad, msg in (("@strides - k_scale", "'-k_scale' removes nothing"), ("@nope", "is not one of"),
                     ("@strides + 1x", "neither an argument name nor an @group")):
        with pytest.raises(ValueError, match=msg):
            policy_for({"name": "p", "assume_const": bad}, case)
    # the launch sweep's file resolves for every registered workload and decorates its kernel
    from jitlab import jitcache, kernels

    for name in kernels.WORKLOADS:
        c = kernels.make_case(name, cuda=False)
        for table in load_sweep(ROOT / "experiments" / "launch_overhead.toml"):
            jitcache(policy=policy_for(table, c))(c.kernel)


def test_jitlab_modes_bitwise_on_cpu_passthrough():
    """Kernel sets of every eager mode give identical logits (jitlab passes through here)."""
    e = make_engine(num_layers=1)
    e.prepare_config(1, 32, seed=0)
    sched = mdl.DecodeSchedule(e.seqs, batch=1, context=20, vocab=cfg.TINY.vocab)
    sets = dops.make_kernel_sets(cuda=False, scope="test-decode")
    out = {}
    for name in ("stock", "jitlab_safe", "jitlab_tuned"):
        sched.reset()
        ops = dops.Ops(sets[name])
        v = e.stage(ops, sched.plan(0))
        e.forward_eager(ops, v, e.max_k)
        e.tail(ops, v)
        out[name] = v.logits.clone()
    assert torch.equal(out["stock"], out["jitlab_safe"]) and torch.equal(out["stock"], out["jitlab_tuned"])
    assert sets["jitlab_safe"].counters().get("fallback.passthrough", 0) == 1 * 7 + 1


def test_compare_and_derive():
    a = [torch.tensor([[1.0, 2.0]])]
    assert drun._compare(a, [a[0].clone()], [np.array([1])], [np.array([1])], exact=True)["check"] == "bitwise"
    near = drun._compare(a, [a[0] + 1e-3], [np.array([1])], [np.array([1])], exact=False)
    assert near["check_ok"] and near["check"].startswith("close")
    assert not drun._compare(a, [a[0] + 1e-3], [np.array([1])], [np.array([1])], exact=True)["check_ok"]
    rows = [{"mode": "eager_stock", "tokens_per_s": 100.0}, {"mode": "eager_jitlab_tuned", "tokens_per_s": 180.0},
            {"mode": "full_graph", "tokens_per_s": 200.0}, {"mode": "piecewise_jitlab", "tokens_per_s": 195.0}]
    res.derive(rows)
    assert rows[1]["gap_closed"] == pytest.approx(0.8) and rows[1]["speedup_vs_stock"] == pytest.approx(1.8)
    assert rows[3]["x_full_graph"] == pytest.approx(0.975)
    assert "gap_closed" not in rows[0] and "gap_closed" not in rows[2]


def test_sweep_plans():
    q = cfg.gpu_sweep(quick=True)
    names = [c.name for c in q.configs()]
    assert names == ["B=1 ctx=1024 L=8", "B=1 ctx=1024 L=32", "B=16 ctx=1024 L=32"]
    full = cfg.gpu_sweep()
    cs = full.configs()
    assert len(cs) == 4 * 3 * 2 + 1 and cs[-1].kind == "mixed"
    assert res.estimate(full)["total_s"] < 8 * 60 and res.estimate(q)["total_s"] < 60
    # the engine's buffers cover the largest config and the mixed run's padded steps
    max_t, max_s, max_len = drun.Runner(full).sizes(cs)
    assert max_t >= cfg.pad_to_capture_size(64 + 15) and max_s >= 64 and max_len >= 8192 + full.steps
    assert cfg.pad_to_capture_size(79) == 80 and cfg.pad_to_capture_size(1) == 1


# ------------------------------------------------------------------------------------- the script


def test_cpu_demo_script_end_to_end(tmp_path):
    trace = tmp_path / "e2e.jsonl"
    env = subprocess_env()
    env.pop("TRITON_INTERPRET", None)
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    p = subprocess.run([sys.executable, "-m", "experiments.e2e_decode", "--quick", "--cpu", "--trace-file", str(trace)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "CPU DEMO" in p.stdout and "eager_jitlab_tuned" in p.stdout
    assert trace.exists()

    from jitlab.telemetry import load_traces

    df = load_traces(str(trace))
    trials = df[df["jitlab.span.kind"] == "trial"].set_index("jitlab.e2e.mode")
    assert set(cfg.DEFAULT_MODES) <= set(trials.index)
    for m in ("eager_jitlab_safe", "eager_jitlab_tuned"):
        assert trials.loc[m, "jitlab.e2e.check"] == "bitwise"
        assert bool(trials.loc[m, "jitlab.e2e.jitlab_counts_agree"])
    assert trials.loc["eager_stock", "jitlab.e2e.tokens_per_s"] > 0
    for m in ("piecewise_stock", "piecewise_jitlab", "full_graph"):
        assert "CUDA" in trials.loc[m, "jitlab.skip"]
    steps = df[df["jitlab.span.kind"] == "step"]
    assert len(steps) >= 3 * 2 and steps["jitlab.e2e.host_ms"].notna().all()
    run = df[df["jitlab.span.kind"] == "run"].iloc[0]
    assert run["jitlab.experiment"] == "e2e_decode" and "CPU DEMO" in run["jitlab.experiment.label"]
    assert "jitlab.results" in df.columns


# ------------------------------------------------------------------ --attention vllm (vLLM's own kernels)

_VLLM_SCRIPT = r"""
import json, sys, torch
from experiments.e2e_decode import main
vllm_dir, trace = sys.argv[1], sys.argv[2]
main(["--quick", "--cpu", "--attention", "vllm", "--vllm-dir", vllm_dir, "--trace-file", trace,
      "--modes", "eager_stock,eager_jitlab_safe,eager_jitlab_tuned"])
# the same steps (decode: 3D attention; prefill chunk + decodes: 2D) with jitlab's kernels and with vLLM's,
# on the same model and KV-cache contents
from jitlab.bench.decode import config as cfg, engine as eng, model as mdl, ops as dops, vllm_attention as va
vllm = va.load("vllm", vllm_dir, cuda=False)
model = mdl.Model(cfg.TINY, "cpu", num_layers=2, max_position=161)
logits = {}
with vllm.environment():
    for att in ("jitlab", "vllm"):
        e = eng.Engine(model, 32, 8, 160, kv_layout=att)
        ops = dops.Ops(dops.make_kernel_sets(False, "t", vllm=vllm if att == "vllm" else None)["stock"])
        for name, make in (("decode", lambda: mdl.DecodeSchedule(e.seqs, 2, 20, cfg.TINY.vocab)),
                           ("mixed", lambda: mdl.MixedSchedule(e.seqs, (("mixed", 2),), 2, 20, 5, cfg.TINY.vocab))):
            e.prepare_config(2, 40, seed=0)
            sched = make()
            v = e.stage(ops, sched.plan(0))
            e.forward_eager(ops, v, e.max_k)
            e.tail(ops, v)
            logits[(att, name)] = (v.is_3d, v.logits.clone())
out = {}
for name in ("decode", "mixed"):
    (d3, a), (v3, b) = logits[("jitlab", name)], logits[("vllm", name)]
    out[name] = {"is_3d": [d3, v3], "bitwise": bool(torch.equal(a, b)),
                 "max_abs_diff": float((a - b).abs().max()), "scale": float(a.abs().max())}
print("RESULT " + json.dumps(out))
"""


def test_cpu_demo_with_vllm_attention(vllm_dir, tmp_path):
    """--attention vllm: every mode launches vLLM 0.26's real kernels through vLLM's own wrappers (counted
    by their vLLM names where the wrappers look them up; the jitlab modes' launches went through the
    plugin's wrappers), the jitlab modes are bitwise equal to stock vLLM, the run says which attention
    it used, and vLLM's kernels give the logits jitlab's kernels give on the same model and KV cache."""
    import json

    trace = tmp_path / "e2e-vllm.jsonl"
    env = subprocess_env(CUDA_VISIBLE_DEVICES="")
    for k in ("TRITON_INTERPRET", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.pop(k, None)
    p = subprocess.run([sys.executable, "-c", _VLLM_SCRIPT, str(vllm_dir), str(trace)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "attention: vLLM's kernels" in " ".join(p.stdout.split())

    from jitlab.telemetry import load_traces

    df = load_traces(str(trace))
    run = df[df["jitlab.span.kind"] == "run"].iloc[0]
    assert run["jitlab.e2e.attention"] == "vllm" and "vllm 0.26.0" in run["jitlab.e2e.attention_source"]
    assert bool(run["jitlab.e2e.sanity_ok"])  # stock vLLM attention in the loop vs the pure-torch model
    trials = df[df["jitlab.span.kind"] == "trial"].set_index("jitlab.e2e.mode")
    vllm_names = {"reshape_and_cache_kernel_flash", "kernel_unified_attention", "reduce_segments"}
    for m in ("eager_stock", "eager_jitlab_safe", "eager_jitlab_tuned"):
        t = trials.loc[m]
        assert t["jitlab.e2e.attention"] == "vllm"
        by_kernel = json.loads(t["jitlab.e2e.triton_by_kernel"])
        # B=2 decode, 1 layer: vLLM's cache write, 3D attention and its reduce, once per step each
        assert {k: by_kernel.get(k) for k in vllm_names} == dict.fromkeys(vllm_names, 1.0), by_kernel
        assert not {"cache", "attn", "reduce"} & set(by_kernel)  # jitlab's own attention kernels never ran
    for m in ("eager_jitlab_safe", "eager_jitlab_tuned"):
        t = trials.loc[m]
        assert t["jitlab.e2e.check"] == "bitwise", t["jitlab.e2e.check"]
        assert bool(t["jitlab.e2e.jitlab_counts_agree"])
        through_plugin = json.loads(t["jitlab.e2e.vllm_check_counters"])
        assert {n: c["fallback.passthrough"] for n, c in through_plugin.items()} == dict.fromkeys(vllm_names, 1)
    assert "vllm:tuned" in trials.loc["eager_jitlab_tuned", "jitlab.policy"]
    assert "kernel_unified_attention" in json.loads(trials.loc["eager_jitlab_tuned", "jitlab.policy.json"])

    result = json.loads(p.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert result["decode"]["is_3d"] == [True, True] and result["mixed"]["is_3d"] == [False, False]
    for name, r in result.items():
        assert r["scale"] > 0.1 and r["max_abs_diff"] <= 1e-4 * r["scale"], (name, r)


def test_attention_vllm_without_vllm_files_is_one_line(tmp_path):
    import importlib.util

    spec = importlib.util.find_spec("vllm")  # (the vllm_dir fixture may have put .vllm/ on this process's path)
    if spec is not None and not Path(spec.origin).resolve().is_relative_to(ROOT / ".vllm"):
        pytest.skip("vLLM is installed here: --vllm-dir is not needed")
    env = subprocess_env()
    p = subprocess.run([sys.executable, "-m", "experiments.e2e_decode", "--quick", "--cpu", "--attention", "vllm",
                        "--vllm-dir", str(tmp_path / "none")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "--vllm-dir" in err[0] and "experiments/vllm_carry.sh" in err[0], p.stderr[-2000:]


# ------------------------------------------------------------------ graph modes, emulated on the CPU


class _EagerGraph:
    """Stands in for torch.cuda.CUDAGraph: replay() re-runs what was captured on the same views (a real
    graph replays the same kernels on the same buffers), through the stock kernels: a replay never goes
    through a Python launcher, so jitlab must not see it."""

    def __init__(self, fn):
        self.fn = fn

    def replay(self):
        self.fn(dops.Ops(stock_cpu()))


@pytest.fixture
def emulated_graphs(monkeypatch):
    """Graph modes' orchestration (pieces per padded size, eager attention between replays, full-graph
    setup, checks and launch counts) on the CPU: capture runs the function once through counting ops,
    replay re-runs it."""

    def capture(self, ks, fn):
        ops = dops.CountingOps(ks)
        fn(ops)
        g = _EagerGraph(fn)
        self.graph_kernels[id(g)] = ops.kernels()
        return g

    monkeypatch.setattr(eng.Engine, "_capture", capture)
    monkeypatch.setattr(eng.Engine, "_warm", lambda self, fn, times=2: fn())
    monkeypatch.setattr(cfg.Mode, "needs_cuda", property(lambda self: False))


def test_graph_modes_emulated(emulated_graphs, tmp_path):
    modes = ("eager_stock", "piecewise_stock", "piecewise_jitlab", "full_graph")
    sweep = cfg.cpu_sweep(quick=True, extra=(cfg.TrialConfig("decode", 1, 20, 1),), mixed=True,
                             mixed_warmup_cycles=0, modes=modes, trace="sampled", sample_every=1,
                             trace_file=str(tmp_path / "t.jsonl"))
    runner = drun.Runner(sweep)
    rows = runner.run_all()
    by = {(r["kind"], r["mode"]): r for r in rows}
    for r in rows:
        assert not r.get("error"), r
    nl = 1
    for kind in ("decode", "mixed"):
        for m in modes:
            r = by[(kind, m)]
            if kind == "mixed" and m == "full_graph":
                assert "decode-only" in r["skip"]
                continue
            assert r["check_ok"], (kind, m, r["check"])
            assert r["device_kernels_match"], (kind, m)
            assert r["tokens_per_s"] > 0
    pw, full, eager = by[("decode", "piecewise_stock")], by[("decode", "full_graph")], by[("decode", "eager_stock")]
    assert pw["check"] == "bitwise" and full["check"] == "bitwise"
    assert pw["graph_replays_per_step"] == nl + 1 and full["graph_replays_per_step"] == 1
    assert pw["triton_launches_per_step"] == 3 * nl  # cache write + attention + reduce (3D), eager
    assert full["triton_launches_per_step"] == 0 and eager["triton_launches_per_step"] == 7 * nl + 1
    assert full["launches_per_step"] == 1 + 3 + 8  # replay + gather/LM head/argmax + copies
    assert by[("decode", "piecewise_jitlab")]["jitlab_counts_agree"]
    # the mixed run: every step shape padded to a capture size, one set of pieces per padded size
    mixed_pw = by[("mixed", "piecewise_stock")]
    assert mixed_pw["graphs"] == (nl + 1) * len({cfg.pad_to_capture_size(t) for t in (1, 2 + 8, 8, 3)})
    assert by[("mixed", "piecewise_jitlab")]["jitlab_counts_agree"]
    # padding changes the GEMMs' row count, so mixed piecewise logits may differ in the last bits
    assert by[("mixed", "piecewise_stock")]["check"] in ("bitwise",) or by[("mixed", "piecewise_stock")]["check"].startswith("close")
