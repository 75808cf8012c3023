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


@triton.heuristics({"BLOCK": lambda a: triton.next_power_of_2(a["n"])})
@triton.jit
def heuristic_fill(out_ptr, n, value, BLOCK: tl.constexpr):
    """out[:n] = value; a binary compiled for a larger BLOCK would write past n (the two-wrapper bug)."""
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, value, mask=offs < n)


@triton.autotune(configs=[triton.Config({"BLOCK": 32}, num_warps=1), triton.Config({"BLOCK": 128}, num_warps=4)],
                 key=["n"])
@triton.jit
def tuned_fill(out_ptr, n, value, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, value, mask=offs < n)


GLOBAL_ADD = tl.constexpr(1)


@triton.jit
def add_global(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) + GLOBAL_ADD, mask=offs < n)


@triton.jit
def asserting(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """Writes x + 1; with debug on, Triton compiles the device assert in (x must be below 1e6)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.device_assert(x < 1e6, "x too large")
    tl.store(out_ptr + offs, x + 1, mask=offs < n)


@triton.jit
def shadowing(_stream, _scope, _device, _miss, _hooks, _table, _jl_grid, _jl_key, launch, BLOCK: tl.constexpr):
    """out (= _jl_grid) [i] = _stream[i] * _scope + _device: parameter names the hit path uses itself."""
    offs = tl.arange(0, BLOCK)
    tl.store(_jl_grid + offs, tl.load(_stream + offs) * _scope + _device)


@triton.jit
def one_param(p):
    tl.store(p + tl.arange(0, 16), 7.0)


@triton.jit
def tuple_scale(x_ptr, out_ptr, SHAPE: tl.constexpr, F: tl.constexpr):
    offs = tl.arange(0, 16)
    tl.store(out_ptr + offs, tl.load(x_ptr + offs) * SHAPE[0] + F)
