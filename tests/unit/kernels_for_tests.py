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


# Parameter names the generated hit path must not confuse with its own (issue: safe means safe).
@triton.jit
def shadowing(_stream, _scope, _device, _miss, _hooks, _table, _now, _jl_grid, _jl_key, launch,
              BLOCK: tl.constexpr):
    pass


@triton.jit
def one_param(p):
    pass


@triton.jit
def no_params():
    pass


@triton.jit
def tuple_cx(x_ptr, SHAPE: tl.constexpr, F: tl.constexpr):
    pass


GLOBAL_SCALE = tl.constexpr(2)


@triton.jit
def reads_global(x_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs) * GLOBAL_SCALE)


@triton.jit
def fill(out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, 1.0, mask=offs < n)


heuristic_fill = triton.heuristics({"BLOCK": lambda a: triton.next_power_of_2(a["n"])})(fill)


def autotuned_fill():
    """A one-config autotune stack over `fill` (made on demand: Triton 3.3's Autotuner asks the
    driver for a benchmarker at construction, which fails without a GPU)."""
    return triton.autotune(configs=[triton.Config({"BLOCK": 32}, num_warps=2)], key=["n"])(fill)
