"""Paged-attention decode, 2D grid, in the argument shape of vLLM PR #16606's `kernel_paged_attention_2d`.

Original implementation; only the signature (names, order, 26 runtime arguments + 10 constexprs) and
the cache layouts follow the PR, because the launch-overhead experiments are about that signature:

- query/output: `[num_tokens, num_query_heads, head_size]` (decode: one token per sequence);
- key cache:    `[num_blocks, num_kv_heads, head_size // x, block_size, x]` (the pre-#16828 layout);
- value cache:  `[num_blocks, num_kv_heads, head_size, block_size]`;
- grid: the fixed `(4096, num_kv_heads)` of the PR (so a launch cache can keep the grid); programs
  with `program_id(0) >= num_seqs` exit at once.

One program handles one (sequence, kv head) pair and all `num_queries_per_kv` query heads sharing that
kv head (GQA), padded to at least 16 rows so both products are `tl.dot`s. Online softmax in fp32.
`k_scale` is folded into the score scale and `v_scale` into the final normalisation, so a non-fp8
cache pays nothing for them.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from jitlab.kernels.case import Case

GRID_SEQS = 4096  # the PR's fixed first grid dimension (max sequences per launch)

STRIDES = (
    "block_table_stride", "query_stride_0", "query_stride_1", "output_stride_0", "output_stride_1",
    "stride_k_cache_0", "stride_k_cache_1", "stride_k_cache_2", "stride_k_cache_3", "stride_k_cache_4",
    "stride_v_cache_0", "stride_v_cache_1", "stride_v_cache_2", "stride_v_cache_3",
)
SCALES = ("scale", "k_scale", "v_scale")

# The jitcache options PR #16606 put on this kernel (IBM/triton-dejavu `jitcache` decorator):
# three constexprs in the key, scales and most strides frozen, launch grid cached.
SEED_JITCACHE = dict(
    check_keys=("USE_ALIBI_SLOPES", "SLIDING_WINDOW", "filter_by_query_len"),
    assume_const=("scale", "k_scale", "v_scale", "query_stride_1", "output_stride_1",
                  "stride_k_cache_0", "stride_k_cache_1", "stride_k_cache_2", "stride_k_cache_4",
                  "stride_v_cache_0", "stride_v_cache_1", "stride_v_cache_2"),
    cache_launch_grid=True,
)


@triton.jit
def kernel_paged_attention_2d(
    output_ptr,  # [num_tokens, num_query_heads, head_size]
    query_ptr,  # [num_tokens, num_query_heads, head_size]
    key_cache_ptr,  # [num_blocks, num_kv_heads, head_size // x, block_size, x]
    value_cache_ptr,  # [num_blocks, num_kv_heads, head_size, block_size]
    block_tables_ptr,  # [num_seqs, max_blocks_per_seq] int32
    seq_lens_ptr,  # [num_seqs] int32
    alibi_slopes_ptr,  # [num_query_heads] fp32, or None
    scale: tl.float32,
    k_scale: tl.float32,
    v_scale: tl.float32,
    num_query_heads: tl.constexpr,
    num_queries_per_kv: tl.constexpr,
    num_queries_per_kv_padded: tl.constexpr,  # max(16, next_pow2(num_queries_per_kv))
    block_table_stride: tl.int64,
    query_stride_0: tl.int64,
    query_stride_1: tl.int64,
    output_stride_0: tl.int64,
    output_stride_1: tl.int64,
    BLOCK_SIZE: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    HEAD_SIZE_PADDED: tl.constexpr,  # next_pow2(HEAD_SIZE)
    USE_ALIBI_SLOPES: tl.constexpr,
    SLIDING_WINDOW: tl.constexpr,  # 0: no window
    x: tl.constexpr,  # key-cache vector width (16 bytes / element size)
    stride_k_cache_0: tl.int64,
    stride_k_cache_1: tl.int64,
    stride_k_cache_2: tl.int64,
    stride_k_cache_3: tl.int64,
    stride_k_cache_4: tl.int64,
    stride_v_cache_0: tl.int64,
    stride_v_cache_1: tl.int64,
    stride_v_cache_2: tl.int64,
    stride_v_cache_3: tl.int64,
    filter_by_query_len: tl.constexpr,  # skip sequences whose query length is not 1 (mixed batches)
    query_start_len_ptr,  # [num_seqs + 1] int32, or None when not filtering
    num_seqs: tl.int32,
):
    seq_idx = tl.program_id(0)
    if seq_idx >= num_seqs:
        return
    kv_head = tl.program_id(1)

    if filter_by_query_len:
        tok_begin = tl.load(query_start_len_ptr + seq_idx)
        tok_end = tl.load(query_start_len_ptr + seq_idx + 1)
        if tok_end - tok_begin > 1:  # a prefill chunk: another kernel handles it
            return
        token = tok_begin.to(tl.int64)
    else:
        token = seq_idx.to(tl.int64)

    rows = tl.arange(0, num_queries_per_kv_padded)
    row_ok = rows < num_queries_per_kv
    heads = kv_head * num_queries_per_kv + rows
    dims = tl.arange(0, HEAD_SIZE_PADDED)
    dim_ok = dims < HEAD_SIZE
    slots = tl.arange(0, BLOCK_SIZE)

    q = tl.load(query_ptr + token * query_stride_0 + heads[:, None] * query_stride_1 + dims[None, :],
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)  # [R, D]

    seq_len = tl.load(seq_lens_ptr + seq_idx)
    last_pos = seq_len - 1
    qk_scale = scale * k_scale
    if USE_ALIBI_SLOPES:
        slopes = tl.load(alibi_slopes_ptr + heads, mask=row_ok, other=0.0)

    first_block = 0
    if SLIDING_WINDOW > 0:
        # blocks entirely before the window contribute nothing; start at the one holding the first
        # visible key, so every visited block has a visible key and the running max stays finite
        first_block = tl.maximum(seq_len - SLIDING_WINDOW, 0) // BLOCK_SIZE
    end_block = tl.cdiv(seq_len, BLOCK_SIZE)

    # tile offsets inside one (physical block, kv head)
    k_tile = ((dims[:, None] // x) * stride_k_cache_2 + slots[None, :] * stride_k_cache_3
              + (dims[:, None] % x) * stride_k_cache_4)  # [D, BS]
    v_tile = dims[None, :] * stride_v_cache_2 + slots[:, None] * stride_v_cache_3  # [BS, D]
    k_head = key_cache_ptr + kv_head * stride_k_cache_1
    v_head = value_cache_ptr + kv_head * stride_v_cache_1
    table = block_tables_ptr + seq_idx.to(tl.int64) * block_table_stride

    run_max = tl.full([num_queries_per_kv_padded], float("-inf"), tl.float32)
    run_sum = tl.zeros([num_queries_per_kv_padded], tl.float32)
    acc = tl.zeros([num_queries_per_kv_padded, HEAD_SIZE_PADDED], tl.float32)

    for j in range(first_block, end_block):
        block = tl.load(table + j).to(tl.int64)
        pos = j * BLOCK_SIZE + slots
        visible = pos < seq_len
        if SLIDING_WINDOW > 0:
            visible = visible & (last_pos - pos < SLIDING_WINDOW)
        k = tl.load(k_head + block * stride_k_cache_0 + k_tile, mask=dim_ok[:, None], other=0.0)
        # slots past the end are never written: mask them so garbage (even NaN) cannot reach P @ V
        v = tl.load(v_head + block * stride_v_cache_0 + v_tile,
                    mask=visible[:, None] & dim_ok[None, :], other=0.0)
        s = tl.dot(q, k.to(q.dtype)) * qk_scale  # [R, BS] fp32
        if USE_ALIBI_SLOPES:
            s += slopes[:, None] * (pos - last_pos).to(tl.float32)[None, :]
        s = tl.where(visible[None, :], s, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(s, axis=1))
        decay = tl.exp(run_max - new_max)
        p = tl.exp(s - new_max[:, None])
        run_sum = run_sum * decay + tl.sum(p, axis=1)
        acc = acc * decay[:, None] + tl.dot(p.to(q.dtype), v.to(q.dtype))
        run_max = new_max

    out = acc * (v_scale / run_sum)[:, None]
    tl.store(output_ptr + token * output_stride_0 + heads[:, None] * output_stride_1 + dims[None, :],
             out.to(output_ptr.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])


def reference(query, key_cache, value_cache, block_tables, seq_lens, scale, k_scale=1.0, v_scale=1.0,
              alibi_slopes=None, sliding_window=0, query_start_len=None):
    """Plain fp32 torch attention over the gathered blocks. Returns `[num_tokens, heads, head_size]`
    fp32; rows of skipped (query length != 1) sequences are NaN, as the kernel leaves them unwritten
    (and the checked launch poisons them)."""
    num_kv_heads, block_size = key_cache.shape[1], key_cache.shape[3]
    num_q_heads, head_size = query.shape[1], query.shape[2]
    group = num_q_heads // num_kv_heads
    out = torch.full(query.shape, float("nan"), dtype=torch.float32, device=query.device)
    for i, seq_len in enumerate(seq_lens.tolist()):
        if query_start_len is None:
            token = i
        else:
            begin, end = query_start_len[i].item(), query_start_len[i + 1].item()
            if end - begin > 1:
                continue
            token = begin
        blocks = block_tables[i, : -(-seq_len // block_size)].long()
        k = key_cache[blocks].float().permute(0, 3, 1, 2, 4).reshape(-1, num_kv_heads, head_size)[:seq_len]
        v = value_cache[blocks].float().permute(0, 3, 1, 2).reshape(-1, num_kv_heads, head_size)[:seq_len]
        k = k.repeat_interleave(group, dim=1) * k_scale  # [L, H, D]
        v = v.repeat_interleave(group, dim=1) * v_scale
        s = torch.einsum("hd,lhd->hl", query[token].float(), k) * scale
        pos = torch.arange(seq_len, device=query.device)
        if alibi_slopes is not None:
            s = s + alibi_slopes.float()[:, None] * (pos - (seq_len - 1)).float()[None, :]
        if sliding_window > 0:
            s = s.masked_fill(((seq_len - 1) - pos >= sliding_window)[None, :], float("-inf"))
        out[token] = torch.einsum("hl,lhd->hd", torch.softmax(s, dim=-1), v)
    return out


def alibi_slopes_for(num_heads: int) -> torch.Tensor:
    """The usual geometric ALiBi slopes (power-of-two head counts)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)], dtype=torch.float32)


