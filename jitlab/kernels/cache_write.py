"""KV-cache write in the argument shape of vLLM's `reshape_and_cache_kernel_flash`.

Original implementation; only the signature (14 runtime arguments: 5 tensors, k/v scale tensors, 7
int strides; 7 constexprs) and the callable grid follow vLLM:

- key/value: `[num_tokens, num_heads, head_size]` (rows may be strided views of a fused qkv tensor);
- flash layout (default): `kv_cache[num_blocks, 2, block_size, num_heads, head_size]`, with
  `key_cache = kv_cache[:, 0]` and `value_cache = kv_cache[:, 1]` (views, so both share strides);
- head-major layout (`USE_HEAD_MAJOR_LAYOUT`): key `[num_blocks, num_heads, head_size // x, block_size, x]`,
  value `[num_blocks, num_heads, head_size, block_size]` (the layout `paged_attention.py` reads);
- `slot_mapping[t] = block * block_size + offset`; a negative slot is a padding token and is skipped;
- grid `lambda meta: (num_tokens, cdiv(num_heads * head_size, meta["TILE_SIZE"]))`: each program copies
  one tile of one token's `num_heads * head_size` values, for both key and value.

Stride meaning per layout (all in elements):

| argument       | flash layout                 | head-major layout                        |
|----------------|------------------------------|------------------------------------------|
| key_stride     | key.stride(0)                | key.stride(0)                            |
| value_stride   | value.stride(0)              | value.stride(0)                          |
| block_stride   | key_cache.stride(0)          | key_cache.stride(0) (== value's)         |
| head_stride    | key_cache.stride(2)          | key_cache.stride(1) (== value's)         |
| dim_stride_k   | key_cache.stride(3)          | key_cache.stride(2) (one x-group)        |
| dim_stride_v   | value_cache.stride(3)        | value_cache.stride(2)                    |
| page_stride    | key_cache.stride(1)          | key_cache.stride(3) (value's slot stride is 1) |

With `FP8_KV_CACHE`, values are divided by `*k_scale` / `*v_scale` (one-element fp32 tensors) and cast
to the cache dtype; otherwise the scale pointers are never read.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from jitlab.kernels.case import Case

STRIDES = ("key_stride", "value_stride", "block_stride", "head_stride", "dim_stride_k", "dim_stride_v",
           "page_stride")
SCALES = ("k_scale", "v_scale")


@triton.jit
def reshape_and_cache_kernel_flash(
    key_ptr,  # [num_tokens, num_heads, head_size]
    value_ptr,  # [num_tokens, num_heads, head_size]
    key_cache_ptr,  # see module docstring
    value_cache_ptr,
    slot_mapping_ptr,  # [num_tokens] int64; < 0: skip
    k_scale,  # [1] fp32 tensor
    v_scale,  # [1] fp32 tensor
    key_stride: tl.int64,
    value_stride: tl.int64,
    block_stride: tl.int64,
    head_stride: tl.int64,
    dim_stride_k: tl.int64,
    dim_stride_v: tl.int64,
    page_stride: tl.int64,
    num_heads: tl.constexpr,
    head_size: tl.constexpr,
    block_size: tl.constexpr,
    x: tl.constexpr,
    USE_HEAD_MAJOR_LAYOUT: tl.constexpr,
    FP8_KV_CACHE: tl.constexpr,
    TILE_SIZE: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot < 0:
        return
    block = slot // block_size
    offset = slot % block_size

    idx = tl.program_id(1) * TILE_SIZE + tl.arange(0, TILE_SIZE)  # flat (head, dim) index
    live = idx < num_heads * head_size
    head = idx // head_size
    dim = idx % head_size

    k = tl.load(key_ptr + token * key_stride + idx, mask=live)
    v = tl.load(value_ptr + token * value_stride + idx, mask=live)

    base = block * block_stride + head * head_stride
    if USE_HEAD_MAJOR_LAYOUT:
        k_dst = base + (dim // x) * dim_stride_k + offset * page_stride + dim % x
        v_dst = base + dim * dim_stride_v + offset
    else:
        k_dst = base + offset * page_stride + dim * dim_stride_k
        v_dst = base + offset * page_stride + dim * dim_stride_v

    if FP8_KV_CACHE:
        k = k.to(tl.float32) / tl.load(k_scale)
        v = v.to(tl.float32) / tl.load(v_scale)
    tl.store(key_cache_ptr + k_dst, k.to(key_cache_ptr.dtype.element_ty), mask=live)
    tl.store(value_cache_ptr + v_dst, v.to(value_cache_ptr.dtype.element_ty), mask=live)


def reference(key, value, key_cache, value_cache, slot_mapping, k_scale=None, v_scale=None,
              head_major=False):
    """Expected (key_cache, value_cache) after the write, computed from copies (inputs untouched)."""
    kc, vc = key_cache.clone(), value_cache.clone()
    fp8 = kc.element_size() == 1
    for t, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        b, o = divmod(slot, kc.shape[3] if head_major else kc.shape[1])
        kt, vt = key[t].float(), value[t].float()
        if fp8:
            kt, vt = kt / k_scale.float(), vt / v_scale.float()
        if head_major:  # kc [nb, nh, hd // x, bs, x], vc [nb, nh, hd, bs]
            nh, hd = kt.shape
            kc[b, :, :, o, :] = kt.view(nh, hd // kc.shape[4], kc.shape[4]).to(kc.dtype)
            vc[b, :, :, o] = vt.to(vc.dtype)
        else:  # [nb, bs, nh, hd]
            kc[b, o] = kt.to(kc.dtype)
            vc[b, o] = vt.to(vc.dtype)
    return [kc, vc]


def make_case(device, dtype=None, num_tokens: int = 16, num_heads: int = 8, head_size: int = 128,
              block_size: int = 16, num_blocks: int = 1024, *, num_q_heads: int | None = None,
              head_major: bool = False, cache_dtype=None, num_padding: int = 0, seed: int = 0) -> Case:
    """One decode step's cache write: `num_tokens` new tokens (the last `num_padding` of them padding,
    slot -1) into distinct random slots. key/value are strided views of a fused qkv tensor
    `[num_tokens, (num_q_heads + 2 * num_heads) * head_size]` like in a Llama layer (num_q_heads
    defaults to 4 * num_heads). `cache_dtype` (e.g. torch.float8_e4m3fn) turns on FP8_KV_CACHE."""
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cache_dtype = cache_dtype or dtype
    fp8 = cache_dtype != dtype and torch.empty((), dtype=cache_dtype).element_size() == 1
    num_q_heads = 4 * num_heads if num_q_heads is None else num_q_heads
    gen = torch.Generator().manual_seed(seed)
    width = (num_q_heads + 2 * num_heads) * head_size
    qkv = torch.randn(num_tokens, width, generator=gen).to(dtype).to(device)
    q_end, k_end = num_q_heads * head_size, (num_q_heads + num_heads) * head_size
    key = qkv[:, q_end:k_end].view(num_tokens, num_heads, head_size)
    value = qkv[:, k_end:].view(num_tokens, num_heads, head_size)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens]
    if num_padding:
        slots[num_tokens - num_padding:] = -1
    slot_mapping = slots.to(torch.int64).to(device)
    k_scale = torch.tensor([0.5 if fp8 else 1.0], dtype=torch.float32, device=device)
    v_scale = torch.tensor([0.25 if fp8 else 1.0], dtype=torch.float32, device=device)
    x = max(1, 16 // torch.empty((), dtype=cache_dtype).element_size())

    if head_major:
        key_cache = torch.zeros(num_blocks, num_heads, head_size // x, block_size, x, dtype=cache_dtype, device=device)
        value_cache = torch.zeros(num_blocks, num_heads, head_size, block_size, dtype=cache_dtype, device=device)
        assert key_cache.stride(0) == value_cache.stride(0) and key_cache.stride(1) == value_cache.stride(1)
        assert key_cache.stride(4) == 1 and value_cache.stride(3) == 1
        strides = dict(block_stride=key_cache.stride(0), head_stride=key_cache.stride(1),
                       dim_stride_k=key_cache.stride(2), dim_stride_v=value_cache.stride(2),
                       page_stride=key_cache.stride(3))
    else:
        kv_cache = torch.zeros(num_blocks, 2, block_size, num_heads, head_size, dtype=cache_dtype, device=device)
        key_cache, value_cache = kv_cache[:, 0], kv_cache[:, 1]
        assert key_cache.stride() == value_cache.stride()
        strides = dict(block_stride=key_cache.stride(0), head_stride=key_cache.stride(2),
                       dim_stride_k=key_cache.stride(3), dim_stride_v=value_cache.stride(3),
                       page_stride=key_cache.stride(1))

    n = num_heads * head_size
    tile = min(2048, triton.next_power_of_2(n))
    kwargs = dict(
        key_ptr=key, value_ptr=value, key_cache_ptr=key_cache, value_cache_ptr=value_cache,
        slot_mapping_ptr=slot_mapping, k_scale=k_scale, v_scale=v_scale,
        key_stride=key.stride(0), value_stride=value.stride(0), **strides,
        num_heads=num_heads, head_size=head_size, block_size=block_size, x=x,
        USE_HEAD_MAJOR_LAYOUT=head_major, FP8_KV_CACHE=fp8, TILE_SIZE=tile,
    )
    if device.type == "cuda":
        kwargs.update(num_warps=16, num_stages=10)  # vLLM's CUDA launch options for this kernel

    # The kernel writes only the slots in slot_mapping, so the checked outputs are one view per written
    # (token, key/value) slot: poisoning them and comparing them checks that every one was written.
    # Padding tokens own no slot; tests compare the whole cache (kwargs["key_cache_ptr"], ...) against
    # `reference` for that.
    live = [(t, s) for t, s in enumerate(slot_mapping.tolist()) if s >= 0]

    def slot_view(cache, slot, is_key):
        b, o = divmod(slot, block_size)
        if not head_major:
            return cache[b, o]  # [num_heads, head_size]
        return cache[b, :, :, o, :] if is_key else cache[b, :, :, o]

    outputs = ([slot_view(key_cache, s, True) for _, s in live]
               + [slot_view(value_cache, s, False) for _, s in live])

    def expected():
        ks, vs = (k_scale.float(), v_scale.float()) if fp8 else (1.0, 1.0)
        keys = [(key[t].float() / ks).to(cache_dtype) for t, _ in live]
        values = [(value[t].float() / vs).to(cache_dtype) for t, _ in live]
        if head_major:
            keys = [k.view(num_heads, head_size // x, x) for k in keys]
        return keys + values

    return Case(
        name="cache_write",
        kernel=reshape_and_cache_kernel_flash,
        grid=lambda meta: (num_tokens, triton.cdiv(num_heads * head_size, meta["TILE_SIZE"])),
        args=(),
        kwargs=kwargs,
        outputs=outputs,
        reference=expected,
        strides=STRIDES,
        scales=SCALES,
        # k_scale/v_scale are per-layer tensors in vLLM (their pointers change layer to layer), so they
        # are not fixed per model; they are only dereferenced when FP8_KV_CACHE.
        fixed_per_model=STRIDES,
        varying_constexprs=(),
        varying_ints=(),
        atol=1e-1 if fp8 else 1e-2,
        rtol=1e-1 if fp8 else 1e-2,
    )
