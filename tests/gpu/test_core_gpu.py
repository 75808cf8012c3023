"""jitcache on a real GPU: bitwise equality with plain Triton, relaxed policies, streams, graphs,
autotune, hooks, threads, memory. Run: PYTHONPATH=. python3 -m pytest tests/gpu"""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch
import triton

import jitlab
from jitlab import AssumptionViolated, CacheLock, LockedMiss, jitcache

from .kernels_gpu import gather_scale, tuned_add

DEV = "cuda"


def same_bits(a, b):
    """Bitwise equality (NaN sentinels included)."""
    return a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def grid(n, block=128):
    return (triton.cdiv(n, block),)


def run_both(k, n, stride=1, alpha=1.5, opt=None, dtype=torch.float32, offset=0, add=0, **opts):
    """Launch plain Triton and the jitcache on the same inputs; return both outputs."""
    base = torch.randn(n * max(stride, 1) + 16, device=DEV).to(dtype)
    x = base[offset:]
    outs = []
    for kern in (gather_scale, k):
        out = torch.full((n + 1,), float("nan"), device=DEV, dtype=dtype)
        kern[grid(n)](x, out, opt, n, stride, alpha, BLOCK=128, ADD=add, **opts)
        outs.append(out)
    torch.cuda.synchronize()
    return outs


FLIPS = [dict(n=1), dict(n=16), dict(n=17), dict(n=4096), dict(stride=1), dict(stride=2), dict(stride=16),
         dict(offset=1), dict(dtype=torch.float16), dict(dtype=torch.float16, offset=1), dict(opt="tensor"),
         dict(alpha=2), dict(num_warps=8), dict(add=1), dict(n=1, stride=1)]


def test_safe_mode_is_bitwise_equal_across_every_flip():
    k = jitcache(gather_scale)
    for flips in [FLIPS, FLIPS[::-1], FLIPS]:
        for f in flips:
            f = dict(f)
            if f.get("opt") == "tensor":
                f["opt"] = torch.randn(f.get("n", 1000) + 1, device=DEV)
            a, b = run_both(k, **{"n": 1000, **f})
            assert same_bits(a, b), f
    c = k.counters()
    assert c["hit"] > 0 and c["fallback"] == 0 and c["miss"] == c["prepare"]


def test_large_int_gets_its_own_entry():
    k = jitcache(gather_scale)
    x = torch.randn(64, device=DEV)
    out = torch.empty(64, device=DEV)
    k[(1,)](x, out, None, 64, 1, 1.0, BLOCK=64, ADD=0)
    # 2**31 as a stride would overflow an i32 slot; safe mode keys it as i64 and compiles for it.
    k[(0,)](x, out, None, 64, 2**31, 1.0, BLOCK=64, ADD=0)
    assert k.counters()["prepare"] == 2


@pytest.mark.parametrize("policy, change, match", [
    (dict(check_specialization=["x_ptr", "out_ptr", "opt_ptr", "n"]), dict(stride=1), "'stride'.*check_specialization"),
    (dict(check_specialization=["out_ptr", "opt_ptr", "n", "stride"]), dict(offset=1, dtype=torch.float16), "'x_ptr'"),
    (dict(check_keys=["BLOCK"]), dict(add=1), "'ADD'.*check_keys"),
    (dict(assume_const=["alpha"]), dict(alpha=3.0), "'alpha'.*assume_const"),
    (dict(check_specialization=["x_ptr", "out_ptr", "n", "stride"]), dict(opt="tensor"), "'opt_ptr'"),
])
def test_relaxed_mode_with_verify_catches_each_violation(policy, change, match):
    k = jitcache(verify=1, **policy)(gather_scale)
    base = dict(n=1000, stride=2, alpha=1.5, dtype=torch.float16, offset=0, add=0)
    a, b = run_both(k, **base)
    assert same_bits(a, b)
    if change.get("opt") == "tensor":
        change = {**change, "opt": torch.randn(1001, device=DEV, dtype=torch.float16)}
    with pytest.raises(AssumptionViolated, match=match):
        run_both(k, **{**base, **change})


def test_relaxed_without_verify_reuses_the_entry():
    k = jitcache(check_specialization=["x_ptr", "out_ptr", "opt_ptr"])(gather_scale)
    run_both(k, n=1000, stride=2)
    run_both(k, n=17, stride=3)
    assert k.counters()["prepare"] == 1 and k.counters()["hit"] == 1


def test_locked_miss_raises_and_hits_still_work():
    lock = CacheLock()
    k = jitcache(cache_lock=lock)(gather_scale)
    run_both(k, n=1000)
    lock.lock()
    a, b = run_both(k, n=999)  # same class
    assert same_bits(a, b)
    with pytest.raises(LockedMiss, match="(?s)gather_scale.*x_ptr: cached tensor torch.float32, got tensor torch.float16"):
        run_both(k, n=1000, dtype=torch.float16)
    assert k.counters()["locked_miss"] == 1


