"""Llama-layer elementwise kernels for the end-to-end decode loop: RMSNorm (optionally fused with the
residual add), neox-style RoPE (in place on q and k) and SiLU-and-mul.

Each kernel has a torch reference, a `make_case`, and a plain launch helper taking `kernel=` so a caller
can substitute a jitcache-wrapped kernel (`kernel[grid](...)` must launch like the raw one). Helpers
launch with keyword arguments, like vLLM, and only use the tensors' strides (rows may be views).
Math is fp32 inside the kernels; shapes are `[num_tokens, hidden]` (one program per token row, or per
row tile for SiLU-and-mul, whose rows are long).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl

from jitlab.kernels.case import Case


@dataclass
class InPlaceCase(Case):
    """A case whose kernel reads and rewrites some outputs in place (RoPE's q/k, the fused residual).
    Poisoning those would destroy the kernel's input, so `poison()` resets them to their pristine
    values instead (an element the kernel fails to write then keeps its input value, which differs
    from the reference) and poisons the other outputs as usual."""

    originals: list = field(default_factory=list)  # (tensor, pristine copy) pairs

    def poison(self) -> None:
        in_place = {id(t) for t, _ in self.originals}
        for t in self.outputs:
            if id(t) not in in_place:
                t.fill_(float("nan") if t.is_floating_point() else -1)
        for t, pristine in self.originals:
            t.copy_(pristine)


def _default_dtype(device) -> torch.dtype:
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def _warps(block: int) -> int:
    return max(1, min(16, block // 256))


# --------------------------------------------------------------------------------------------- RMSNorm

@triton.jit
def rms_norm_kernel(
    x_ptr,  # [num_tokens, N]
    weight_ptr,  # [N]
    out_ptr,  # [num_tokens, N]
    residual_ptr,  # [num_tokens, N] or None; with HAS_RESIDUAL: residual += x, out = norm(residual)
    x_row_stride,
    out_row_stride,
    residual_row_stride,
    N,
    eps: tl.float32,
    BLOCK_N: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    live = cols < N
    h = tl.load(x_ptr + row * x_row_stride + cols, mask=live, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        res_row = residual_ptr + row * residual_row_stride + cols
        h += tl.load(res_row, mask=live, other=0.0).to(tl.float32)
        tl.store(res_row, h.to(residual_ptr.dtype.element_ty), mask=live)
        # normalize what was stored, as the unfused add-then-norm in the model's dtype would
        h = h.to(residual_ptr.dtype.element_ty).to(tl.float32)
    inv_rms = 1.0 / tl.sqrt(tl.sum(h * h, axis=0) / N + eps)
    w = tl.load(weight_ptr + cols, mask=live, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * out_row_stride + cols, (h * inv_rms * w).to(out_ptr.dtype.element_ty), mask=live)


def rms_norm_reference(x, w, eps, residual=None):
    """Returns `out` (and the updated residual when `residual` is given), without touching inputs."""
    h = x.float()
    if residual is not None:
        h = (h + residual.float()).to(residual.dtype).float()
    out = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)
    return out if residual is None else (out, h.to(residual.dtype))


def _rms_norm_launch(x, w, eps, out, residual):
    n = x.shape[-1]
    block = triton.next_power_of_2(n)
    grid = (x.shape[0],)
    kwargs = dict(
        x_ptr=x, weight_ptr=w, out_ptr=out, residual_ptr=residual,
        x_row_stride=x.stride(0), out_row_stride=out.stride(0),
        # without a residual pass x's stride (unused), so the argument is the same in both variants
        residual_row_stride=(x if residual is None else residual).stride(0),
        N=n, eps=float(eps), BLOCK_N=block, HAS_RESIDUAL=residual is not None, num_warps=_warps(block),
    )
    return grid, kwargs


def rms_norm(x, w, eps, out=None, kernel=None, residual=None):
    """RMSNorm over the last dim of 2-D `x`. With `residual`: `residual += x` in place and the norm is
    of the sum; returns `(out, residual)` then, else `out`."""
    assert x.dim() == 2 and x.stride(-1) == 1
    out = torch.empty_like(x) if out is None else out
    grid, kwargs = _rms_norm_launch(x, w, eps, out, residual)
    (kernel or rms_norm_kernel)[grid](**kwargs)
    return out if residual is None else (out, residual)


def make_rms_norm_case(device, dtype=None, num_tokens: int = 16, hidden: int = 4096, *,
                       residual: bool = True, eps: float = 1e-5, seed: int = 0) -> Case:
    dtype = dtype or _default_dtype(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_tokens, hidden, generator=gen).to(dtype).to(device)
    w = (1 + 0.1 * torch.randn(hidden, generator=gen)).to(dtype).to(device)
    res = torch.randn(num_tokens, hidden, generator=gen).to(dtype).to(device) if residual else None
    res0 = res.clone() if residual else None
    out = torch.empty_like(x)
    grid, kwargs = _rms_norm_launch(x, w, eps, out, res)

    def expected():
        r = rms_norm_reference(x, w, eps, res0)
        return list(r) if residual else [r]

    strides = ("x_row_stride", "out_row_stride", "residual_row_stride")
    return InPlaceCase(
        name="rms_norm", kernel=rms_norm_kernel, grid=grid, args=(), kwargs=kwargs,
        outputs=[out, res] if residual else [out],
        reference=expected,
        # a Llama step launches this kernel with and without a residual (HAS_RESIDUAL, residual_ptr vary)
        strides=strides, scales=("eps",), fixed_per_model=strides + ("N", "eps"),
        varying_constexprs=("HAS_RESIDUAL",),
        atol=2e-2 if dtype.itemsize <= 2 else 1e-4, rtol=2e-2 if dtype.itemsize <= 2 else 1e-4,
        originals=[(res, res0)] if residual else [],
    )


# ------------------------------------------------------------------------------------------------ RoPE

@triton.jit
def rope_neox_kernel(
    q_ptr,  # [num_tokens, num_q_heads, head_size] (rows may be strided)
    k_ptr,  # [num_tokens, num_kv_heads, head_size]
    positions_ptr,  # [num_tokens] int64
    cos_sin_ptr,  # [max_position, rot_dim]: cos in [:rot_dim/2], sin in [rot_dim/2:]
    q_token_stride,
    q_head_stride,
    k_token_stride,
    k_head_stride,
    cos_sin_stride,
    NUM_Q_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HALF_ROT: tl.constexpr,  # rot_dim // 2 (dims [0, rot_dim) rotate; the rest are left as they are)
    BLOCK_H: tl.constexpr,  # next_pow2(max(NUM_Q_HEADS, NUM_KV_HEADS))
    BLOCK_R: tl.constexpr,  # next_pow2(HALF_ROT)
):
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions_ptr + token).to(tl.int64)
    r = tl.arange(0, BLOCK_R)
    r_ok = r < HALF_ROT
    cos = tl.load(cos_sin_ptr + pos * cos_sin_stride + r, mask=r_ok, other=0.0).to(tl.float32)[None, :]
    sin = tl.load(cos_sin_ptr + pos * cos_sin_stride + HALF_ROT + r, mask=r_ok, other=0.0).to(tl.float32)[None, :]
    h = tl.arange(0, BLOCK_H)

    # q: first half x1, second half x2 -> (x1 cos - x2 sin, x2 cos + x1 sin)
    q_mask = (h < NUM_Q_HEADS)[:, None] & r_ok[None, :]
    q1_ptr = q_ptr + token * q_token_stride + h[:, None] * q_head_stride + r[None, :]
    q1 = tl.load(q1_ptr, mask=q_mask, other=0.0).to(tl.float32)
    q2 = tl.load(q1_ptr + HALF_ROT, mask=q_mask, other=0.0).to(tl.float32)
    tl.store(q1_ptr, (q1 * cos - q2 * sin).to(q_ptr.dtype.element_ty), mask=q_mask)
    tl.store(q1_ptr + HALF_ROT, (q2 * cos + q1 * sin).to(q_ptr.dtype.element_ty), mask=q_mask)

    k_mask = (h < NUM_KV_HEADS)[:, None] & r_ok[None, :]
    k1_ptr = k_ptr + token * k_token_stride + h[:, None] * k_head_stride + r[None, :]
    k1 = tl.load(k1_ptr, mask=k_mask, other=0.0).to(tl.float32)
    k2 = tl.load(k1_ptr + HALF_ROT, mask=k_mask, other=0.0).to(tl.float32)
    tl.store(k1_ptr, (k1 * cos - k2 * sin).to(k_ptr.dtype.element_ty), mask=k_mask)
    tl.store(k1_ptr + HALF_ROT, (k2 * cos + k1 * sin).to(k_ptr.dtype.element_ty), mask=k_mask)


def rope_cos_sin_cache(max_position: int, rot_dim: int, base: float = 500000.0, device="cpu",
                       dtype=torch.float32) -> torch.Tensor:
    """`[max_position, rot_dim]` table: cos of the angles, then sin (vLLM's cos_sin_cache format)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim))
    angles = torch.arange(max_position, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1).to(dtype).to(device)


def rope_reference(q, k, positions, cos_sin):
    """Rotated copies of q and k (`[tokens, heads, head_size]`), inputs untouched."""
    half = cos_sin.shape[1] // 2
    cs = cos_sin[positions.long()].float()
    cos, sin = cs[:, None, :half], cs[:, None, half:]

    def rot(t):
        t32 = t.float().clone()
        x1, x2 = t32[..., :half].clone(), t32[..., half:2 * half].clone()
        t32[..., :half] = x1 * cos - x2 * sin
        t32[..., half:2 * half] = x2 * cos + x1 * sin
        return t32.to(t.dtype)

    return rot(q), rot(k)


def _rope_launch(q, k, positions, cos_sin):
    assert q.dim() == 3 and k.dim() == 3 and q.stride(-1) == 1 and k.stride(-1) == 1
    assert cos_sin.stride(-1) == 1 and cos_sin.shape[1] % 2 == 0 and cos_sin.shape[1] <= q.shape[2]
    half = cos_sin.shape[1] // 2
    grid = (q.shape[0],)
    block_h = triton.next_power_of_2(max(q.shape[1], k.shape[1]))
    kwargs = dict(
        q_ptr=q, k_ptr=k, positions_ptr=positions, cos_sin_ptr=cos_sin,
        q_token_stride=q.stride(0), q_head_stride=q.stride(1),
        k_token_stride=k.stride(0), k_head_stride=k.stride(1), cos_sin_stride=cos_sin.stride(0),
        NUM_Q_HEADS=q.shape[1], NUM_KV_HEADS=k.shape[1], HALF_ROT=half,
        BLOCK_H=block_h, BLOCK_R=triton.next_power_of_2(half),
        num_warps=_warps(block_h * triton.next_power_of_2(half)),
    )
    return grid, kwargs


def rope_(q, k, positions, cos_sin, kernel=None):
    """Neox-style rotary embedding applied in place to `q` `[tokens, q_heads, head_size]` and `k`
    `[tokens, kv_heads, head_size]` (views into a fused qkv tensor are fine). Returns (q, k)."""
    grid, kwargs = _rope_launch(q, k, positions, cos_sin)
    (kernel or rope_neox_kernel)[grid](**kwargs)
    return q, k


def make_rope_case(device, dtype=None, num_tokens: int = 16, num_q_heads: int = 32, num_kv_heads: int = 8,
                   head_size: int = 128, max_position: int = 8192, *, rot_dim: int | None = None,
                   seed: int = 0) -> Case:
    """q and k are strided views of a fused qkv tensor, as in a Llama layer."""
    dtype = dtype or _default_dtype(device)
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(num_tokens, (num_q_heads + 2 * num_kv_heads) * head_size, generator=gen).to(dtype).to(device)
    q_end, k_end = num_q_heads * head_size, (num_q_heads + num_kv_heads) * head_size
    q = qkv[:, :q_end].view(num_tokens, num_q_heads, head_size)
    k = qkv[:, q_end:k_end].view(num_tokens, num_kv_heads, head_size)
    positions = torch.randint(0, max_position, (num_tokens,), generator=gen).to(device)
    cos_sin = rope_cos_sin_cache(max_position, rot_dim or head_size, device=device)
    q0, k0 = q.clone(), k.clone()
    grid, kwargs = _rope_launch(q, k, positions, cos_sin)

    strides = ("q_token_stride", "q_head_stride", "k_token_stride", "k_head_stride", "cos_sin_stride")
    return InPlaceCase(
        name="rope", kernel=rope_neox_kernel, grid=grid, args=(), kwargs=kwargs,
        outputs=[q, k],  # rotated in place; poison() restores the unrotated inputs
        reference=lambda: list(rope_reference(q0, k0, positions, cos_sin)),
        # one cos/sin table is shared by all layers
        strides=strides, fixed_per_model=strides + ("cos_sin_ptr",),
        atol=2e-2 if dtype.itemsize <= 2 else 1e-4, rtol=2e-2 if dtype.itemsize <= 2 else 1e-4,
        originals=[(q, q0), (k, k0)],
    )


# ------------------------------------------------------------------------------------------ SiLU-and-mul

@triton.jit
def silu_and_mul_kernel(
    x_ptr,  # [num_tokens, 2 * d]: gate in [:d], up in [d:]
    out_ptr,  # [num_tokens, d]
    x_row_stride,
    out_row_stride,
    d,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = cols < d
    gate = tl.load(x_ptr + row * x_row_stride + cols, mask=live, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * x_row_stride + d + cols, mask=live, other=0.0).to(tl.float32)
    act = gate / (1.0 + tl.exp(-gate))
    tl.store(out_ptr + row * out_row_stride + cols, (act * up).to(out_ptr.dtype.element_ty), mask=live)


def silu_and_mul_reference(x):
    d = x.shape[-1] // 2
    return (torch.nn.functional.silu(x[..., :d].float()) * x[..., d:].float()).to(x.dtype)


SILU_BLOCK = 1024


def _silu_launch(x, out, block):
    d = x.shape[-1] // 2
    grid = (x.shape[0], triton.cdiv(d, block))
    kwargs = dict(x_ptr=x, out_ptr=out, x_row_stride=x.stride(0), out_row_stride=out.stride(0), d=d,
                  BLOCK=block, num_warps=_warps(block))
    return grid, kwargs


def silu_and_mul(x, out=None, kernel=None, block: int = SILU_BLOCK):
    """`silu(x[:, :d]) * x[:, d:]` for 2-D `x` `[tokens, 2 * d]`."""
    assert x.dim() == 2 and x.stride(-1) == 1 and x.shape[-1] % 2 == 0
    if out is None:
        out = torch.empty(x.shape[0], x.shape[1] // 2, dtype=x.dtype, device=x.device)
    grid, kwargs = _silu_launch(x, out, block)
    (kernel or silu_and_mul_kernel)[grid](**kwargs)
    return out


def make_silu_and_mul_case(device, dtype=None, num_tokens: int = 16, intermediate: int = 14336, *,
                           block: int = SILU_BLOCK, seed: int = 0) -> Case:
    dtype = dtype or _default_dtype(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_tokens, 2 * intermediate, generator=gen).to(dtype).to(device)
    out = torch.empty(num_tokens, intermediate, dtype=dtype, device=device)
    grid, kwargs = _silu_launch(x, out, block)
    strides = ("x_row_stride", "out_row_stride")
    return Case(
        name="silu_and_mul", kernel=silu_and_mul_kernel, grid=grid, args=(), kwargs=kwargs,
        outputs=[out], reference=lambda: [silu_and_mul_reference(x)],
        strides=strides, fixed_per_model=strides + ("d",),
        atol=2e-2 if dtype.itemsize <= 2 else 1e-5, rtol=2e-2 if dtype.itemsize <= 2 else 1e-5,
    )


make_case = make_rms_norm_case  # the module's default case (the most-launched of the three)
