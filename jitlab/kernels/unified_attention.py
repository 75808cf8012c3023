"""Paged varlen attention with vLLM 0.26's `kernel_unified_attention` argument shape.

Original code. Only the *interface* follows vLLM (argument names, groups and counts, grids, the
2D/3D choice, keyword-only launches, optional pointers passed as None), because that interface is
what makes launches expensive and is what jitlab has to handle. See shared/notes/vllm.md §1.2-1.4.

Layouts (as in vLLM's TRITON_ATTN backend):
- `q`, `out`: [num_tokens, num_query_heads, head_size]; tokens of all sequences packed (varlen).
- `kv_cache`: [num_blocks, 2, block_size, num_kv_heads, head_size]; key_cache = kv[:, 0],
  value_cache = kv[:, 1].
- `query_start_len`: [num_seqs + 1] int32 cumulative query lengths; `seq_lens`: [num_seqs] int32
  total context per sequence including its new query tokens; `block_tables`: [num_seqs, max_blocks].
- 3D mode: `softmax_segm_output` [num_tokens, num_query_heads, NUM_SEGMENTS_PER_SEQ,
  HEAD_SIZE_PADDED] fp32, `softmax_segm_max` / `softmax_segm_expsum` [num_tokens,
  num_query_heads, NUM_SEGMENTS_PER_SEQ] fp32 (max is kept in log2 units).

Implemented feature flags: USE_CAUSAL (True/False), SLIDING_WINDOW (>0: a query at absolute
position p sees keys j with p - j < SLIDING_WINDOW), USE_SOFTCAP, USE_SINKS, USE_ALIBI_SLOPES.
Compiled off with `tl.static_assert`: USE_ALIBI_SQRT, USE_QQ_BIAS, USE_PER_SEQ_CAUSAL,
USE_MM_PREFIX, USE_R_SWA, CHUNK_SIZE>0 (chunked local attention), KV_QUANT_MODE!=0, USE_FP8
(fp8 output), Q_IS_FP8, USE_TD, USE_TD_QO. Their pointers/strides stay in the signature and are
passed as None, as vLLM does for a bf16 Llama.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

NUM_SEGMENTS = 16  # vLLM's NUM_PAR_SOFTMAX_SEGMENTS
MIN_LAUNCH_GRID_SIZE_2D = 128  # vLLM: seq_threshold_3D = MIN_LAUNCH_GRID_SIZE_2D // num_kv_heads
FP8_MIN = -448.0
FP8_MAX = 448.0


@triton.jit
def kernel_unified_attention(
    # --- pointers (18) ---
    output_ptr,  # [num_tokens, num_query_heads, head_size]
    query_ptr,  # [num_tokens, num_query_heads, head_size]
    key_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_size]
    value_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_size]
    sink_ptr,  # [num_query_heads] or None
    block_tables_ptr,  # [num_seqs, max_blocks_per_seq]
    seq_lens_ptr,  # [num_seqs]
    alibi_slopes_ptr,  # [num_query_heads] or None
    qq_bias_ptr,  # [num_query_tokens, num_query_tokens] or None
    per_seq_causal_ptr,  # [num_seqs] or None
    mm_prefix_range_ptr,  # [num_seqs, MAX_MM_RANGES, 2] or None
    rswa_prefix_lens_ptr,  # [num_seqs] or None
    query_start_len_ptr,  # [num_seqs + 1]
    softmax_segm_output_ptr,  # [num_tokens, num_query_heads, NUM_SEGMENTS, HEAD_SIZE_PADDED] or None
    softmax_segm_max_ptr,  # [num_tokens, num_query_heads, NUM_SEGMENTS] or None
    softmax_segm_expsum_ptr,  # [num_tokens, num_query_heads, NUM_SEGMENTS] or None
    k_scale_cache_ptr,  # per-token-head K scales or None
    v_scale_cache_ptr,  # per-token-head V scales or None
    # --- scalars (6) ---
    scale,  # float
    q_scale,  # tensor or None
    k_scale,  # tensor (per layer); read only when KV_QUANT_MODE == 1
    v_scale,  # tensor (per layer)
    out_scale,  # tensor or None (fp8 output)
    softcap,  # float
    # --- model shape ---
    num_query_heads: tl.constexpr,
    num_queries_per_kv: tl.constexpr,
    # --- int64 strides (12) ---
    block_table_stride: tl.int64,
    query_stride_0: tl.int64,
    query_stride_1: tl.int64,
    output_stride_0: tl.int64,
    output_stride_1: tl.int64,
    qq_bias_stride_0: tl.int64,
    stride_k_cache_0: tl.int64,
    stride_k_cache_1: tl.int64,
    stride_k_cache_2: tl.int64,
    stride_v_cache_0: tl.int64,
    stride_v_cache_1: tl.int64,
    stride_v_cache_2: tl.int64,
    # --- per-token-head scale strides (6), None unless KV_QUANT_MODE == 2 ---
    stride_ks_blk,
    stride_ks_slot,
    stride_ks_head,
    stride_vs_blk,
    stride_vs_slot,
    stride_vs_head,
    num_seqs: tl.int32,
    # --- constexprs ---
    BLOCK_SIZE: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    HEAD_SIZE_PADDED: tl.constexpr,
    stride_k_cache_3: tl.constexpr,
    stride_v_cache_3: tl.constexpr,
    TILE_SIZE: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_M: tl.constexpr,
    NUM_SEGMENTS_PER_SEQ: tl.constexpr,
    CHUNK_LOOKBACK: tl.constexpr,
    CHUNK_SIZE: tl.constexpr,
    USE_ALIBI_SLOPES: tl.constexpr,
    USE_ALIBI_SQRT: tl.constexpr,
    USE_QQ_BIAS: tl.constexpr,
    USE_SOFTCAP: tl.constexpr,
    USE_SINKS: tl.constexpr,
    SLIDING_WINDOW: tl.constexpr,
    USE_CAUSAL: tl.constexpr,
    USE_PER_SEQ_CAUSAL: tl.constexpr,
    USE_MM_PREFIX: tl.constexpr,
    MAX_MM_RANGES: tl.constexpr,
    R_SWA_WINDOW: tl.constexpr,
    USE_R_SWA: tl.constexpr,
    MM_PREFIX_CLAMP_SW: tl.constexpr,
    IS_3D: tl.constexpr,
    KV_QUANT_MODE: tl.constexpr,
    USE_FP8: tl.constexpr,
    Q_IS_FP8: tl.constexpr,
    USE_TD: tl.constexpr,
    USE_TD_QO: tl.constexpr,
    FP8_MIN: tl.constexpr = FP8_MIN,
    FP8_MAX: tl.constexpr = FP8_MAX,
):
    tl.static_assert(not USE_ALIBI_SQRT, "USE_ALIBI_SQRT is not implemented")
    tl.static_assert(not USE_QQ_BIAS, "USE_QQ_BIAS is not implemented")
    tl.static_assert(not USE_PER_SEQ_CAUSAL, "USE_PER_SEQ_CAUSAL is not implemented")
    tl.static_assert(not USE_MM_PREFIX, "USE_MM_PREFIX is not implemented")
    tl.static_assert(not USE_R_SWA, "USE_R_SWA is not implemented")
    tl.static_assert(CHUNK_SIZE == 0, "chunked local attention is not implemented")
    tl.static_assert(KV_QUANT_MODE == 0, "quantized KV caches are not implemented")
    tl.static_assert(not USE_FP8, "fp8 output is not implemented")
    tl.static_assert(not Q_IS_FP8, "fp8 queries are not implemented")
    tl.static_assert(not USE_TD, "tensor descriptors are not implemented")
    tl.static_assert(not USE_TD_QO, "tensor descriptors are not implemented")
    tl.static_assert(BLOCK_Q * num_queries_per_kv <= BLOCK_M, "BLOCK_M too small for BLOCK_Q")

    q_block_global_idx = tl.program_id(0)
    kv_head_idx = tl.program_id(1)

    # The sequence owning this q-block: the last seq with start_q_block <= q_block_global_idx, where
    # seq i's q-blocks start at query_start_len[i] // BLOCK_Q + i. Binary search, written inline
    # (no helper @triton.jit of ours, so re-wrapping the kernel for the interpreter is simpler).
    lo = 0
    hi = num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        if tl.load(query_start_len_ptr + mid) // BLOCK_Q + mid <= q_block_global_idx:
            lo = mid + 1
        else:
            hi = mid
    seq_idx = lo - 1
    q_start = tl.load(query_start_len_ptr + seq_idx)
    q_block_local_idx = q_block_global_idx - (q_start // BLOCK_Q + seq_idx)
    q_len = tl.load(query_start_len_ptr + seq_idx + 1) - q_start
    if q_block_local_idx * BLOCK_Q >= q_len:
        return  # the grid is an upper bound; this program has no queries

    seq_len = tl.load(seq_lens_ptr + seq_idx)
    context_len = seq_len - q_len  # keys before the first new query

    # Rows of the M tile: BLOCK_Q query tokens x num_queries_per_kv heads sharing one KV head.
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_SIZE_PADDED)
    offs_t = tl.arange(0, TILE_SIZE)
    q_pos = q_block_local_idx * BLOCK_Q + offs_m // num_queries_per_kv  # position within the seq's queries
    q_tok = q_start + q_pos
    q_head = kv_head_idx * num_queries_per_kv + offs_m % num_queries_per_kv
    row_ok = (offs_m < BLOCK_Q * num_queries_per_kv) & (q_pos < q_len) & (q_head < num_query_heads)
    d_ok = offs_d < HEAD_SIZE
    q_abs = context_len + q_pos  # absolute position of each row's query token

    q = tl.load(query_ptr + q_tok[:, None] * query_stride_0 + q_head[:, None] * query_stride_1
                + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)

    # Key range this program needs: [key_lo, key_hi)
    if USE_CAUSAL:
        last_q = q_block_local_idx * BLOCK_Q + (BLOCK_M - 1) // num_queries_per_kv
        key_hi = tl.minimum(context_len + last_q + 1, seq_len)
    else:
        key_hi = seq_len
    num_tiles = tl.cdiv(key_hi, TILE_SIZE)
    tile_lo = 0
    if SLIDING_WINDOW > 0:
        first_q_abs = context_len + q_block_local_idx * BLOCK_Q
        tile_lo = tl.maximum(first_q_abs - SLIDING_WINDOW + 1, 0) // TILE_SIZE
    tile_hi = num_tiles

    if IS_3D:
        segm_idx = tl.program_id(2)
        tiles_per_segment = tl.cdiv(seq_len, NUM_SEGMENTS_PER_SEQ * TILE_SIZE)
        if segm_idx * tiles_per_segment * TILE_SIZE >= seq_len:
            return  # inactive segment: reduce_segments masks it out
        tile_lo = tl.maximum(tile_lo, segm_idx * tiles_per_segment)
        tile_hi = tl.minimum(tile_hi, (segm_idx + 1) * tiles_per_segment)

    # Online softmax state; scores are kept in log2 units (x * log2(e) = x * 1.4426950408889634).
    if USE_SINKS:
        if IS_3D:
            first = segm_idx == 0
        else:
            first = True
        sink = tl.load(sink_ptr + q_head, mask=row_ok, other=float("-inf")).to(tl.float32) * 1.4426950408889634
        m_i = tl.where(first, sink, float("-inf"))
        l_i = tl.where(m_i > float("-inf"), 1.0, 0.0)  # the sink's own exp2(sink - m_i)
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_SIZE_PADDED], dtype=tl.float32)

    if USE_ALIBI_SLOPES:
        alibi = tl.load(alibi_slopes_ptr + q_head, mask=row_ok, other=0.0).to(tl.float32)

    bt_row = block_tables_ptr + seq_idx.to(tl.int64) * block_table_stride
    k_base = key_cache_ptr + kv_head_idx * stride_k_cache_2
    v_base = value_cache_ptr + kv_head_idx * stride_v_cache_2
    for tile in range(tile_lo, tile_hi):
        key_pos = tile * TILE_SIZE + offs_t
        key_ok = key_pos < key_hi
        blk = tl.load(bt_row + key_pos // BLOCK_SIZE, mask=key_ok, other=0).to(tl.int64)
        slot = key_pos % BLOCK_SIZE
        k = tl.load(k_base + blk[None, :] * stride_k_cache_0 + slot[None, :] * stride_k_cache_1
                    + offs_d[:, None] * stride_k_cache_3, mask=d_ok[:, None] & key_ok[None, :], other=0.0)
        v = tl.load(v_base + blk[:, None] * stride_v_cache_0 + slot[:, None] * stride_v_cache_1
                    + offs_d[None, :] * stride_v_cache_3, mask=key_ok[:, None] & d_ok[None, :], other=0.0)

        s = tl.dot(q, k)
        if USE_SOFTCAP or USE_ALIBI_SLOPES:
            s = s * scale
            if USE_SOFTCAP:
                # softcap * tanh(s / softcap), tanh written with exp so the interpreter runs it too
                e = tl.exp(2.0 * s / softcap)
                s = softcap * (1.0 - 2.0 / (e + 1.0))
            if USE_ALIBI_SLOPES:
                s += alibi[:, None] * (key_pos[None, :] - q_abs[:, None]).to(tl.float32)
            s = s * 1.4426950408889634
        else:
            s = s * (scale * 1.4426950408889634)

        visible = row_ok[:, None] & key_ok[None, :]
        if USE_CAUSAL:
            visible = visible & (key_pos[None, :] <= q_abs[:, None])
        if SLIDING_WINDOW > 0:
            visible = visible & (q_abs[:, None] - key_pos[None, :] < SLIDING_WINDOW)
        s = tl.where(visible, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new > float("-inf"), m_new, 0.0)  # fully masked rows stay at zero weight
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    if IS_3D:
        segm_row = (q_tok[:, None].to(tl.int64) * num_query_heads + q_head[:, None]) * NUM_SEGMENTS_PER_SEQ + segm_idx
        tl.store(softmax_segm_output_ptr + segm_row * HEAD_SIZE_PADDED + offs_d[None, :], acc,
                 mask=row_ok[:, None] & d_ok[None, :])
        segm_vec = (q_tok.to(tl.int64) * num_query_heads + q_head) * NUM_SEGMENTS_PER_SEQ + segm_idx
        tl.store(softmax_segm_max_ptr + segm_vec, m_i, mask=row_ok)
        tl.store(softmax_segm_expsum_ptr + segm_vec, l_i, mask=row_ok)
    else:
        l_safe = tl.where(l_i > 0.0, l_i, 1.0)
        result = acc / l_safe[:, None]
        tl.store(output_ptr + q_tok[:, None] * output_stride_0 + q_head[:, None] * output_stride_1
                 + offs_d[None, :], result.to(output_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def reduce_segments(
    output_ptr,  # [num_tokens, num_query_heads, head_size]
    segm_output_ptr,  # [num_tokens, num_query_heads, NUM_SEGMENTS, HEAD_SIZE_PADDED]
    segm_max_ptr,  # [num_tokens, num_query_heads, NUM_SEGMENTS]
    segm_expsum_ptr,  # [num_tokens, num_query_heads, NUM_SEGMENTS]
    seq_lens_ptr,  # [num_seqs]
    num_seqs,
    num_query_heads: tl.constexpr,
    out_scale_inv,  # float
    output_stride_0: tl.int64,
    output_stride_1: tl.int64,
    block_table_stride: tl.int64,  # unused; kept for vLLM's signature shape
    TILE_SIZE: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    HEAD_SIZE_PADDED: tl.constexpr,
    query_start_len_ptr,  # [num_seqs + 1]
    BLOCK_Q: tl.constexpr,
    NUM_SEGMENTS_PER_SEQ: tl.constexpr,
    USE_FP8: tl.constexpr,
    FP8_MIN: tl.constexpr = FP8_MIN,
    FP8_MAX: tl.constexpr = FP8_MAX,
):
    tl.static_assert(not USE_FP8, "fp8 output is not implemented")
    tok = tl.program_id(0)
    head = tl.program_id(1)
    lo = 0  # the sequence owning token `tok` (binary search over query_start_len)
    hi = num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        if tl.load(query_start_len_ptr + mid) <= tok:
            lo = mid + 1
        else:
            hi = mid
    seq_idx = lo - 1
    seq_len = tl.load(seq_lens_ptr + seq_idx)
    tiles_per_segment = tl.cdiv(seq_len, NUM_SEGMENTS_PER_SEQ * TILE_SIZE)
    active = tl.cdiv(seq_len, tiles_per_segment * TILE_SIZE)

    offs_s = tl.arange(0, NUM_SEGMENTS_PER_SEQ)
    offs_d = tl.arange(0, HEAD_SIZE_PADDED)
    seg_ok = offs_s < active
    row = (tok.to(tl.int64) * num_query_heads + head) * NUM_SEGMENTS_PER_SEQ
    m_s = tl.load(segm_max_ptr + row + offs_s, mask=seg_ok, other=float("-inf"))
    m = tl.max(m_s, axis=0)
    m = tl.where(m > float("-inf"), m, 0.0)
    w = tl.where(seg_ok, tl.exp2(m_s - m), 0.0)
    l_s = tl.load(segm_expsum_ptr + row + offs_s, mask=seg_ok, other=0.0)
    total = tl.sum(l_s * w, axis=0)
    acc_s = tl.load(segm_output_ptr + (row + offs_s[:, None]) * HEAD_SIZE_PADDED + offs_d[None, :],
                    mask=seg_ok[:, None] & (offs_d[None, :] < HEAD_SIZE), other=0.0)
    acc = tl.sum(acc_s * w[:, None], axis=0)
    total = tl.where(total > 0.0, total, 1.0)
    result = acc / total * out_scale_inv
    tl.store(output_ptr + tok * output_stride_0 + head * output_stride_1 + offs_d,
             result.to(output_ptr.dtype.element_ty), mask=offs_d < HEAD_SIZE)


# --------------------------------------------------------------------------------------------
# Host side

_ONES: dict = {}


def _unit_scale(device) -> torch.Tensor:
    """A per-device 1.0 tensor standing in for a layer's k_scale / v_scale (not read for bf16)."""
    t = _ONES.get(device)
    if t is None:
        t = _ONES[device] = torch.ones(1, dtype=torch.float32, device=device)
    return t


