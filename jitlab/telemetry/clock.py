"""The clock the jitcache hit path stamps launch records with, and its conversion to perf_counter_ns.

A `full` trace takes three timestamps per launch. `time.perf_counter_ns()` costs ~100 ns per call
on the H200 host (a microVM where clock_gettime takes ~75 ns), so those reads alone were half of
full tracing's cost there. Where the kernel trusts the CPU counter as its clocksource (x86-64
`tsc`, arm64 `arch_sys_counter`: invariant and synchronised across cores), the hit path reads it
directly through a tiny C function (clock.c) and the recorder converts ticks to perf_counter_ns
when records are drained, from (ticks, CLOCK_MONOTONIC ns) pairs read back to back. Everything
outside the recorder only ever sees perf_counter_ns.

`JITLAB_TRACE_CLOCK=auto|counter|perf_counter` chooses (auto: the counter where it qualifies).
Anything that keeps the counter from working (no compiler, other architecture, another
clocksource) means perf_counter_ns, logged once; `counter` asked for explicitly warns instead.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

_SRC = Path(__file__).with_name("clock.c")
_CLOCKSOURCE = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
# The kernel clocksource that means "the counter clock.c reads is the one the kernel trusts".
_TRUSTED = {"x86_64": "tsc", "amd64": "tsc", "aarch64": "arch_sys_counter", "arm64": "arch_sys_counter"}
# Conversion needs a baseline long enough that two pair() samples' jitter (~0.1 us) is negligible.
_MIN_BASELINE_NS = 20_000_000


def _identity(t: int) -> int:
    return t


class Clock:
    """`now()` is what the hot path calls; `converter()` maps its values to perf_counter_ns."""

    def __init__(self, name: str, now: Callable[[], int], pair: Callable[[], tuple] | None = None):
        self.name = name
        self.now = now
        self._pair = pair
        self._origin = self._best_pair() if pair is not None else None
        self._lock = threading.Lock()

    def _best_pair(self) -> tuple[int, int]:
        """(ticks, ns) from the tightest of a few back-to-back reads."""
        t, ns, _ = min((self._pair() for _ in range(7)), key=lambda p: p[2])  # type: ignore[misc]
        return t, ns

    def converter(self) -> Callable[[int], int]:
        """A function from this clock's values to perf_counter_ns, accurate for values up to now."""
        if self._pair is None:
            return _identity
        with self._lock:
            t0, ns0 = self._origin  # type: ignore[misc]
            t1, ns1 = self._best_pair()
            if ns1 - ns0 < _MIN_BASELINE_NS:  # only right after start-up: wait for a usable baseline
                time.sleep((_MIN_BASELINE_NS - (ns1 - ns0)) / 1e9)
                t1, ns1 = self._best_pair()
        scale = (ns1 - ns0) / (t1 - t0)
        return lambda t: ns1 + round((t - t1) * scale)

    def ticks_per_us(self) -> float:
        """The counter's rate (1000.0 for perf_counter_ns): for reports."""
        if self._pair is None:
            return 1000.0
        conv = self.converter()
        t = self.now()
        return 1e6 / (conv(t + 1_000_000) - conv(t)) * 1000.0


PERF_COUNTER = Clock("perf_counter", time.perf_counter_ns)


def _counter() -> Clock:
    """The CPU-counter clock, or RuntimeError saying why it cannot be used here."""
    machine = platform.machine().lower()
    want = _TRUSTED.get(machine)
    if want is None:
        raise RuntimeError(f"no CPU counter clock for {platform.machine()!r}")
    try:
        source = _CLOCKSOURCE.read_text().strip()
    except OSError as e:
        raise RuntimeError(f"cannot read the kernel clocksource ({e})") from None
    if source != want:
        raise RuntimeError(f"the kernel clocksource is {source!r}, not {want!r}: the counter may not be invariant")
    from .. import _cbuild

    mod: Any = _cbuild.build("_jitlab_clock", _SRC, "clock")
    a, b = mod.ticks(), mod.ticks()
    if not b >= a > 0:
        raise RuntimeError(f"the counter does not advance ({a}, {b})")
    return Clock("counter", mod.ticks, mod.pair)


_LOCK = threading.Lock()
_CLOCK: Clock | None = None


def get() -> Clock:
    """The process's record clock, chosen once (first tracing-capable hit path or recorder)."""
    global _CLOCK
    if _CLOCK is None:
        with _LOCK:
            if _CLOCK is None:
                _CLOCK = _choose()
    return _CLOCK


def _choose() -> Clock:
    from .. import settings

    want = settings.SETTINGS.trace_clock
    if want == "perf_counter":
        return PERF_COUNTER
    try:
        clock = _counter()
    except Exception as e:  # noqa: BLE001 - a clock we cannot use means perf_counter_ns, never a crash
        msg = f"jitlab: tracing clock is perf_counter_ns ({type(e).__name__}: {e})"
        if want == "counter":
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
        else:
            log.info(msg)
        return PERF_COUNTER
    log.debug("jitlab: tracing clock is the CPU counter")
    return clock
