"""jitlab's native launcher on a real GPU, against Triton's own launcher (`CompiledKernel.run`).

Each kernel is compiled and loaded by Triton (`kernel.run(..., warmup=True)`, then the `.run`
property), launched once by Triton's launcher and once by the native one on identical inputs, and
the outputs compared bitwise. Run: PYTHONPATH=. python3 -m pytest tests/gpu/test_native_gpu.py -s
"""

from __future__ import annotations

import threading

import pytest
import torch
import triton
import triton.language as tl

from jitlab._triton import native
from jitlab.kernels import many_args as many  # its timing: python -m jitlab.bench.native_launch

DEV = "cuda"


@triton.jit
def mix_kernel(x_ptr, h_ptr, b_ptr, i_ptr, opt_ptr, out_ptr, n, big, scale, BLOCK: tl.constexpr,
               MODE: tl.constexpr):
    """fp32/fp16/bf16/int64 pointers, an optional pointer, i32/i64/fp32 scalars, two constexprs."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m, other=0.0)
    h = tl.load(h_ptr + offs, mask=m, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=m, other=0.0).to(tl.float32)
    i = tl.load(i_ptr + offs, mask=m, other=0)
    y = x * scale + h - b + (i + big).to(tl.float32)
    if opt_ptr is not None:
        y += tl.load(opt_ptr + offs, mask=m, other=0.0)
    if MODE == 1:
        y = y * 2.0
    tl.store(out_ptr + offs, y, mask=m)


@triton.jit
def scalars_kernel(out_i, out_f, flag, a: tl.int8, b: tl.int16, c: tl.int32, d: tl.int64, e: tl.uint8,
                   f: tl.uint16, g: tl.uint32, h: tl.uint64, p: tl.float16, q: tl.bfloat16, r: tl.float32,
                   s: tl.float64, K: tl.constexpr):
    """Every scalar type Triton 3.6 passes, written back as int64 / float64 bits."""
    tl.store(out_i + 0, a.to(tl.int64))
    tl.store(out_i + 1, b.to(tl.int64))
    tl.store(out_i + 2, c.to(tl.int64))
    tl.store(out_i + 3, d)
    tl.store(out_i + 4, e.to(tl.int64))
    tl.store(out_i + 5, f.to(tl.int64))
    tl.store(out_i + 6, g.to(tl.int64))
    tl.store(out_i + 7, h.to(tl.int64, bitcast=True))
    tl.store(out_i + 8, flag.to(tl.int64) + K)
    tl.store(out_f + 0, p.to(tl.float64))
    tl.store(out_f + 1, q.to(tl.float64))
    tl.store(out_f + 2, r.to(tl.float64))
    tl.store(out_f + 3, s)


def same_bits(a, b):
    return a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def load(kernel, args, grid=(1,)):
    """Compile and load through Triton's normal path, as jitlab's adapter does."""
    ck = kernel.run(*args, grid=grid, warmup=True)
    if hasattr(ck, "result"):
        ck = ck.result()
    ck.run  # noqa: B018 - the property loads the binary
    return ck


def triton_launch(ck, g, stream, vals):
    g = tuple(g) + (1,) * (3 - len(g))
    ck.run(g[0], g[1], g[2], stream, ck.function, ck.packed_metadata, None, None, None, *vals)


def native_launch(ck, frozen=None):
    launch, why = native.make_launch(ck, frozen or {}, device=torch.cuda.current_device())
    assert launch is not None, why
    return launch


def stream():
    return torch.cuda.current_stream().cuda_stream


def mix_args(n=1000, opt=True, mode=0, big=2**33 + 7, scale=1.25):
    torch.manual_seed(n)
    x = torch.randn(n, device=DEV)
    h = torch.randn(n, device=DEV, dtype=torch.float16)
    b = torch.randn(n, device=DEV, dtype=torch.bfloat16)
    i = torch.randint(-1000, 1000, (n,), device=DEV, dtype=torch.int64)
    o = torch.randn(n, device=DEV) if opt else None
    out = torch.full((n + 8,), float("nan"), device=DEV)
    return [x, h, b, i, o, out, n, big, scale, 128, mode]


def run_pair(ck, args, grid, frozen=None, native_vals=None):
    """Triton's launcher then the native one, each into a fresh copy of the output (args[5])."""
    outs = []
    for who in ("triton", "native"):
        vals = list(args)
        vals[5] = torch.full_like(args[5], float("nan"))
        if who == "triton":
            triton_launch(ck, grid, stream(), tuple(vals))
        else:
            if native_vals is not None:  # frozen slots: whatever is passed there is ignored
                vals = [native_vals.get(k, v) for k, v in enumerate(vals)]
            native_launch(ck, frozen)(*(tuple(grid) + (1,) * (3 - len(grid))), stream(), tuple(vals))
        outs.append(vals[5])
    torch.cuda.synchronize()
    return outs