def tile_sizes(element_size: int) -> tuple[int, int]:
    """(2D/prefill, 3D/decode) TILE_SIZE as vLLM picks them from q's element size: 32/16, or 32/32 for fp8."""
    return 32, (16 if element_size >= 2 else 32)


def block_mq(num_queries_per_kv: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_Q) for a GQA ratio."""
    block_m = 16 if num_queries_per_kv <= 16 else triton.next_power_of_2(num_queries_per_kv)
    return block_m, block_m // num_queries_per_kv


def make_segm_buffers(max_tokens: int, num_query_heads: int, head_size: int, device,
                      num_segments: int = NUM_SEGMENTS):
    """Persistent 3D-mode buffers (vLLM's metadata builder allocates these once)."""
    hp = triton.next_power_of_2(head_size)
    return (torch.empty(max_tokens, num_query_heads, num_segments, hp, dtype=torch.float32, device=device),
            torch.empty(max_tokens, num_query_heads, num_segments, dtype=torch.float32, device=device),
            torch.empty(max_tokens, num_query_heads, num_segments, dtype=torch.float32, device=device))


def use_3d(max_seqlen_q: int, num_seqs: int, num_kv_heads: int, segm_buffers, force_2d=False) -> bool:
    return (not force_2d and segm_buffers is not None and max_seqlen_q == 1
            and num_seqs <= MIN_LAUNCH_GRID_SIZE_2D // num_kv_heads)


def attention_launch(q, kv_cache, out, query_start_len, seq_lens, block_tables, scale, *,
                     is_3d=False, segm_buffers=None, softcap=0.0, sliding_window=0, sinks=None,
                     alibi_slopes=None, causal=True, k_scale=None, v_scale=None, num_warps=4):
    """(grid, kwargs) for kernel_unified_attention, plus (grid, kwargs) for reduce_segments or None.

    Every argument is a keyword, as in vLLM 0.26.
    """
    num_tokens, num_query_heads, head_size = q.shape
    num_kv_heads = kv_cache.shape[3]
    block_size = kv_cache.shape[2]
    num_seqs = seq_lens.shape[0]
    ratio = num_query_heads // num_kv_heads
    block_m, block_q = block_mq(ratio)
    tile_prefill, tile_decode = tile_sizes(q.element_size())
    tile = tile_decode if is_3d else tile_prefill
    hp = triton.next_power_of_2(head_size)
    key_cache = kv_cache[:, 0]
    value_cache = kv_cache[:, 1]
    if k_scale is None:
        k_scale = v_scale = _unit_scale(q.device)
    segm_out, segm_max, segm_expsum = segm_buffers if is_3d else (None, None, None)
    total_num_q_blocks = num_tokens // block_q + num_seqs
    nseg = NUM_SEGMENTS if is_3d else 1
    kw = dict(
        output_ptr=out, query_ptr=q, key_cache_ptr=key_cache, value_cache_ptr=value_cache,
        sink_ptr=sinks, block_tables_ptr=block_tables, seq_lens_ptr=seq_lens,
        alibi_slopes_ptr=alibi_slopes, qq_bias_ptr=None, per_seq_causal_ptr=None,
        mm_prefix_range_ptr=None, rswa_prefix_lens_ptr=None, query_start_len_ptr=query_start_len,
        softmax_segm_output_ptr=segm_out, softmax_segm_max_ptr=segm_max,
        softmax_segm_expsum_ptr=segm_expsum, k_scale_cache_ptr=None, v_scale_cache_ptr=None,
        scale=scale, q_scale=None, k_scale=k_scale, v_scale=v_scale, out_scale=None, softcap=softcap,
        num_query_heads=num_query_heads, num_queries_per_kv=ratio,
        block_table_stride=block_tables.stride(0),
        query_stride_0=q.stride(0), query_stride_1=q.stride(1),
        output_stride_0=out.stride(0), output_stride_1=out.stride(1), qq_bias_stride_0=0,
        stride_k_cache_0=key_cache.stride(0), stride_k_cache_1=key_cache.stride(1),
        stride_k_cache_2=key_cache.stride(2),
        stride_v_cache_0=value_cache.stride(0), stride_v_cache_1=value_cache.stride(1),
        stride_v_cache_2=value_cache.stride(2),
        stride_ks_blk=None, stride_ks_slot=None, stride_ks_head=None,
        stride_vs_blk=None, stride_vs_slot=None, stride_vs_head=None,
        num_seqs=num_seqs,
        BLOCK_SIZE=block_size, HEAD_SIZE=head_size, HEAD_SIZE_PADDED=hp,
        stride_k_cache_3=key_cache.stride(3), stride_v_cache_3=value_cache.stride(3),
        TILE_SIZE=tile, BLOCK_Q=block_q, BLOCK_M=block_m, NUM_SEGMENTS_PER_SEQ=nseg,
        CHUNK_LOOKBACK=-1, CHUNK_SIZE=0,
        USE_ALIBI_SLOPES=alibi_slopes is not None, USE_ALIBI_SQRT=False, USE_QQ_BIAS=False,
        USE_SOFTCAP=softcap > 0, USE_SINKS=sinks is not None, SLIDING_WINDOW=sliding_window,
        USE_CAUSAL=causal, USE_PER_SEQ_CAUSAL=False, USE_MM_PREFIX=False, MAX_MM_RANGES=0,
        R_SWA_WINDOW=0, USE_R_SWA=False, MM_PREFIX_CLAMP_SW=False,
        IS_3D=is_3d, KV_QUANT_MODE=0, USE_FP8=False, Q_IS_FP8=False, USE_TD=False, USE_TD_QO=False,
        num_warps=num_warps,
    )
    if is_3d:
        grid = (total_num_q_blocks, num_kv_heads, NUM_SEGMENTS)
        rkw = dict(
            output_ptr=out, segm_output_ptr=segm_out, segm_max_ptr=segm_max,
            segm_expsum_ptr=segm_expsum, seq_lens_ptr=seq_lens, num_seqs=num_seqs,
            num_query_heads=num_query_heads, out_scale_inv=1.0,
            output_stride_0=out.stride(0), output_stride_1=out.stride(1),
            block_table_stride=block_tables.stride(0), TILE_SIZE=tile, HEAD_SIZE=head_size,
            HEAD_SIZE_PADDED=hp, query_start_len_ptr=query_start_len, BLOCK_Q=block_q,
            NUM_SEGMENTS_PER_SEQ=NUM_SEGMENTS, USE_FP8=False,
        )
        return (grid, kw), ((num_tokens, num_query_heads), rkw)
    return ((total_num_q_blocks, num_kv_heads), kw), None


def unified_attention(q, kv_cache, out, query_start_len, seq_lens, block_tables, max_seqlen_q,
                      max_seqlen_k, scale, *, segm_buffers=None, kernels=None, force_2d=False,
                      num_warps=4, softcap=0.0, sliding_window=0, sinks=None, alibi_slopes=None,
                      causal=True, k_scale=None, v_scale=None):
    """One attention layer: 2D launch, or (decode-only small batch) 3D launch + reduce_segments.

    `kernels` may map "attn"/"reduce" to wrapped kernels (e.g. jitcache(...)); default: the raw ones.
    `max_seqlen_k` is accepted for vLLM parity (host-only, not a kernel argument).
    """
    is_3d = use_3d(max_seqlen_q, seq_lens.shape[0], kv_cache.shape[3], segm_buffers, force_2d)
    (grid, kw), red = attention_launch(
        q, kv_cache, out, query_start_len, seq_lens, block_tables, scale, is_3d=is_3d,
        segm_buffers=segm_buffers, softcap=softcap, sliding_window=sliding_window, sinks=sinks,
        alibi_slopes=alibi_slopes, causal=causal, k_scale=k_scale, v_scale=v_scale,
        num_warps=num_warps)
    attn = kernels.get("attn", kernel_unified_attention) if kernels else kernel_unified_attention
    attn[grid](**kw)
    if red is not None:
        reduce = kernels.get("reduce", reduce_segments) if kernels else reduce_segments
        reduce[red[0]](**red[1])
    return out


# --------------------------------------------------------------------------------------------
# Reference and cases


def reference_attention(q, kv_cache, query_start_len, seq_lens, block_tables, scale, *,
                        softcap=0.0, sliding_window=0, sinks=None, alibi_slopes=None, causal=True):
    """Causal varlen paged attention in fp32 (torch); returns [num_tokens, num_query_heads, head_size]."""
    num_tokens, hq, d = q.shape
    bs, hkv = kv_cache.shape[2], kv_cache.shape[3]
    ratio = hq // hkv
    out = torch.zeros(num_tokens, hq, d, dtype=torch.float32, device=q.device)
    qsl = query_start_len.tolist()
    for i, seq_len in enumerate(seq_lens.tolist()):
        s0, s1 = qsl[i], qsl[i + 1]
        ql = s1 - s0
        if ql == 0:
            continue
        nblk = (seq_len + bs - 1) // bs
        blocks = block_tables[i, :nblk].long()
        kv = kv_cache[blocks].float()  # [nblk, 2, bs, hkv, d]
        k = kv[:, 0].reshape(-1, hkv, d)[:seq_len].repeat_interleave(ratio, dim=1)  # [L, hq, d]
        v = kv[:, 1].reshape(-1, hkv, d)[:seq_len].repeat_interleave(ratio, dim=1)
        qi = q[s0:s1].float()
        s = torch.einsum("qhd,khd->hqk", qi, k) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        q_abs = torch.arange(seq_len - ql, seq_len, device=q.device)[:, None]
        k_pos = torch.arange(seq_len, device=q.device)[None, :]
        if alibi_slopes is not None:
            s = s + alibi_slopes.float()[:, None, None] * (k_pos - q_abs).float()[None]
        mask = torch.ones(ql, seq_len, dtype=torch.bool, device=q.device)
        if causal:
            mask &= k_pos <= q_abs
        if sliding_window > 0:
            mask &= (q_abs - k_pos) < sliding_window
        s = s.masked_fill(~mask[None], float("-inf"))
        if sinks is not None:
            sink_col = sinks.float()[:, None, None].expand(hq, ql, 1)
            p = torch.softmax(torch.cat([s, sink_col], dim=-1), dim=-1)[..., :-1]
        else:
            p = torch.softmax(s, dim=-1)
        out[s0:s1] = torch.einsum("hqk,khd->qhd", p, v)
    return out


def _batch(device, dtype, num_seqs, context, num_query_heads, num_kv_heads, head_size, block_size,
           prefill_tokens, seed):
    """Random paged KV cache + varlen metadata, generated on `device`. Seq 0 is a prefill chunk of
    `prefill_tokens` new tokens when > 0 (they are the last tokens of its context), the others
    decode one token each. `context` is an int or one int per seq (seq_lens)."""
    ctx = [context] * num_seqs if isinstance(context, int) else [int(c) for c in context]
    assert len(ctx) == num_seqs and min(ctx) >= 1
    q_lens = [1] * num_seqs
    if prefill_tokens:
        assert ctx[0] >= prefill_tokens, "the prefill chunk is part of its sequence's context"
        q_lens[0] = prefill_tokens
    nblk = [(c + block_size - 1) // block_size for c in ctx]
    num_blocks = sum(nblk) + 1  # one spare block nobody owns
    g_cpu = torch.Generator().manual_seed(seed)
    perm = torch.randperm(num_blocks, generator=g_cpu)  # scatter each sequence over the pool
    block_tables = torch.zeros(num_seqs, max(nblk), dtype=torch.int32)
    used = 0
    for i, n in enumerate(nblk):
        block_tables[i, :n] = perm[used:used + n].to(torch.int32)
        used += n
    qsl = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    g = torch.Generator(device=device).manual_seed(seed)
    kv = torch.randn(num_blocks, 2, block_size, num_kv_heads, head_size, generator=g,
                     device=device).to(dtype)
    q = torch.randn(sum(q_lens), num_query_heads, head_size, generator=g, device=device).to(dtype)
    return dict(q=q, kv_cache=kv, query_start_len=qsl.to(device),
                seq_lens=torch.tensor(ctx, dtype=torch.int32, device=device),
                block_tables=block_tables.to(device), max_seqlen_q=max(q_lens), max_seqlen_k=max(ctx))


_STRIDES = ("block_table_stride", "query_stride_0", "query_stride_1", "output_stride_0",
            "output_stride_1", "qq_bias_stride_0", "stride_k_cache_0", "stride_k_cache_1",
            "stride_k_cache_2", "stride_v_cache_0", "stride_v_cache_1", "stride_v_cache_2",
            "stride_ks_blk", "stride_ks_slot", "stride_ks_head", "stride_vs_blk", "stride_vs_slot",
            "stride_vs_head")
_SCALES = ("scale", "q_scale", "k_scale", "v_scale", "out_scale", "softcap")
# Optional pointers that are None for a bf16 Llama and stay so for the whole model.
_NONE_PTRS = ("alibi_slopes_ptr", "qq_bias_ptr", "per_seq_causal_ptr", "mm_prefix_range_ptr",
              "rswa_prefix_lens_ptr", "k_scale_cache_ptr", "v_scale_cache_ptr")


def make_case(device, dtype=torch.bfloat16, num_seqs=16, context=1024, mode="2d",
              num_query_heads=32, num_kv_heads=8, head_size=128, block_size=16, prefill_tokens=0,
              num_warps=4, softcap=0.0, sliding_window=0, seed=0):
    """A Case for kernel_unified_attention (Llama-3-8B shapes by default).

    mode="3d" needs a decode-only batch; its reduce launch is `case.extra["reduce"]` (a Case that must
    run after the attention launch and before `check`), its buffers `case.extra["segm_buffers"]`.
    """
    from jitlab.kernels.case import Case

    assert mode in ("2d", "3d"), mode
    b = _batch(device, dtype, num_seqs, context, num_query_heads, num_kv_heads, head_size,
               block_size, prefill_tokens, seed)
    is_3d = mode == "3d"
    assert not is_3d or b["max_seqlen_q"] == 1, "3D mode is for decode-only batches"
    out = torch.empty_like(b["q"])
    segm = make_segm_buffers(b["q"].shape[0], num_query_heads, head_size, device) if is_3d else None
    scale = 1.0 / math.sqrt(head_size)
    (grid, kw), red = attention_launch(
        b["q"], b["kv_cache"], out, b["query_start_len"], b["seq_lens"], b["block_tables"], scale,
        is_3d=is_3d, segm_buffers=segm, softcap=softcap, sliding_window=sliding_window,
        num_warps=num_warps)

    def reference():
        r = reference_attention(b["q"], b["kv_cache"], b["query_start_len"], b["seq_lens"],
                                b["block_tables"], scale, softcap=softcap,
                                sliding_window=sliding_window)
        return [r]

    tol = 1e-2 if dtype in (torch.float32,) else 2e-2
    common = dict(args=(), outputs=[out], reference=reference, atol=tol, rtol=tol)
    extra = {"batch": b, "scale": scale}
    if red is not None:
        extra["segm_buffers"] = segm
        extra["reduce"] = Case(
            name="reduce_segments", kernel=reduce_segments, grid=red[0], kwargs=red[1],
            strides=("output_stride_0", "output_stride_1", "block_table_stride"),
            scales=("out_scale_inv",),
            fixed_per_model=("output_stride_0", "output_stride_1", "block_table_stride",
                             "out_scale_inv"),
            varying_ints=("num_seqs",), **common)
    return Case(
        name=f"unified_attention_{mode}", kernel=kernel_unified_attention, grid=grid, kwargs=kw,
        strides=_STRIDES, scales=_SCALES, fixed_per_model=_STRIDES + _SCALES + _NONE_PTRS,
        varying_constexprs=("IS_3D", "NUM_SEGMENTS_PER_SEQ", "TILE_SIZE"),
        varying_ints=("num_seqs",), extra=extra, **common)


def make_case_2d(device, dtype=torch.bfloat16, **shape):
    return make_case(device, dtype=dtype, mode="2d", **shape)


def make_case_3d(device, dtype=torch.bfloat16, **shape):
    return make_case(device, dtype=dtype, mode="3d", **shape)
