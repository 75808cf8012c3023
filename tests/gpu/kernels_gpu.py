import triton
import triton.language as tl


@triton.jit
def gather_scale(x_ptr, out_ptr, opt_ptr, n, stride, alpha, BLOCK: tl.constexpr, ADD: tl.constexpr):
    """out[i] = alpha * x[i * stride] (+ opt[i]) (+ ADD): every argument changes the result."""
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs * stride, mask=mask, other=0.0).to(tl.float32)
    y = x * alpha + ADD
    if opt_ptr is not None:
        y += tl.load(opt_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.autotune(configs=[triton.Config({"BLOCK": 64}, num_warps=2), triton.Config({"BLOCK": 256}, num_warps=4)],
                 key=["n"])
@triton.jit
def tuned_add(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) * 2 + 1, mask=mask)