# -- parameter layout: the part that is checked only here ------------------------------------------------
def test_driver_param_sizes_match_plan(capsys):
    """cuFuncGetParamInfo (driver 12.4+) on the loaded kernel vs the plan (incl. the 2 trailing
    scratch pointers): make_launch refuses on a mismatch, this shows the numbers."""
    ok, why = native.available()
    assert ok, why
    for kern, args in ((mix_kernel, mix_args()), (mix_kernel, mix_args(opt=False)),
                       (scalars_kernel, scalar_args()), (many.many_args, list(many.make_case(DEV).args))):
        ck = load(kern, args)
        p, reason = native.plan(ck)
        assert p is not None, reason
        got = native.module().param_sizes(ck.function)
        with capsys.disabled():
            print(f"\n[native] {ck.name}: codes={p.codes.decode()} tail={p.n_tail} planned={p.param_sizes} "
                  f"driver={None if got is None else list(got)} ptx={native.ptx_param_sizes(ck.asm['ptx'])}")
        assert got is not None, "cuFuncGetParamInfo unavailable or failing (driver < 12.4?): only the PTX was checked"
        assert list(got) == p.param_sizes


# -- bitwise equality ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(), dict(opt=False), dict(mode=1), dict(n=17), dict(n=4096, big=-5),
                                dict(scale=-0.1), dict(n=1)])
def test_mix_kernel_bitwise_equal(kw):
    args = mix_args(**kw)
    ck = load(mix_kernel, args)
    grid = (triton.cdiv(args[6], 128),)
    a, b = run_pair(ck, args, grid)
    assert same_bits(a, b), kw
    assert not torch.isnan(a[: args[6]]).any()


def scalar_args(out_i=None, out_f=None, **over):
    vals = dict(flag=True, a=200, b=-32768, c=-7, d=-(2**62), e=257, f=70000, g=2**32 + 5, h=2**64 - 3,
                p=1.0009765625, q=3.14159, r=2.5, s=1e300)
    vals.update(over)
    out_i = torch.zeros(9, device=DEV, dtype=torch.int64) if out_i is None else out_i
    out_f = torch.zeros(4, device=DEV, dtype=torch.float64) if out_f is None else out_f
    return [out_i, out_f, *vals.values(), 3]


def test_every_scalar_type_bitwise_equal():
    args = scalar_args()
    ck = load(scalars_kernel, args)
    p, _ = native.plan(ck)
    assert p.codes == b"PPBbhiLBHIKeEfdx", p.codes
    res = []
    for launch in (lambda v: triton_launch(ck, (1,), stream(), v),
                   lambda v: native_launch(ck)(1, 1, 1, stream(), v)):
        a = scalar_args()
        launch(tuple(a))
        res.append((a[0], a[1]))
    torch.cuda.synchronize()
    assert same_bits(res[0][0], res[1][0]) and same_bits(res[0][1], res[1][1]), res


@pytest.mark.parametrize("slot,value,exc", [(3, -1, OverflowError), (3, 256, OverflowError),
                                            (5, 2**31, OverflowError), (6, 2**63, OverflowError),
                                            (5, 1.5, TypeError), (10, 1.0, TypeError), (14, "x", TypeError),
                                            (11, 1e6, OverflowError)])