def make_case(device, dtype=None, num_seqs: int = 16, context: int = 1024, num_query_heads: int = 32,
              num_kv_heads: int = 8, head_size: int = 128, block_size: int = 16, *,
              seq_lens: list[int] | None = None, use_alibi: bool = False, sliding_window: int = 0,
              filter_by_query_len: bool = False, k_scale: float = 1.0, v_scale: float = 1.0,
              spare_blocks: int = 8, nan_fill: bool = True, seed: int = 0) -> Case:
    """One decode step: `num_seqs` sequences of up to `context` tokens (the first is exactly
    `context`, the rest spread over [context/2, context]); blocks shuffled over the cache.
    `nan_fill` puts NaN in every cache slot no sequence owns, so a kernel that reads past the end
    of a sequence fails the check instead of passing by luck."""
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    assert num_query_heads % num_kv_heads == 0 and num_seqs <= GRID_SEQS
    gen = torch.Generator().manual_seed(seed)
    if seq_lens is None:
        lo = max(1, context // 2)
        seq_lens = torch.randint(lo, context + 1, (num_seqs,), generator=gen).tolist()
        seq_lens[0] = context
    assert len(seq_lens) == num_seqs and min(seq_lens) >= 1
    blocks_per_seq = [-(-n // block_size) for n in seq_lens]
    max_blocks = max(blocks_per_seq)
    num_blocks = sum(blocks_per_seq) + spare_blocks
    x = max(1, 16 // torch.empty((), dtype=dtype).element_size())
    assert head_size % x == 0

    perm = torch.randperm(num_blocks, generator=gen)
    block_tables = torch.zeros(num_seqs, max_blocks, dtype=torch.int32)
    used, start = [], 0
    for i, nb in enumerate(blocks_per_seq):
        block_tables[i, :nb] = perm[start:start + nb].to(torch.int32)
        used.append(perm[start:start + nb])
        start += nb

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    key_cache = randn(num_blocks, num_kv_heads, head_size // x, block_size, x)
    value_cache = randn(num_blocks, num_kv_heads, head_size, block_size)
    if nan_fill and dtype.is_floating_point and dtype.itemsize > 1:
        owned = torch.zeros(num_blocks, block_size, dtype=torch.bool)
        for blocks, n in zip(used, seq_lens):
            for b_i, b in enumerate(blocks.tolist()):
                owned[b, : min(block_size, n - b_i * block_size)] = True
        key_cache.masked_fill_(~owned[:, None, None, :, None], float("nan"))
        value_cache.masked_fill_(~owned[:, None, None, :], float("nan"))
    query = randn(num_seqs, num_query_heads, head_size)

    key_cache, value_cache, query, block_tables = (t.to(device) for t in (key_cache, value_cache, query, block_tables))
    seq_lens_t = torch.tensor(seq_lens, dtype=torch.int32, device=device)
    output = torch.empty_like(query)
    alibi = alibi_slopes_for(num_query_heads).to(device) if use_alibi else None
    qsl = torch.arange(num_seqs + 1, dtype=torch.int32, device=device) if filter_by_query_len else None
    group = num_query_heads // num_kv_heads
    scale = 1.0 / math.sqrt(head_size)

    kwargs = dict(
        output_ptr=output, query_ptr=query, key_cache_ptr=key_cache, value_cache_ptr=value_cache,
        block_tables_ptr=block_tables, seq_lens_ptr=seq_lens_t, alibi_slopes_ptr=alibi,
        scale=scale, k_scale=float(k_scale), v_scale=float(v_scale),
        num_query_heads=num_query_heads, num_queries_per_kv=group,
        num_queries_per_kv_padded=max(16, triton.next_power_of_2(group)),
        block_table_stride=block_tables.stride(0),
        query_stride_0=query.stride(0), query_stride_1=query.stride(1),
        output_stride_0=output.stride(0), output_stride_1=output.stride(1),
        BLOCK_SIZE=block_size, HEAD_SIZE=head_size, HEAD_SIZE_PADDED=triton.next_power_of_2(head_size),
        USE_ALIBI_SLOPES=use_alibi, SLIDING_WINDOW=sliding_window, x=x,
        **{f"stride_k_cache_{i}": key_cache.stride(i) for i in range(5)},
        **{f"stride_v_cache_{i}": value_cache.stride(i) for i in range(4)},
        filter_by_query_len=filter_by_query_len, query_start_len_ptr=qsl, num_seqs=num_seqs,
    )
    # None-valued slots never change for a model either (Triton specializes on None-ness)
    none_slots = tuple(n for n in ("alibi_slopes_ptr", "query_start_len_ptr") if kwargs[n] is None)
    return Case(
        name="paged_attention_2d",
        kernel=kernel_paged_attention_2d,
        grid=(GRID_SEQS, num_kv_heads),
        args=(),
        kwargs=kwargs,
        outputs=[output],
        reference=lambda: [reference(query, key_cache, value_cache, block_tables, seq_lens_t, scale,
                                     k_scale, v_scale, alibi, sliding_window, qsl)],
        strides=STRIDES,
        scales=SCALES,
        fixed_per_model=STRIDES + SCALES + none_slots,
        varying_constexprs=SEED_JITCACHE["check_keys"],
        varying_ints=("num_seqs",),
        atol=2e-2 if dtype.itemsize <= 2 else 1e-2,
        rtol=2e-2 if dtype.itemsize <= 2 else 1e-2,
    )
