"""Issue 21, items 9-13: launch options keyed by type, Scope.clear() against a first launch, a grid that
raises while its entry is prepared or on a hit, JITLAB_MAX_ENTRIES as a cap, and the smaller problems.
Every test runs on both hit paths (the fake adapter's two params: the Python reference and the C++
dispatcher), with Triton's real binder."""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings

import numpy as np
import pytest
import torch

import jitlab
from jitlab import jitcache, settings
from jitlab.scope import Scope

from .kernels_for_tests import add_one


def t(n=64):
    return torch.empty(n, dtype=torch.float32)


def triton_parse_options(options: dict) -> None:
    """What Triton's compile does with the launch options on sm_90 (raises where Triton raises)."""
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend

    CUDABackend(GPUTarget("cuda", 90, 32)).parse_options(dict(options))


@pytest.fixture
def options_adapter(fake_adapter):
    """The fake adapter whose compile parses the options as Triton's compile does."""
    compile_ = fake_adapter.compile

    def compile(fn, grid, args, kwargs):
        triton_parse_options({k: v for k, v in kwargs.items() if k not in fn.arg_names})
        return compile_(fn, grid, args, kwargs)

    fake_adapter.compile = compile
    return fake_adapter


# -- item 9: launch options keyed by type and value ---------------------------------------------------------------
@pytest.mark.parametrize("base, other, triton_raises", [
    ({"num_warps": 4}, {"num_warps": 4.0}, TypeError),
    ({"num_warps": 1}, {"num_warps": True}, None),
    ({"num_warps": 4}, {"num_warps": np.int64(4)}, None),
    ({"num_stages": 2}, {"num_stages": 2.0}, None),
])
def test_options_equal_by_value_are_distinct_keys(options_adapter, base, other, triton_raises):
    """Triton keys options by their text: each of these is its own binary, or Triton's own error."""
    k = jitcache(add_one)
    x, y = t(), t()
    for _ in range(2):  # the second launch is a hit (on the C++ path: the dispatcher's)
        k[(1,)](x, y, 64, **base)
    compiles = len(options_adapter.compiles)
    for _ in range(3):
        if triton_raises is not None:
            with pytest.raises(triton_raises):
                triton_parse_options(other)
            with pytest.raises(triton_raises):
                k[(1,)](x, y, 64, **other)
        else:
            triton_parse_options(other)
            k[(1,)](x, y, 64, **other)
    if triton_raises is None:
        assert len(options_adapter.compiles) == compiles + 1  # its own entry, then hits on it
        assert k.counters()["entries"] == 2 and k.counters()["hit"] == 3
        k[(1,)](x, y, 64, **base)  # and the first one still hits its own entry
        assert options_adapter.launches[-1]["key"] == options_adapter.compiles[compiles - 1]
        assert k.counters()["hit"] == 4


def test_options_key_describes_the_typed_values():
    from jitlab import keys

    item = keys.options_item({"num_warps": 4.0, "num_stages": np.int64(2), "debug": True})
    assert keys.describe(item, "options") == "{'num_warps': 4.0, 'num_stages': np.int64(2), 'debug': True}"
    assert keys.options_item({"num_warps": 4}) != keys.options_item({"num_warps": 4.0})


# -- item 10: Scope.clear() against a kernel's first launch in that scope ------------------------------------------
def _first_launch_during_clear(k0, k1, name, widen: bool):
    """k1's first launch in scope `name` while clear() runs (widened: while clear() drops k0's table)."""
    from jitlab.scope import get_scope

    s = get_scope(name)
    x, y = t(), t()
    with jitlab.scope(name):
        k0[(1,)](x, y, 64)
    dropping, go = threading.Event(), threading.Barrier(2)
    if widen:
        real = k0._drop_scope

        def slow_drop(scope):
            dropping.set()
            time.sleep(0.005)
            real(scope)

        k0._drop_scope = slow_drop

    def first_launch():
        go.wait()
        if widen:
            dropping.wait(5)
        with jitlab.scope(name):
            k1[(1,)](x, y, 64)

    th = threading.Thread(target=first_launch)
    th.start()
    go.wait()
    s.clear()
    th.join()
    if widen:
        del k0._drop_scope
    return s


