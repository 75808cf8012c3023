"""The jitlab.kernels workloads (tiny, paged attention 2D, cache write, Llama layer kernels) under
Triton's CPU interpreter against their torch references, plus their argument-list shapes and the
Case fields the launch-overhead experiments build relaxed policies from.

Kernels run through `jitlab._triton.interpreter.interpreted`, which re-decorates a kernel in
interpreter mode in-process (see that module for the three Triton 3.6 interpreter traps it handles).
The kernel modules are imported at the top of this file on purpose: a kernel module first imported
while TRITON_INTERPRET=1 is set would hold interpreter kernels for the rest of the test session.
Shapes are tiny and dtypes fp32/fp16: the 3.6 interpreter's bf16 `tl.dot` returns garbage.
"""

from __future__ import annotations

import pytest
import torch
import triton

import jitlab.kernels as kernels
from jitlab.kernels import cache_write, layers, paged_attention, tiny
from jitlab.kernels.case import Case
from jitlab._triton.interpreter import interpreted, nested_jit_names

from .offline_compile import compile_sm90, jit_view


def run_checked(case: Case) -> Case:
    case.poison()
    case.launch(interpreted(case.kernel))
    for t in case.outputs:  # every poisoned element was overwritten
        assert not (t.float().isnan().any() if t.is_floating_point() else (t == -1).any()), case.name
    case.check()
    return case


def check_case_fields(case: Case) -> None:
    """The Case's name lists refer to real parameters of the right kind."""
    params = {p.name: p for p in jit_view(case.kernel).params}
    runtime = {n for n, p in params.items() if not p.is_constexpr}
    constexprs = set(params) - runtime
    assert set(case.strides) <= runtime and set(case.scales) <= runtime
    assert set(case.fixed_per_model) <= runtime and set(case.varying_ints) <= runtime
    assert set(case.varying_constexprs) <= constexprs
    assert set(case.strides) <= set(case.fixed_per_model) or case.name == "tiny"
    assert not set(case.varying_ints) & set(case.fixed_per_model)
    bound = dict(zip(params, case.args)) | case.kwargs
    assert set(params) <= set(bound), f"{case.name}: unbound {set(params) - set(bound)}"
    for name in case.strides:
        assert type(bound[name]) is int, (case.name, name)  # Python ints, as vLLM passes them
    for name in case.varying_ints:
        assert type(bound[name]) is int, (case.name, name)


def counts(kernel) -> tuple[int, int]:
    params = jit_view(kernel).params
    return sum(not p.is_constexpr for p in params), sum(p.is_constexpr for p in params)


# ------------------------------------------------------------------------------------ interpreter


def test_interpreted_is_memoized_and_restores_patches():
    from triton.runtime import interpreter
    from triton.runtime.jit import JITFunction

    import triton.language as tl

    def lang_state():  # what the interpreter patches while a launch runs
        mods = (tl, tl.core, tl.math, tl.tensor)
        return {(id(m), n): getattr(m, n) for m in mods for n in dir(m) if not n.startswith("__")}

    call, plt, before = JITFunction.__dict__["__call__"], interpreter._patch_lang_tensor, lang_state()
    k = interpreted(tiny.add_one)
    assert interpreted(tiny.add_one) is k and interpreted(k) is k and interpreted(k.fn) is k
    run_checked(tiny.make_case("cpu", n=100, block=64))
    run_checked(paged_attention.make_case("cpu", **SMALL_PA))  # nested tl.sum / tl.max / tl.cdiv calls
    assert JITFunction.__dict__["__call__"] is call and interpreter._patch_lang_tensor is plt
    if not nested_jit_names():  # session run with TRITON_INTERPRET=1: Triton's own calls leak patches
        return
    after = lang_state()
    assert [key for key in before if after.get(key) is not before[key]] == []
    assert {"sum", "max", "cdiv", "zeros"} <= set(nested_jit_names())


# ------------------------------------------------------------------------------------------- tiny


@pytest.mark.parametrize("n", [1, 1000, 4096])
def test_tiny(n):
    case = run_checked(tiny.make_case("cpu", n=n, block=256))
    assert case.grid == (triton.cdiv(n, 256),)
    assert counts(case.kernel) == (3, 1)
    check_case_fields(case)


# ----------------------------------------------------------------------------- paged attention 2D

