"""kernel_unified_attention / reduce_segments: signature shape, Case fields, sm_90 compile, and
numerics under Triton's CPU interpreter against the fp32 torch reference.

The numeric checks run in a subprocess started with TRITON_INTERPRET=1, because the kernels call
Triton's own @jit library functions (tl.max, tl.sum, tl.cdiv): those are decorated when triton is
imported, so re-wrapping only the kernel in-process leaves them as compiled JITFunctions that
refuse to run. The subprocess also works around numpy>=2.4 rejecting `int()` of the interpreter's
1-element scalars (which breaks `range(tensor, tensor)` loops in Triton 3.6's interpreter), and uses
fp32/fp16 because the 3.6 interpreter's bf16 `tl.dot` returns garbage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# In-process checks (no launch)


def _jit(kernel):
    """A JITFunction view of `kernel` even when this process runs with TRITON_INTERPRET=1."""
    if hasattr(kernel, "params"):
        return kernel
    from triton.runtime.jit import JITFunction

    return JITFunction(kernel.fn)


def test_param_counts_match_vllm_0_26():
    from jitlab.kernels import unified_attention as ua

    attn, red = _jit(ua.kernel_unified_attention), _jit(ua.reduce_segments)
    n_rt = sum(not p.is_constexpr for p in attn.params)
    n_ce = sum(p.is_constexpr for p in attn.params)
    assert (len(attn.params), n_rt, n_ce) == (77, 43, 34)
    assert n_rt >= 40 and n_ce >= 30
    assert (len(red.params), sum(not p.is_constexpr for p in red.params)) == (20, 11)
    ann = {p.name: str(p.annotation) for p in attn.params}
    assert "int32" in ann["num_seqs"]
    assert sum("int64" in a for a in ann.values()) == 12  # the strides that are never None
    assert ann["stride_ks_blk"] in ("", "None", "inspect._empty") or "int" not in ann["stride_ks_blk"]


def test_grid_and_mode_choice():
    from jitlab.kernels import unified_attention as ua

    assert ua.block_mq(4) == (16, 4)
    assert ua.block_mq(32) == (32, 1)
    assert ua.tile_sizes(2) == (32, 16) and ua.tile_sizes(4) == (32, 32)
    segm = ua.make_segm_buffers(8, 4, 32, "cpu")
    assert segm[0].shape == (8, 4, 16, 32) and segm[1].shape == (8, 4, 16)
    assert ua.use_3d(1, 16, 8, segm)
    assert not ua.use_3d(1, 17, 8, segm)  # 128 // num_kv_heads
    assert not ua.use_3d(2, 4, 8, segm)  # a prefill in the batch
    assert not ua.use_3d(1, 4, 8, None)
    assert not ua.use_3d(1, 4, 8, segm, force_2d=True)


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_case_fields(mode):
    from jitlab.kernels import unified_attention as ua

    c = ua.make_case("cpu", dtype=torch.float32, num_seqs=3, context=[37, 40, 5], mode=mode,
                     num_query_heads=4, num_kv_heads=2, head_size=32,
                     prefill_tokens=20 if mode == "2d" else 0)
    params = {p.name: p for p in _jit(c.kernel).params}
    runtime = {n for n, p in params.items() if not p.is_constexpr}
    assert c.args == () and set(c.kwargs) - {"num_warps"} <= set(params)
    assert {n for n, p in params.items() if p.default is p.empty} <= set(c.kwargs)
    for names in (c.strides, c.scales, c.fixed_per_model, c.varying_ints):
        assert set(names) <= runtime
    assert set(c.varying_constexprs) <= set(params) - runtime
    assert len(c.strides) == 18 and c.varying_ints == ("num_seqs",)
    assert {"IS_3D", "NUM_SEGMENTS_PER_SEQ", "TILE_SIZE"} == set(c.varying_constexprs)
    live = sum(c.kwargs[n] is not None for n in runtime)
    num_tokens = 22 if mode == "2d" else 3
    if mode == "2d":
        assert live == 26 and c.grid == (num_tokens // 8 + 3, 2)
        assert c.kwargs["IS_3D"] is False and c.kwargs["TILE_SIZE"] == 32 and "reduce" not in c.extra
    else:
        assert live == 29 and c.grid == (num_tokens // 8 + 3, 2, 16)
        r = c.extra["reduce"]
        assert r.grid == (3, 4) and r.args == () and set(r.kwargs) <= {p.name for p in _jit(r.kernel).params}
        assert c.kwargs["softmax_segm_output_ptr"] is c.extra["segm_buffers"][0]


def test_compiles_for_sm90():
    """Compile-only (no GPU needed): catches what the interpreter accepts but the compiler rejects."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from jitlab.kernels import unified_attention as ua

    types = {torch.bfloat16: "bf16", torch.float32: "fp32", torch.int32: "i32"}

    def compile_(kernel, kwargs):
        kernel = _jit(kernel)
        sig, consts = {}, {}
        for p in kernel.params:
            v = kwargs.get(p.name, p.default)
            if p.is_constexpr or v is None:
                sig[p.name], consts[p.name] = "constexpr", v
            elif isinstance(v, torch.Tensor):
                sig[p.name] = "*" + types[v.dtype]
            elif isinstance(v, float):
                sig[p.name] = "fp32"
            else:
                sig[p.name] = "i64" if "int64" in str(p.annotation) else "i32"
        src = ASTSource(kernel, sig, consts)
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})

    c2 = ua.make_case("cpu", num_seqs=4, context=64, prefill_tokens=16)
    c3 = ua.make_case("cpu", num_seqs=4, context=64, mode="3d")
    for c in (c2, c3, c3.extra["reduce"]):
        assert compile_(c.kernel, c.kwargs).asm["cubin"]
    b = c2.extra["batch"]
    (_, kw), _ = ua.attention_launch(b["q"], b["kv_cache"], torch.empty_like(b["q"]),
                                     b["query_start_len"], b["seq_lens"], b["block_tables"], 0.1,
                                     softcap=30.0, sliding_window=20, sinks=torch.zeros(32),
                                     alibi_slopes=torch.zeros(32))
    compile_(ua.kernel_unified_attention, kw)


