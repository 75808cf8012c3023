"""The record clock: the CPU counter where the kernel trusts it, converted to perf_counter_ns."""

from __future__ import annotations

import statistics
import time
import warnings

import pytest

from jitlab import settings
from jitlab.telemetry import clock as C


def test_record_clock_converts_onto_perf_counter_ns():
    clock = C.get()
    conv = clock.converter()
    diffs = []
    for _ in range(2000):
        a = time.perf_counter_ns()
        t = clock.now()
        b = time.perf_counter_ns()
        diffs.append(conv(t) - (a + b) // 2)
    # a few hundred ns of read skew at most; a wrong rate or offset would be off by far more
    assert abs(statistics.median(diffs)) < 1_000, (clock.name, statistics.median(diffs))
    time.sleep(0.05)
    t0, p0 = clock.now(), time.perf_counter_ns()
    time.sleep(0.05)
    t1, p1 = clock.now(), time.perf_counter_ns()
    conv = clock.converter()
    assert abs((conv(t1) - conv(t0)) - (p1 - p0)) < 0.01 * (p1 - p0)


def test_counter_clock_used_where_the_kernel_trusts_it():
    try:
        counter = C._counter()
    except RuntimeError as e:
        pytest.skip(f"no counter clock here: {e}")
    assert counter.name == "counter" and 100 < counter.ticks_per_us() < 10_000  # 0.1-10 GHz
    a = counter.now()
    assert counter.now() >= a


def test_perf_counter_when_asked_or_when_the_counter_is_not_trusted(monkeypatch, tmp_path):
    monkeypatch.setenv("JITLAB_TRACE_CLOCK", "perf_counter")
    settings.reload()
    try:
        assert C._choose() is C.PERF_COUNTER
        src = tmp_path / "clocksource"
        src.write_text("hpet\n")
        monkeypatch.setattr(C, "_CLOCKSOURCE", src)
        monkeypatch.setenv("JITLAB_TRACE_CLOCK", "auto")
        settings.reload()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # auto falls back quietly (logged)
            assert C._choose() is C.PERF_COUNTER
        monkeypatch.setenv("JITLAB_TRACE_CLOCK", "counter")
        settings.reload()
        with pytest.warns(RuntimeWarning, match="perf_counter_ns"):
            assert C._choose() is C.PERF_COUNTER
        assert C.PERF_COUNTER.converter()(12345) == 12345
    finally:
        monkeypatch.delenv("JITLAB_TRACE_CLOCK")
        settings.reload()


def test_bad_clock_setting_names_the_choices(monkeypatch):
    monkeypatch.setenv("JITLAB_TRACE_CLOCK", "rdtsc")
    try:
        with pytest.raises(ValueError, match="JITLAB_TRACE_CLOCK must be one of"):
            settings.reload()
    finally:
        monkeypatch.delenv("JITLAB_TRACE_CLOCK")
        settings.reload()