def test_non_default_stream():
    """The launch lands on the current stream: with the default stream held busy by a sleep, a launch
    under torch.cuda.stream(s) completes (and is read back on s) while the default stream still sleeps."""
    k = jitcache(gather_scale)
    n = 1 << 20
    x = torch.randn(n, device=DEV)
    out = torch.zeros_like(x)
    k[grid(n)](x, out, None, n, 1, 2.0, BLOCK=128, ADD=0)  # prepare on the default stream
    out.zero_()
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    host = torch.empty(n, dtype=x.dtype, pin_memory=True)
    torch.cuda._sleep(400_000_000)  # ~0.2 s on the default stream
    with torch.cuda.stream(s):
        k[grid(n)](x, out, None, n, 1, 2.0, BLOCK=128, ADD=0)
        host.copy_(out, non_blocking=True)
    s.synchronize()
    default_still_busy = not torch.cuda.default_stream().query()
    torch.cuda.synchronize()
    assert default_still_busy, "the stream s waited for the default stream (not a concurrent stream?)"
    assert same_bits(host, (x * 2.0).cpu())


def test_cuda_graph_capture_and_replay():
    k = jitcache(gather_scale)
    x = torch.randn(4096, device=DEV)
    out = torch.zeros_like(x)
    k[grid(4096)](x, out, None, 4096, 1, 2.0, BLOCK=128, ADD=0)  # warm: prepare outside capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        k[grid(4096)](x, out, None, 4096, 1, 3.0, BLOCK=128, ADD=0)
    out.zero_()
    x.copy_(torch.randn_like(x))
    g.replay()
    ref = torch.empty_like(x)
    gather_scale[grid(4096)](x, ref, None, 4096, 1, 3.0, BLOCK=128, ADD=0)
    torch.cuda.synchronize()
    assert same_bits(out, ref)
    assert k.counters()["prepare"] == 1


def test_autotune_stacking():
    k = jitcache(tuned_add)
    for n in (100, 5000, 100, 5000):
        x = torch.randn(n, device=DEV)
        out = torch.empty_like(x)
        k[lambda m: (triton.cdiv(n, m["BLOCK"]),)](x, out, n)
        torch.cuda.synchronize()
        ref = torch.empty_like(x)
        tuned_add[lambda m: (triton.cdiv(n, m["BLOCK"]),)](x, ref, n)
        torch.cuda.synchronize()
        assert same_bits(out, ref)
    assert k.counters()["hit"] > 0


def test_launch_hooks_are_called_with_metadata():
    from triton import knobs

    k = jitcache(gather_scale)
    x = torch.randn(256, device=DEV)
    out = torch.empty_like(x)
    k[grid(256)](x, out, None, 256, 1, 1.0, BLOCK=128, ADD=0)
    seen = []
    hook = lambda md: seen.append(md.get()["name"])  # noqa: E731
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        k[grid(256)](x, out, None, 256, 1, 1.0, BLOCK=128, ADD=0)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert seen == ["gather_scale"]


def test_eight_threads_with_changing_arguments():
    k = jitcache(gather_scale)
    errors = []

    def worker(i):
        try:
            torch.cuda.set_device(0)
            for j in range(50):
                n = [1, 16, 17, 1000][j % 4]
                dtype = [torch.float32, torch.float16][(i + j) % 2]
                a, b = run_both(k, n=n, stride=1 + j % 3, dtype=dtype, offset=j % 2)
                assert same_bits(a, b), (i, j)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    assert not errors, errors[:3]


def test_no_tensor_kept_alive():
    k = jitcache(assume_const=["opt_ptr"])(gather_scale)
    x = torch.randn(256, device=DEV)
    out, opt = torch.empty_like(x), torch.randn(256, device=DEV)
    k[grid(256)](x, out, opt, 256, 1, 1.0, BLOCK=128, ADD=0)
    refs = [weakref.ref(t) for t in (x, out, opt)]
    del x, out, opt
    gc.collect()
    assert all(r() is None for r in refs)


def test_scopes_serve_two_models_with_relaxed_keys():
    k = jitcache(check_keys=[], assume_const=["alpha"])(gather_scale)
    x = torch.randn(512, device=DEV)
    for _ in range(2):
        for name, add, alpha in (("a", 1, 2.0), ("b", 2, 3.0)):
            with jitlab.scope(name):
                out, ref = torch.empty_like(x), torch.empty_like(x)
                k[grid(512)](x, out, None, 512, 1, alpha, BLOCK=128, ADD=add)
                gather_scale[grid(512)](x, ref, None, 512, 1, alpha, BLOCK=128, ADD=add)
                torch.cuda.synchronize()
                assert same_bits(out, ref)
    assert k.counters("a")["prepare"] == 1 and k.counters("b")["prepare"] == 1