SMALL_PA = dict(num_seqs=2, context=40, num_query_heads=4, num_kv_heads=2, head_size=32, block_size=16)


@pytest.mark.parametrize("variant", [
    dict(),
    dict(use_alibi=True),
    dict(sliding_window=20),
    dict(filter_by_query_len=True, k_scale=0.5, v_scale=2.0),
    dict(num_seqs=3, head_size=16, num_query_heads=16, num_kv_heads=2),  # 8 query heads per kv head
    dict(head_size=24, num_query_heads=2, num_kv_heads=2, context=17),  # MHA, padded head size
    dict(dtype=torch.float16),
], ids=["plain", "alibi", "window", "filter_scales", "gqa8_hs16", "mha_hs24", "fp16"])
def test_paged_attention_2d(variant):
    shape = SMALL_PA | variant
    case = run_checked(paged_attention.make_case("cpu", **shape))
    assert case.grid == (4096, shape["num_kv_heads"])


def test_paged_attention_2d_early_exit_and_prefill_skip():
    case = paged_attention.make_case("cpu", **(SMALL_PA | dict(num_seqs=3, filter_by_query_len=True)))
    qsl, out = case.kwargs["query_start_len_ptr"], case.outputs[0]
    want = case.reference()[0]
    qsl[2:] += 1  # sequence 1 now has 2 query tokens (a prefill chunk): the kernel must skip it
    case.kwargs["num_seqs"] = 2  # programs for sequence 2 must exit at once
    case.poison()
    case.launch(interpreted(case.kernel))
    torch.testing.assert_close(out[0], want[0], atol=1e-2, rtol=1e-2)
    assert out[1:].isnan().all()