@pytest.mark.parametrize("widen, trials", [(True, 20), (False, 300)])
def test_clear_is_linearizable_with_a_first_launch(fake_adapter, widen, trials):
    """After a clear() that raced k1's first launch, the next clear() drops k1's entries: the kernel
    misses (compiles) again instead of hitting an entry prepared before it."""
    k0, k1 = jitcache(add_one), jitcache(add_one)
    x, y = t(), t()
    survived = 0
    for i in range(trials):
        s = _first_launch_during_clear(k0, k1, f"race-{widen}-{i}", widen)
        s.clear()
        survived += s in k1._tables
        compiles = len(fake_adapter.compiles)
        with jitlab.scope(s.name):
            k1[(1,)](x, y, 64)
        survived += len(fake_adapter.compiles) == compiles  # a hit: its entry outlived clear()
        s.clear()
    assert survived == 0


# -- item 11: a grid that raises while its entry is prepared -------------------------------------------------------
def test_grid_raising_once_at_prepare_does_not_poison_the_key(fake_adapter):
    k = jitcache(cache_launch_grid=True)(add_one)
    x, y = t(), t()
    calls = []

    def grid(meta):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("transient grid failure")
        return (2,)

    with pytest.raises(ValueError, match="transient"):  # Triton raises the grid's error too
        k[grid](x, y, 64)
    for _ in range(5):
        k[grid](x, y, 64)
    c = k.counters()
    assert c["fallback"] == 0 and c["prepare_failed"] == 1
    assert c["miss"] == 2 and c["hit"] == 4 and c["entries"] == 1
    assert fake_adapter.launches[-1]["grid"] == (2, 1, 1) and "via" not in fake_adapter.launches[-1]


# -- item 12: JITLAB_MAX_ENTRIES is a cap with LRU eviction; too many scopes warn ----------------------------------
@pytest.fixture
def limits(fake_adapter, monkeypatch):
    from jitlab import cache

    def set_limits(**kw):
        monkeypatch.setattr(settings, "SETTINGS", dataclasses.replace(settings.SETTINGS, **kw))

    monkeypatch.setattr(cache, "_WARNED", set())
    return set_limits


def test_max_entries_evicts_the_least_recently_used(fake_adapter, limits):
    from jitlab.telemetry import recorder as R

    limits(max_entries=3)
    k = jitcache(add_one)
    x, y = t(), t()

    def launch(block):
        n = len(fake_adapter.compiles)
        k[(1,)](x, y, 64, BLOCK=block)
        return len(fake_adapter.compiles) - n  # 1: compiled (a miss), 0: a hit

    rec = R.Recorder("full", capacity=10_000)
    prev = R.activate(rec)
    try:
        assert [launch(b) for b in (16, 16, 32, 64)] == [1, 0, 1, 1]  # 16 hit last: the native path remembers it
        assert [launch(b) for b in (32, 64)] == [0, 0]  # now 16 is the least recently used
        with pytest.warns(RuntimeWarning, match="JITLAB_MAX_ENTRIES"):
            assert launch(128) == 1  # evicts 16
        assert k.counters()["entries"] == 3 and k.counters()["evict"] == 1
        assert [launch(b) for b in (32, 64, 128)] == [0, 0, 0]
        assert launch(16) == 1  # evicted: prepared again (and evicts 32)
        assert launch(16) == 0 and k.counters()["evict"] == 2
        # the entry a dispatcher hit last is evicted: its key misses again, never hits the evicted entry
        assert [launch(b) for b in (256, 512)] == [1, 1]  # evict 64, 128
        assert launch(1024) == 1  # evicts 16, the last hit
        assert launch(16) == 1
    finally:
        R.activate(prev)
    evicted = [r for r in rec.drain() if r.outcome == R.EVICT]
    assert len(evicted) == k.counters()["evict"] == 6
    assert evicted[0].key == 0 and R.OUTCOME_NAMES[R.EVICT] == "evict"
    assert rec.seen == k.counters()["hit"] + k.counters()["miss"]  # an eviction is not a launch
    from opentelemetry.sdk.resources import Resource

    from jitlab.telemetry import spans as S

    provider, collector = S.collecting_provider(Resource({}))
    root = S.Frame("run", S.RUN_SPAN, 0, 1)
    S.SpanBuilder(provider.get_tracer("t"), 0).add_launches([tuple(dataclasses.astuple(evicted[0]))], [root], root)
    (span,) = collector.take()
    assert span.name == S.EVICT_SPAN and span.attributes[S.A_RESULT] == "evict" and span.attributes[S.A_KEY] == 0


