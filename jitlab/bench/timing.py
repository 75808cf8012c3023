"""Host time per launch, measured with the GPU held busy so launches never wait for it.

Each repeat enqueues a sleep kernel long enough to cover the whole loop, then issues `launches`
calls and reads the host clock around them: the launches queue behind the sleep, so the time
is the host's alone (launch overhead), not the kernel's run time. A synchronize after each
repeat drains the queue. Medians and p10/p90 are over repeats (each repeat's mean per launch).
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

_now = time.perf_counter_ns


def cuda_available() -> bool:
    """Whether the experiments time on a CUDA GPU (else they run the CPU demonstration)."""
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - a broken torch/driver install means the CPU demonstration
        return False


@dataclass
class Timing:
    per_launch_us: list[float] = field(default_factory=list)  # one mean per repeat
    launches: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.per_launch_us)

    def quantile(self, q: float) -> float:
        xs = sorted(self.per_launch_us)
        if len(xs) == 1:
            return xs[0]
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    def stats(self) -> dict[str, float]:
        return {"median_us": self.median, "p10_us": self.quantile(0.1), "p90_us": self.quantile(0.9),
                "repeats": len(self.per_launch_us), "launches_per_repeat": self.launches}


class Device:
    """What timing needs from the device: sync and a way to keep it busy (no-ops on CPU)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        if cuda:
            import torch

            self._sync = torch.cuda.synchronize
            self._sleep = torch.cuda._sleep
            self._cycles_per_us = torch.cuda.clock_rate() if hasattr(torch.cuda, "clock_rate") else 2000
            self._cycles_per_us = max(1000, int(self._cycles_per_us or 2000))  # MHz == cycles per µs

    def sync(self) -> None:
        if self.cuda:
            self._sync()

    def hold(self, us: float) -> None:
        """Keep the current stream busy for about `us` microseconds."""
        if self.cuda:
            self._sleep(int(us * self._cycles_per_us))


def time_host(fn: Callable[[], object], device: Device, *, launches: int, repeats: int, warmup: int,
              per_repeat: Callable[[], None] | None = None, timer: Callable[[int], int] | None = None) -> Timing:
    """Median host µs per call of `fn` over `repeats` loops of `launches` calls each. `timer(n)`, when
    given, runs and times the n calls itself (a loop in C) and returns ns."""
    for _ in range(warmup):
        fn()
    device.sync()
    est_us = 0.0
    if device.cuda:  # size the GPU hold from a short estimate
        t0 = _now()
        for _ in range(min(50, launches)):
            fn()
        est_us = (_now() - t0) / 1e3 / min(50, launches)
        device.sync()
    out = Timing(launches=launches)
    # Like timeit, the garbage collector is paused inside timed loops: a gen-2 collection landing in
    # one variant's loop and not another's is noise, not launch cost.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _repeat(fn, device, launches, repeats, per_repeat, timer, est_us, out)
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


def _repeat(fn, device, launches, repeats, per_repeat, timer, est_us, out) -> None:
    for _ in range(repeats):
        if per_repeat is not None:
            per_repeat()
        device.hold(est_us * launches * 3 + 2000)
        if timer is not None:
            ns = timer(launches)
        else:
            t0 = _now()
            for _ in range(launches):
                fn()
            ns = _now() - t0
        device.sync()
        out.per_launch_us.append(ns / 1e3 / launches)
