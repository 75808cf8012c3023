"""Two GPUs in one process: a cache entry prepared on cuda:0 never launches on cuda:1.

Skipped (with a reason) unless two CUDA devices are visible. Run on a 2-GPU machine with NVLink
multicast off (no collectives are used): NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch
import triton

import jitlab
from jitlab import CacheLock, LockedMiss, jitcache

from .kernels_gpu import gather_scale

pytestmark = pytest.mark.skipif(torch.cuda.device_count() < 2,
                                reason=f"needs 2 CUDA GPUs ({torch.cuda.device_count()} visible)")

POLICIES = {
    "safe": {},
    "relaxed": {"check_keys": ["BLOCK"], "check_specialization": ["x_ptr", "out_ptr", "n"],
                "assume_const": ["stride"]},
}


def same_bits(a, b):
    return a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def launch_pair(k, dev, n=4096, alpha=1.5):
    with torch.cuda.device(dev):
        x = torch.randn(n, device=f"cuda:{dev}")
        out, ref = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
        g = (triton.cdiv(n, 128),)
        k[g](x, out, None, n, 1, alpha, BLOCK=128, ADD=0)
        gather_scale[g](x, ref, None, n, 1, alpha, BLOCK=128, ADD=0)
        torch.cuda.synchronize(dev)
        return out, ref


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("policy", list(POLICIES))
def test_alternating_devices_bitwise_and_one_prepare_each(policy, static):
    k = jitcache(cache_lock=CacheLock() if static else None, **POLICIES[policy])(gather_scale)
    with jitlab.scope(f"two-gpu-{policy}-{static}"):
        for i in range(6):
            dev = i % 2
            out, ref = launch_pair(k, dev, alpha=1.5 + i)
            assert out.device.index == dev and same_bits(out, ref), (policy, static, dev)
        c = k.counters()
    assert c["prepare"] == 2 and c["miss"] == 2 and c["hit"] == 4, c
    entries = k.entries(jitlab.get_scope(f"two-gpu-{policy}-{static}"))
    assert sorted(e.device for e in entries) == [0, 1]


def test_locked_cache_prepared_on_one_device_misses_on_the_other():
    lock = CacheLock()
    k = jitcache(cache_lock=lock)(gather_scale)
    with jitlab.scope("two-gpu-locked"):
        launch_pair(k, 0)
        lock.lock()
        out, ref = launch_pair(k, 0)
        assert same_bits(out, ref)
        with pytest.raises(LockedMiss, match=r"<device>: cached device 0, got device 1"):
            launch_pair(k, 1)
        assert k.counters()["locked_miss"] == 1


def _host_us(k, dev, launches=400, repeats=7):
    with torch.cuda.device(dev):
        x = torch.randn(4096, device=f"cuda:{dev}")
        out = torch.empty_like(x)
        g = (32,)
        for _ in range(50):
            k[g](x, out, None, 4096, 1, 1.0, BLOCK=128, ADD=0)
        torch.cuda.synchronize(dev)
        per = []
        for _ in range(repeats):
            torch.cuda._sleep(200_000_000 // 100)  # hold the GPU so launches queue (host time only)
            t0 = time.perf_counter_ns()
            for _ in range(launches):
                k[g](x, out, None, 4096, 1, 1.0, BLOCK=128, ADD=0)
            per.append((time.perf_counter_ns() - t0) / launches / 1e3)
            torch.cuda.synchronize(dev)
        return statistics.median(per)


def test_launch_overhead_per_device_matches_single_device():
    k = jitcache(gather_scale)
    single = jitcache(gather_scale)
    base = _host_us(single, 0)  # one device in use
    per_dev = [_host_us(k, 0), _host_us(k, 1)]
    print(f"host us/launch: single-device {base:.2f}, alternating cuda:0 {per_dev[0]:.2f}, cuda:1 {per_dev[1]:.2f}")
    for us in per_dev:
        assert us <= base * 1.05 + 0.1, (base, per_dev)