def test_too_many_scopes_warn(fake_adapter, limits):
    limits(max_scopes=2)
    k = jitcache(add_one)
    x, y = t(), t()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for i in range(4):
            with jitlab.scope(f"request-{i}"):
                k[(1,)](x, y, 64)
    msgs = [str(m.message) for m in w if "JITLAB_MAX_SCOPES" in str(m.message)]
    assert len(msgs) == 1 and "Scope.clear()" in msgs[0]


# -- item 13: the smaller problems -----------------------------------------------------------------------------------
def test_bad_max_entries_raises_at_decoration(fake_adapter, monkeypatch):
    monkeypatch.setenv("JITLAB_MAX_ENTRIES", "0")
    monkeypatch.setattr(settings, "SETTINGS", settings.Settings())
    with pytest.raises(settings.SettingError, match="JITLAB_MAX_ENTRIES"):
        jitcache(add_one)
    assert fake_adapter.compiles == []


def test_failed_dispatcher_build_under_native_warns_and_says_why(monkeypatch, caplog):
    from jitlab._triton import adapter as adapter_mod
    from jitlab._triton import native

    from .conftest import install_fake_adapter

    install_fake_adapter(monkeypatch)
    release = threading.Event()

    def failing_build():
        release.wait(10)
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(native, "DISPATCH", native._Background(failing_build, "native dispatcher"))
    monkeypatch.setattr(settings, "SETTINGS", dataclasses.replace(settings.SETTINGS, launcher="native"))
    try:
        k = jitcache(add_one)
        assert k.dispatcher_reason == "native dispatcher is being built"
        with caplog.at_level("WARNING", logger="jitlab.cache"):
            release.set()
            native.DISPATCH.get(wait=True)
        assert k.dispatcher_reason == "native dispatcher unavailable: RuntimeError: no compiler here"
        assert any("no compiler here" in r.getMessage() for r in caplog.records)
        k2 = jitcache(add_one)  # a kernel decorated after the failure: warned too
        assert k2.dispatcher_reason == k.dispatcher_reason
        k[(1,)](t(), t(), 64)  # the Python hit path launches
    finally:
        adapter_mod.reset()


def test_grid_raising_on_a_hit_counts_the_same_on_both_paths(fake_adapter):
    k = jitcache(add_one)
    x, y = t(), t()
    k[(1,)](x, y, 64)

    def bad_grid(meta):
        raise ValueError("grid")

    for _ in range(5):
        with pytest.raises(ValueError, match="grid"):  # as Triton: its lookup hits, then the grid raises
            k[bad_grid](x, y, 64)
    assert k.counters()["hit"] == 5 and k.counters()["miss"] == 1


@pytest.mark.parametrize("kwargs, name", [
    ({"check_keys": ["BLOCK"], "assume_const": ["n"]}, "relaxed(check_keys=BLOCK; assume_const=n)"),
    ({"cache_launch_grid": True}, "relaxed(cache_launch_grid)"),
    ({"check_specialization": []}, "relaxed(check_specialization=-)"),
    ({"verify": 10}, "safe(verify=10)"),
])
def test_keyword_relaxations_are_named_by_what_they_relax(fake_adapter, kwargs, name):
    from jitlab.telemetry import recorder as R

    k = jitcache(**kwargs)(add_one)
    assert k.policy.name == name and name in repr(k)
    rec = R.Recorder("full", capacity=100)
    prev = R.activate(rec)
    try:
        k[(1,)](t(), t(), 64)
    finally:
        R.activate(prev)
    assert [r.policy for r in rec.drain()] == [name]


def test_keyword_relaxation_over_a_named_policy(tmp_path, fake_adapter):
    f = tmp_path / "p.toml"
    f.write_text('[[policy]]\nname = "mine"\nverify = 5\n')
    k = jitcache(policy=f"{f}:mine", cache_launch_grid=True)(add_one)
    assert k.policy.name == "mine(cache_launch_grid)" and k.policy.verify == 5


@pytest.mark.parametrize("content, match", [
    (b'[[policy]]\nname = "a"\n[[policy]]\nname = "a"\ncache_launch_grid = true\n', "two .* named 'a'"),
    (b'[[policy]\nname = "a"\n', "invalid TOML"),
    (b'[[policy]]\nname = "\xff\xfe"\n', "not UTF-8"),
])
def test_policy_file_errors_name_the_file(tmp_path, content, match):
    from jitlab import Policy

    f = tmp_path / "bad policies.toml"
    f.write_bytes(content)
    with pytest.raises(ValueError, match=match) as e:
        Policy.load(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match=match):
        jitcache(policy=f"{f}:a")(add_one)
