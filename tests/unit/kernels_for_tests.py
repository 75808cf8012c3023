"""Small kernels whose signatures exercise every specialization rule (used by CPU tests)."""

import triton
import triton.language as tl


@triton.jit
def many_kinds(x_ptr, y_ptr, opt_ptr, n, stride, scale, flag, BLOCK: tl.constexpr, MODE: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs * stride, mask=mask)
    tl.store(y_ptr + offs, x * scale, mask=mask)


@triton.jit(do_not_specialize=["n"], do_not_specialize_on_alignment=["stride"])
def no_spec(x_ptr, n, stride, BLOCK: tl.constexpr):
    pass


@triton.jit
def annotated(x_ptr, n: tl.int32, f: tl.float32, BLOCK: tl.constexpr):
    pass


@triton.jit
def add_one(x_ptr, out_ptr, n, BLOCK: tl.constexpr = 128):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + 1, mask=mask)