def test_same_errors_as_triton(slot, value, exc):
    """Triton 3.6's PyArg_ParseTuple errors for the same bad values. (fp16 overflow: Triton launches,
    then raises; native raises before launching.)"""
    args = scalar_args()
    ck = load(scalars_kernel, args)
    bad = list(args)
    bad[slot] = value
    with pytest.raises(exc):
        triton_launch(ck, (1,), stream(), tuple(bad))
    with pytest.raises(exc):
        native_launch(ck)(1, 1, 1, stream(), tuple(bad))
    torch.cuda.synchronize()


# -- frozen slots, empty grid, CPU tensors -------------------------------------------------------------------
def test_frozen_slots():
    args = mix_args()
    ck = load(mix_kernel, args)
    grid = (triton.cdiv(args[6], 128),)
    frozen = {0: args[0].data_ptr(), 1: args[1], 7: args[7], 8: args[8], 9: 128}
    junk = {0: None, 1: "junk", 7: "junk", 8: None}
    a, b = run_pair(ck, args, grid, frozen=frozen, native_vals=junk)
    assert same_bits(a, b)


def test_zero_grid_launches_nothing():
    args = mix_args()
    ck = load(mix_kernel, args)
    launch = native_launch(ck)
    for g in ((0, 1, 1), (4, 0, 1), (4, 1, 0)):
        launch(*g, stream(), tuple(args))
        triton_launch(ck, g, stream(), tuple(args))
    torch.cuda.synchronize()
    assert torch.isnan(args[5]).all()


def test_cpu_tensor_is_refused_like_triton():
    args = mix_args()
    ck = load(mix_kernel, args)
    for slot in (0, 3):
        bad = list(args)
        bad[slot] = args[slot].cpu()
        msg = rf"Pointer argument \(at {slot}\) cannot be accessed from Triton \(cpu tensor\?\)"
        with pytest.raises(ValueError, match=msg):
            native_launch(ck)(8, 1, 1, stream(), tuple(bad))
        with pytest.raises(ValueError, match="cannot be accessed from Triton"):
            triton_launch(ck, (8,), stream(), tuple(bad))
    # pinned host memory: is_cuda is False, so the native path asks the driver, as Triton does;
    # both must agree (both launch, or both raise ValueError)
    pinned = list(args)
    pinned[0] = args[0].cpu().pin_memory()
    outcomes = []
    for launch in (lambda v: native_launch(ck)(8, 1, 1, stream(), v), lambda v: triton_launch(ck, (8,), stream(), v)):
        try:
            launch(tuple(pinned))
            outcomes.append("ok")
        except ValueError:
            outcomes.append("ValueError")
    torch.cuda.synchronize()
    assert outcomes[0] == outcomes[1], outcomes


# -- streams, graphs, threads ----------------------------------------------------------------------------------
def test_non_default_stream_orders_with_that_stream():
    args = mix_args()
    ck = load(mix_kernel, args)
    launch = native_launch(ck)
    ref = run_pair(ck, args, (8,))[0]
    src = args[0].clone()
    args[0].zero_()
    args[5].fill_(float("nan"))
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        torch.cuda._sleep(20_000_000)  # if the kernel ran on another stream it would read zeros
        args[0].copy_(src)
        launch(8, 1, 1, s.cuda_stream, tuple(args))
    torch.cuda.synchronize()
    assert same_bits(args[5], ref)


def test_cuda_graph_capture():
    args = mix_args()
    ck = load(mix_kernel, args)
    launch = native_launch(ck)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up outside capture, as torch recommends
        launch(8, 1, 1, s.cuda_stream, tuple(args))
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        launch(8, 1, 1, stream(), tuple(args))
    args[0].mul_(3.0)
    args[5].fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    got = args[5].clone()
    ref = run_pair(ck, args, (8,))[0]
    assert same_bits(got, ref)


def test_launch_from_a_fresh_thread():
    """A new thread has no current CUDA context: the launcher retains the device's primary context."""
    args = mix_args()
    ck = load(mix_kernel, args)
    launch = native_launch(ck)
    ref = run_pair(ck, args, (8,))[0]
    args[5].fill_(float("nan"))
    torch.cuda.synchronize()
    errors = []
    st = stream()

    def work():
        try:
            launch(8, 1, 1, st, tuple(args))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    torch.cuda.synchronize()
    assert not errors, errors
    assert same_bits(args[5], ref)
