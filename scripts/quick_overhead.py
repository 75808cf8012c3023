"""Quick host-overhead probe used while developing the launch path (the full experiment is
experiments/launch_overhead.py). Prints µs per launch for a few variants."""

import statistics
import sys
import time

import torch
import triton

import jitlab
from jitlab import Policy, jitcache
from jitlab._triton import compiled_launcher
from jitlab.kernels import paged_attention, tiny

N, REPS = 2000, 7


def measure(fn):
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(REPS):
        t0 = time.perf_counter_ns()
        for _ in range(N):
            fn()
        t1 = time.perf_counter_ns()
        torch.cuda.synchronize()
        out.append((t1 - t0) / N / 1000)
    return statistics.median(out)


def variants(case):
    args, kw, grid = case.args, case.kwargs, case.grid
    safe = jitcache(case.kernel)
    relaxed = jitcache(policy=Policy(name="seed", check_keys=case.varying_constexprs,
                                     check_specialization=case.varying_ints,
                                     assume_const=case.fixed_per_model, cache_launch_grid=True))(case.kernel)
    direct = compiled_launcher(case.kernel, grid, args, kw)
    k = case.kernel
    yield "python_nop", lambda: None
    yield "triton", lambda: k[grid](*args, **kw)
    yield "compiled_run", direct
    yield "jitcache_safe", lambda: safe[grid](*args, **kw)
    yield "jitcache_seed", lambda: relaxed[grid](*args, **kw)
    yield "bind_only_safe", lambda: safe._bind(*args, **kw)
    yield "bind_only_seed", lambda: relaxed._bind(*args, **kw)
    yield "stream_only", lambda: torch._C._cuda_getCurrentRawStream(0)
    yield "safe_counters", lambda: safe.counters()


for name, make in [("tiny", lambda: tiny.make_case("cuda")), ("paged_attention_2d", lambda: paged_attention.make_case("cuda"))]:
    case = make()
    case.poison(); case.launch(); torch.cuda.synchronize(); case.check()
    for vname, fn in variants(case):
        if vname == "safe_counters":
            print(f"{name:20s} {vname:16s} {fn()}")
            continue
        case.poison()
        us = measure(fn)
        torch.cuda.synchronize()
        if vname.startswith(("triton", "compiled", "jitcache")):
            case.check()
        print(f"{name:20s} {vname:16s} {us:8.2f} us", flush=True)