def test_paged_attention_2d_signature_and_fields():
    k = jit_view(paged_attention.kernel_paged_attention_2d)
    assert counts(k) == (26, 10)
    runtime = [p.name for p in k.params if not p.is_constexpr]
    assert runtime[:7] == ["output_ptr", "query_ptr", "key_cache_ptr", "value_cache_ptr", "block_tables_ptr",
                           "seq_lens_ptr", "alibi_slopes_ptr"]
    assert runtime[7:10] == ["scale", "k_scale", "v_scale"]
    assert runtime[-2:] == ["query_start_len_ptr", "num_seqs"]
    assert tuple(n for n in runtime if "stride" in n) == paged_attention.STRIDES and len(paged_attention.STRIDES) == 14

    case = paged_attention.make_case("cpu")  # the default (benchmark) shape builds on CPU too
    check_case_fields(case)
    assert case.args == () and case.grid == (4096, 8)
    assert case.kwargs["alibi_slopes_ptr"] is None and case.kwargs["query_start_len_ptr"] is None
    assert all(type(case.kwargs[s]) is float for s in case.scales)
    assert case.varying_ints == ("num_seqs",)
    assert set(case.varying_constexprs) == {"USE_ALIBI_SLOPES", "SLIDING_WINDOW", "filter_by_query_len"}
    assert {"alibi_slopes_ptr", "query_start_len_ptr"} <= set(case.fixed_per_model)
    seed = paged_attention.SEED_JITCACHE
    assert set(seed["assume_const"]) <= set(case.fixed_per_model)
    assert case.kwargs["key_cache_ptr"].shape == (case.kwargs["key_cache_ptr"].shape[0], 8, 128 // 4, 16, 4)


# ---------------------------------------------------------------------------------- cache write

SMALL_CW = dict(num_tokens=8, num_heads=2, head_size=32, block_size=16, num_blocks=8)


def _whole_cache_matches_reference(case, before, head_major):
    kw = case.kwargs
    want = cache_write.reference(kw["key_ptr"], kw["value_ptr"], before[0], before[1], kw["slot_mapping_ptr"],
                                 kw["k_scale"], kw["v_scale"], head_major)
    torch.testing.assert_close(kw["key_cache_ptr"].float(), want[0].float(), equal_nan=True)
    torch.testing.assert_close(kw["value_cache_ptr"].float(), want[1].float(), equal_nan=True)


@pytest.mark.parametrize("variant", [
    dict(), dict(head_major=True), dict(num_padding=3), dict(head_major=True, num_padding=2, dtype=torch.float16),
    dict(cache_dtype=torch.float8_e4m3fn), dict(cache_dtype=torch.float8_e4m3fn, head_major=True),
], ids=["flash", "head_major", "padding", "head_major_fp16_padding", "fp8", "fp8_head_major"])
def test_cache_write(variant):
    case = cache_write.make_case("cpu", **(SMALL_CW | variant))
    kw = case.kwargs
    if kw["FP8_KV_CACHE"]:
        # Use inputs that are exactly representable after scaling: Triton 3.6's interpreter rounds
        # fp32 -> fp8e4m3 wrongly at binade boundaries (1.96 -> 1.0), the GPU does not.
        for t, s in ((kw["key_ptr"], kw["k_scale"]), (kw["value_ptr"], kw["v_scale"])):
            t.copy_((t.float() / s).to(torch.float8_e4m3fn).float() * s)
    case.poison()
    before = [kw["key_cache_ptr"].clone(), kw["value_cache_ptr"].clone()]
    case.launch(interpreted(case.kernel))
    for t in case.outputs:
        assert not t.float().isnan().any()
    case.check()
    # nothing outside the written slots changed (padding tokens wrote nothing)
    _whole_cache_matches_reference(case, before, variant.get("head_major", False))
    live = (kw["slot_mapping_ptr"] >= 0).sum().item()
    assert len(case.outputs) == 2 * live == 2 * (SMALL_CW["num_tokens"] - variant.get("num_padding", 0))


def test_cache_write_signature_and_fields():
    assert counts(cache_write.reshape_and_cache_kernel_flash) == (14, 7)
    k = jit_view(cache_write.reshape_and_cache_kernel_flash)
    assert [p.name for p in k.params if p.is_constexpr] == [
        "num_heads", "head_size", "block_size", "x", "USE_HEAD_MAJOR_LAYOUT", "FP8_KV_CACHE", "TILE_SIZE"]
    case = cache_write.make_case("cpu")
    check_case_fields(case)
    assert callable(case.grid) and case.grid({"TILE_SIZE": 1024}) == (16, 1)
    assert case.grid({"TILE_SIZE": case.kwargs["TILE_SIZE"]}) == (16, 1)  # 8 heads x 128 = 1024 per token
    kv = case.kwargs["key_cache_ptr"]
    assert kv.shape == (1024, 16, 8, 128) and kv.stride(0) == 2 * 16 * 8 * 128  # a view of [nb, 2, bs, h, d]
    assert case.kwargs["value_cache_ptr"].data_ptr() - kv.data_ptr() == 16 * 8 * 128 * kv.element_size()
    assert case.kwargs["key_stride"] == (32 + 16) * 128  # a view into fused qkv rows
    assert not {"k_scale", "v_scale"} & set(case.fixed_per_model)  # per-layer tensors


# ---------------------------------------------------------------------------------- Llama layers


@pytest.mark.parametrize("make,shape", [
    (layers.make_rms_norm_case, dict(num_tokens=3, hidden=100)),
    (layers.make_rms_norm_case, dict(num_tokens=3, hidden=64, residual=False)),
    (layers.make_rms_norm_case, dict(num_tokens=2, hidden=64, dtype=torch.float16)),
    (layers.make_rope_case, dict(num_tokens=3, num_q_heads=4, num_kv_heads=2, head_size=32, max_position=64)),
    (layers.make_rope_case, dict(num_tokens=3, num_q_heads=4, num_kv_heads=2, head_size=32, max_position=64,
                                 rot_dim=16)),
    (layers.make_silu_and_mul_case, dict(num_tokens=3, intermediate=300, block=128)),
], ids=["rms_residual", "rms", "rms_fp16", "rope", "rope_partial", "silu_and_mul"])
def test_layer_kernels(make, shape):
    case = make("cpu", **shape)
    run_checked(case)
    run_checked(case)  # poison() restores in-place inputs, so a case can be checked again
    check_case_fields(case)


def test_layer_helpers_take_a_substitute_kernel():
    g = torch.Generator().manual_seed(1)
    x, w, r = (torch.randn(3, 64, generator=g), torch.randn(64, generator=g), torch.randn(3, 64, generator=g))
    want_out, want_res = layers.rms_norm_reference(x, w, 1e-6, r)
    out, res = layers.rms_norm(x, w, 1e-6, residual=r, kernel=interpreted(layers.rms_norm_kernel))
    assert res is r
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(res, want_res)
    out2 = torch.empty_like(x)
    assert layers.rms_norm(x, w, 1e-6, out=out2, kernel=interpreted(layers.rms_norm_kernel)) is out2
    torch.testing.assert_close(out2, layers.rms_norm_reference(x, w, 1e-6))

    qkv = torch.randn(4, (4 + 2 * 2) * 16, generator=g)
    q, k = qkv[:, :64].view(4, 4, 16), qkv[:, 64:96].view(4, 2, 16)
    pos = torch.tensor([0, 5, 17, 31])
    cos_sin = layers.rope_cos_sin_cache(32, 16)
    want_q, want_k = layers.rope_reference(q, k, pos, cos_sin)
    v_before = qkv[:, 96:].clone()
    layers.rope_(q, k, pos, cos_sin, kernel=interpreted(layers.rope_neox_kernel))
    torch.testing.assert_close(q, want_q)
    torch.testing.assert_close(k, want_k)
    assert torch.equal(qkv[:, 96:], v_before)  # v untouched

    xs = torch.randn(3, 2 * 200, generator=g)
    torch.testing.assert_close(layers.silu_and_mul(xs, kernel=interpreted(layers.silu_and_mul_kernel)),
                               layers.silu_and_mul_reference(xs))


def test_layer_cases_default_llama_shapes():
    rms = layers.make_rms_norm_case("cpu")
    assert rms.kwargs["BLOCK_N"] == 4096 and rms.grid == (16,) and rms.varying_constexprs == ("HAS_RESIDUAL",)
    assert rms.kwargs["residual_row_stride"] == 4096
    no_res = layers.make_rms_norm_case("cpu", residual=False)
    assert no_res.kwargs["residual_ptr"] is None and no_res.kwargs["residual_row_stride"] == 4096
    rope = layers.make_rope_case("cpu")
    assert rope.kwargs["q_token_stride"] == (32 + 16) * 128 and rope.kwargs["BLOCK_H"] == 32
    silu = layers.make_silu_and_mul_case("cpu")
    assert silu.grid == (16, 14) and silu.kwargs["d"] == 14336


# -------------------------------------------------------------------------------------- registry


def test_workload_registry():
    assert {"tiny", "paged_attention_2d", "cache_write", "unified_attention_2d", "unified_attention_3d"} <= set(
        kernels.WORKLOADS)
    assert kernels.builder("paged_attention_2d") is paged_attention.make_case
    assert kernels.builder("cache_write") is cache_write.make_case
    for name, w in kernels.WORKLOADS.items():  # every entry builds its CPU-demo case, in fp32
        case = kernels.make_case(name, cuda=False)
        assert isinstance(case, Case) and w.name == name
        assert all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.int32, torch.int64)
                   for t in case.outputs), name
    with pytest.raises(ValueError, match="unknown workload 'nope'; valid choices: .*'tiny'"):
        kernels.builder("nope")