# --------------------------------------------------------------------------------------------
# Interpreter numerics (run in a subprocess, see the module docstring)

SHAPE = dict(num_query_heads=4, num_kv_heads=2, head_size=32, block_size=16)


def _numpy24_shim():
    import triton.runtime.interpreter as interp

    orig = interp._patch_lang_tensor

    def patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interp._patch_lang_tensor = patched


def _scenario_2d():
    from jitlab.kernels import unified_attention as ua

    for dtype in (torch.float32, torch.float16):
        # one prefill chunk (20 new tokens of 37) + decodes, incl. a 1-token and a block-aligned context
        for ctx in ([37, 40, 5], [20, 32, 1]):
            c = ua.make_case("cpu", dtype=dtype, num_seqs=3, context=ctx, prefill_tokens=20, **SHAPE)
            c.poison()
            c.launch()
            c.check()


def _scenario_3d():
    from jitlab.kernels import unified_attention as ua

    for dtype in (torch.float32, torch.float16):
        # 300 -> several tiles per segment; 5 -> a single active segment
        c = ua.make_case("cpu", dtype=dtype, num_seqs=3, context=[40, 300, 5], mode="3d", **SHAPE)
        c.poison()
        for t in c.extra["segm_buffers"]:
            t.fill_(float("nan"))  # inactive segments must never be read
        c.launch()
        c.extra["reduce"].launch()
        c.check()


def _scenario_features():
    from jitlab.kernels import unified_attention as ua

    class Counting:
        def __init__(self, k, log):
            self.k, self.log = k, log

        def __getitem__(self, grid):
            self.log.append(grid)
            return self.k[grid]

    hq = SHAPE["num_query_heads"]
    g = torch.Generator().manual_seed(1)
    sinks = torch.randn(hq, generator=g)
    alibi = torch.rand(hq, generator=g) * 0.2
    variants = [dict(), dict(softcap=2.0), dict(sliding_window=10), dict(sinks=sinks),
                dict(alibi_slopes=alibi), dict(causal=False),
                dict(softcap=5.0, sliding_window=7, sinks=sinks, alibi_slopes=alibi)]
    for prefill, expect_3d in ((20, False), (0, True)):
        b = ua._batch("cpu", torch.float32, 3, [37, 40, 5], SHAPE["num_query_heads"],
                      SHAPE["num_kv_heads"], SHAPE["head_size"], SHAPE["block_size"], prefill, 0)
        segm = ua.make_segm_buffers(64, hq, SHAPE["head_size"], "cpu")
        for feat in variants:
            log = []
            kernels = {"attn": Counting(ua.kernel_unified_attention, log),
                       "reduce": Counting(ua.reduce_segments, log)}
            out = torch.full_like(b["q"], float("nan"))
            ua.unified_attention(b["q"], b["kv_cache"], out, b["query_start_len"], b["seq_lens"],
                                 b["block_tables"], b["max_seqlen_q"], b["max_seqlen_k"], 0.17,
                                 segm_buffers=segm, kernels=kernels, **feat)
            assert len(log) == (2 if expect_3d else 1) and (len(log[0]) == 3) == expect_3d, log
            want = ua.reference_attention(b["q"], b["kv_cache"], b["query_start_len"],
                                          b["seq_lens"], b["block_tables"], 0.17, **feat)
            torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4, msg=lambda m: f"{feat}: {m}")
        # force_2d turns a decode-only batch back into one 2D launch
        if expect_3d:
            log = []
            ua.unified_attention(b["q"], b["kv_cache"], out, b["query_start_len"], b["seq_lens"],
                                 b["block_tables"], 1, 40, 0.17, segm_buffers=segm, force_2d=True,
                                 kernels={"attn": Counting(ua.kernel_unified_attention, log)})
            assert len(log) == 1 and len(log[0]) == 2


SCENARIOS = {"2d": _scenario_2d, "3d": _scenario_3d, "features": _scenario_features}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_interpreter(scenario):
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, __file__, scenario], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{scenario} failed:\n{r.stdout[-4000:]}\n{r.stderr[-8000:]}"
    assert "OK" in r.stdout, r.stdout
    print(f"{scenario}: {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1", "run through pytest (sets TRITON_INTERPRET=1)"
    _numpy24_shim()
    SCENARIOS[sys.argv[1]]()
    print("OK", sys.argv[1])
