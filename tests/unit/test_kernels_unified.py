"""kernel_unified_attention / reduce_segments: signature shape, Case fields, sm_90 compile, and
numerics under Triton's CPU interpreter (jitlab._triton.interpreter) against the fp32 torch reference.

Numerics use fp32/fp16: Triton 3.6's interpreter returns garbage for a bf16 `tl.dot`.
"""

from __future__ import annotations

import pytest
import torch

from .offline_compile import compile_sm90, jit_view

# --------------------------------------------------------------------------------------------
# In-process checks (no launch)


def test_param_counts_match_vllm_0_26():
    from jitlab.kernels import unified_attention as ua

    attn, red = jit_view(ua.kernel_unified_attention), jit_view(ua.reduce_segments)
    n_rt = sum(not p.is_constexpr for p in attn.params)
    n_ce = sum(p.is_constexpr for p in attn.params)
    assert (len(attn.params), n_rt, n_ce) == (77, 43, 34)
    assert n_rt >= 40 and n_ce >= 30
    assert (len(red.params), sum(not p.is_constexpr for p in red.params)) == (20, 11)
    ann = {p.name: str(p.annotation) for p in attn.params}
    assert ann["num_seqs"] == "i32"
    assert sum(a == "i64" for a in ann.values()) == 12  # the strides that are never None
    assert ann["stride_ks_blk"] == ""  # per-token-scale strides are passed as None: no annotation