# ------------------------------------------------------------------------------ sm_90 compile-only

@pytest.mark.parametrize("make,shape", [
    (tiny.make_case, {}),
    (paged_attention.make_case, dict(num_seqs=2, context=64)),
    (paged_attention.make_case, dict(num_seqs=2, context=64, use_alibi=True, sliding_window=32,
                                     filter_by_query_len=True)),
    (cache_write.make_case, dict(num_blocks=16)),
    (cache_write.make_case, dict(num_blocks=16, head_major=True, cache_dtype=torch.float8_e4m3fn)),
    (layers.make_rms_norm_case, {}),
    (layers.make_rms_norm_case, dict(residual=False)),
    (layers.make_rope_case, {}),
    (layers.make_silu_and_mul_case, {}),
], ids=["tiny", "paged_attention", "paged_attention_all_features", "cache_write", "cache_write_head_major_fp8",
        "rms_norm_residual", "rms_norm", "rope", "silu_and_mul"])
def test_compiles_for_sm90_bf16(make, shape):
    case = make("cpu", dtype=torch.bfloat16, **shape)
    bound = dict(zip([p.name for p in jit_view(case.kernel).params], case.args)) | case.kwargs
    assert compile_sm90(case.kernel, bound, case.kwargs.get("num_warps", 4)).asm["cubin"]


def test_many_args():
    """The 26-argument kernel python -m jitlab.bench.native_launch times on a GPU."""
    run_checked(kernels.make_case("many_args", cuda=False))