def test_grid_and_mode_choice():
    from jitlab.kernels import unified_attention as ua

    assert ua.block_mq(4) == (16, 4)
    assert ua.block_mq(32) == (32, 1)
    assert ua.tile_sizes(2) == (32, 16) and ua.tile_sizes(1) == (32, 32)
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
    params = {p.name: p for p in jit_view(c.kernel).params}
    runtime = {n for n, p in params.items() if not p.is_constexpr}
    assert c.args == () and set(c.kwargs) - {"num_warps"} <= set(params)
    assert {n for n, p in params.items() if not p.has_default} <= set(c.kwargs)
    for names in (c.strides, c.scales, c.fixed_per_model, c.varying_ints):
        assert set(names) <= runtime
    assert set(c.varying_constexprs) <= set(params) - runtime
    assert len(c.strides) == 18 and c.varying_ints == ("num_seqs",)
    assert {"IS_3D", "NUM_SEGMENTS_PER_SEQ", "TILE_SIZE"} == set(c.varying_constexprs)
    live = sum(c.kwargs[n] is not None for n in runtime)
    num_tokens = 22 if mode == "2d" else 3
    if mode == "2d":
        assert live == 24 and c.grid == (num_tokens // 8 + 3, 2)
        assert c.kwargs["IS_3D"] is False and c.kwargs["TILE_SIZE"] == 32 and "reduce" not in c.extra
    else:
        assert live == 27 and c.grid == (num_tokens // 8 + 3, 2, 16)
        r = c.extra["reduce"]
        assert r.grid == (3, 4) and r.args == () and set(r.kwargs) <= {p.name for p in jit_view(r.kernel).params}
        assert c.kwargs["softmax_segm_output_ptr"] is c.extra["segm_buffers"][0]


def test_compiles_for_sm90():
    """Compile-only (no GPU needed): catches what the interpreter accepts but the compiler rejects."""
    from jitlab.kernels import unified_attention as ua

    c2 = ua.make_case("cpu", num_seqs=4, context=64, prefill_tokens=16)
    c3 = ua.make_case("cpu", num_seqs=4, context=64, mode="3d")
    for c in (c2, c3, c3.extra["reduce"]):
        assert compile_sm90(c.kernel, c.kwargs).asm["cubin"]
    b = c2.extra["batch"]
    (_, kw), _ = ua.attention_launch(b["q"], b["kv_cache"], torch.empty_like(b["q"]),
                                     b["query_start_len"], b["seq_lens"], b["block_tables"], 0.1,
                                     softcap=30.0, sliding_window=20, sinks=torch.zeros(32),
                                     alibi_slopes=torch.zeros(32))
    compile_sm90(ua.kernel_unified_attention, kw)


# --------------------------------------------------------------------------------------------
# Interpreter numerics

SHAPE = dict(num_query_heads=4, num_kv_heads=2, head_size=32, block_size=16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_2d_mixed_batch(dtype):
    from jitlab.kernels import unified_attention as ua
    from jitlab._triton.interpreter import interpreted

    # one prefill chunk (20 new tokens) + decodes, incl. a 1-token and a block-aligned context
    for ctx in ([37, 40, 5], [20, 32, 1]):
        c = ua.make_case("cpu", dtype=dtype, num_seqs=3, context=ctx, prefill_tokens=20, **SHAPE)
        c.poison()
        c.launch(interpreted(c.kernel))
        c.check()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_3d_decode_and_reduce(dtype):
    from jitlab.kernels import unified_attention as ua
    from jitlab._triton.interpreter import interpreted

    # 300 -> several tiles per segment; 5 -> a single active segment
    c = ua.make_case("cpu", dtype=dtype, num_seqs=3, context=[40, 300, 5], mode="3d", **SHAPE)
    c.poison()
    for t in c.extra["segm_buffers"]:
        t.fill_(float("nan"))  # inactive segments must never be read
    c.launch(interpreted(c.kernel))
    r = c.extra["reduce"]
    r.launch(interpreted(r.kernel))
    c.check()


class _Counting:
    def __init__(self, k, log):
        self.k, self.log = k, log

    def __getitem__(self, grid):
        self.log.append(grid)
        return self.k[grid]


@pytest.mark.parametrize("prefill", [20, 0], ids=["mixed-2d", "decode-3d"])
def test_wrapper_features(prefill):
    """unified_attention(): 2D/3D choice, `kernels=` routing, and every implemented feature flag."""
    from jitlab.kernels import unified_attention as ua
    from jitlab._triton.interpreter import interpreted

    expect_3d = prefill == 0
    hq = SHAPE["num_query_heads"]
    g = torch.Generator().manual_seed(1)
    sinks = torch.randn(hq, generator=g)
    alibi = torch.rand(hq, generator=g) * 0.2
    variants = [dict(), dict(softcap=2.0), dict(sliding_window=10), dict(sinks=sinks),
                dict(alibi_slopes=alibi), dict(causal=False),
                dict(softcap=5.0, sliding_window=7, sinks=sinks, alibi_slopes=alibi)]
    b = ua._batch("cpu", torch.float32, 3, [37, 40, 5], hq, SHAPE["num_kv_heads"],
                  SHAPE["head_size"], SHAPE["block_size"], prefill, 0)
    segm = ua.make_segm_buffers(64, hq, SHAPE["head_size"], "cpu")
    attn, red = interpreted(ua.kernel_unified_attention), interpreted(ua.reduce_segments)
    for feat in variants:
        log = []
        out = torch.full_like(b["q"], float("nan"))
        ua.unified_attention(b["q"], b["kv_cache"], out, b["query_start_len"], b["seq_lens"],
                             b["block_tables"], b["max_seqlen_q"], b["max_seqlen_k"], 0.17,
                             segm_buffers=segm, **feat,
                             kernels={"attn": _Counting(attn, log), "reduce": _Counting(red, log)})
        assert len(log) == (2 if expect_3d else 1) and (len(log[0]) == 3) == expect_3d, log
        want = ua.reference_attention(b["q"], b["kv_cache"], b["query_start_len"], b["seq_lens"],
                                      b["block_tables"], 0.17, **feat)
        torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4, msg=lambda m: f"{feat}: {m}")
    if expect_3d:  # force_2d turns a decode-only batch back into one 2D launch
        log = []
        ua.unified_attention(b["q"], b["kv_cache"], out, b["query_start_len"], b["seq_lens"],
                             b["block_tables"], 1, 40, 0.17, segm_buffers=segm, force_2d=True,
                             kernels={"attn": _Counting(attn, log)})
        assert len(log) == 1 and len(log[0]) == 2
