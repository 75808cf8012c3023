"""jitlab.install(): every Triton kernel under jitlab without a code change (issue 20, item 1).

The fake adapter (conftest) counts hits and misses with Triton's real binder; nothing here needs a GPU.
"""

from __future__ import annotations

import copy
import gc
import logging
import threading
import time
import weakref

import pytest
import torch
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction, KernelInterface

import jitlab
from jitlab import auto, jitcache, settings
from jitlab._triton import autoinstall as patch_mod

from . import kernels_for_tests as K


def t(n=64):
    return torch.empty(n, dtype=torch.float32)


@pytest.fixture
def installed():
    """install()/uninstall() around a test; the patch is gone afterwards whatever the test did."""
    yield jitlab.install
    jitlab.uninstall()
    assert KernelInterface.__dict__["__getitem__"] is ORIGINAL


ORIGINAL = KernelInterface.__dict__["__getitem__"]


def fresh(fn=None):
    """A new JITFunction over add_one's Python function: a kernel object no other test launched."""
    return JITFunction(fn or K.add_one.fn)


def test_uninstall_restores_the_identical_function(fake_adapter):
    assert KernelInterface.__dict__["__getitem__"] is ORIGINAL
    jitlab.install()
    assert KernelInterface.__dict__["__getitem__"] is not ORIGINAL
    assert jitlab.install() is not None  # again: still one patch
    assert jitlab.uninstall() is True
    assert KernelInterface.__dict__["__getitem__"] is ORIGINAL
    assert jitlab.uninstall() is False
    assert K.add_one.__getitem__.__func__ is ORIGINAL


def test_top_level_launch_goes_through_one_cache_per_kernel(fake_adapter, installed):
    installed()
    k = fresh()
    x, out = t(), t()
    for _ in range(5):
        k[(1,)](x, out, 64)
    cache = auto.cache_of(k)
    assert cache is not None and cache.policy.name == "safe"
    c = cache.counters()
    assert (c["miss"], c["hit"], c["fallback"]) == (1, 4, 0)
    assert fake_adapter.launches[-1]["key"] == fake_adapter.triton_key(k, (), dict(x_ptr=x, out_ptr=out, n=64))
    assert auto.cache_of(k) is cache and cache in auto.caches()
    jitlab.install()  # the same install again: the same cache
    assert auto.cache_of(k) is cache
    jitlab.install(exclude=["nothing"])  # another: afresh
    assert auto.cache_of(k) is None
    k[(1,)](x, out, 64)
    jitlab.uninstall()
    assert auto.ATTR not in vars(k)  # the kernel as it was


def test_a_decorated_kernel_is_left_as_it_is(fake_adapter, installed):
    installed()
    mine = jitcache(fresh())
    mine[(1,)](t(), t(), 64)
    mine[(1,)](t(), t(), 64)
    assert auto.cache_of(mine._top) is None  # the decorator's cache launched, nothing made for the kernel
    assert mine.counters()["hit"] + mine.counters()["miss"] == 2


@pytest.mark.parametrize("make", [lambda: triton.heuristics({"BLOCK": lambda a: 32})(fresh(K.fill.fn)),
                                  lambda: triton.autotune([triton.Config({"BLOCK": 32})], key=["n"])(fresh(K.fill.fn))],
                         ids=["heuristics", "autotune"])
def test_a_stack_is_wrapped_once_at_the_top(fake_adapter, installed, make):
    try:
        stack = make()
    except RuntimeError as e:  # Triton 3.3's Autotuner needs a driver at construction
        pytest.skip(f"cannot build the stack without a GPU here: {e}")
    installed()
    for _ in range(3):
        stack[(1,)](t(), 17)
    top = auto.cache_of(stack)
    assert top is not None
    assert auto.cache_of(stack.fn) is None  # the inner JITFunction is launched by the stack's .run
    assert top.counters()["hit"] + top.counters()["miss"] == 3 and top.counters()["fallback"] == 0
    assert len([c for c in auto.caches() if c._top in (stack, stack.fn)]) == 1


def test_an_autotune_over_a_jitcache_is_left_alone(fake_adapter, installed):
    installed()
    inner = jitcache(fresh(K.fill.fn))
    over = triton.runtime.autotuner.Heuristics(inner, ["out_ptr", "n", "BLOCK"], {"BLOCK": lambda a: 32})
    assert auto._launcher(over, (1,)) is not None
    assert auto.cache_of(over) is None and over.__dict__[auto.ATTR].__class__ is auto._LeftAlone


def test_include_and_exclude_patterns(fake_adapter, installed):
    k = fresh()
    name = patch_mod.qualified_name(k)
    assert name == "tests.unit.kernels_for_tests.add_one"
    installed(include=["tests.unit.*"], exclude=["*.add_*"])
    launcher = k[(1,)]  # excluded: plain Triton's launcher (not called: no GPU here)
    assert launcher.__qualname__ == ORIGINAL.__qualname__ + ".<locals>.<lambda>"
    assert auto.cache_of(k) is None and type(k.__dict__[auto.ATTR]) is auto._LeftAlone
    assert name in auto.launched_kernels()
    jitlab.install(include="*kernels_for_tests.add_one")  # a new install decides anew
    k[(1,)](t(), t(), 64)
    assert auto.cache_of(k) is not None
    jitlab.install(include=["nothing.*", "*.add_one"])
    assert auto.unmatched_includes() == ["nothing.*"]
    with pytest.raises(ValueError, match="include: patterns are non-empty strings"):
        jitlab.install(include=[""])


def test_pass_through_of_a_plain_kernel_does_not_reenter_the_patch(fake_adapter, installed, monkeypatch):
    """JitCache's pass-through launches the kernel as `kernel[grid]` did before install: through the
    original __getitem__, never the patched one (which would lead back to the same cache, forever)."""
    installed(policy="observe")
    k = fresh()
    runs = []
    monkeypatch.setattr(k, "run", lambda *a, grid, warmup, **kw: runs.append(grid), raising=False)
    # `run` set on the instance: own launch path, pass-through; observe: pass-through too
    k[(3,)](t(), t(), 64)
    k[(3,)](t(), t(), 64)
    cache = auto.cache_of(k)
    assert runs == [(3,), (3,)]
    assert cache.counters()["fallback.passthrough"] == 2
    assert cache.passthrough_reason.startswith("own launch path")


def test_observe_wraps_counts_and_launches_by_plain_triton(fake_adapter, installed, monkeypatch):
    installed(policy="observe")
    k = fresh()
    calls = []
    monkeypatch.setattr(patch_mod, "plain_launcher", lambda kernel, grid: lambda *a, **kw: calls.append(kernel))
    k[(1,)](t(), t(), 64)
    k[(1,)](t(), t(), 64)
    cache = auto.cache_of(k)
    assert cache.passthrough_reason == "observe" and calls == [k, k]
    assert cache.counters()["fallback.passthrough"] == 2 and fake_adapter.compiles == []


class OwnRun(JITFunction):
    """A library's JITFunction subclass with its own run (what jitlab must not guess about)."""

    launched: list = []

    def run(self, *args, grid, warmup, **kwargs):
        OwnRun.launched.append((grid, args))


class OwnTuner(triton.runtime.autotuner.Heuristics):
    def run(self, *args, **kwargs):
        OwnRun.launched.append(("tuner", args))


def test_a_class_with_its_own_run_launches_as_that_class(fake_adapter, installed, caplog, monkeypatch):
    monkeypatch.setattr(auto, "_WARNED_CLASSES", set())
    installed()
    OwnRun.launched.clear()
    k = OwnRun(K.add_one.fn)
    k2 = OwnRun(K.fill.fn)
    stack = OwnTuner(fresh(K.fill.fn), ["n"], {"BLOCK": lambda a: 32})
    with caplog.at_level(logging.WARNING, logger="jitlab.auto"):
        k[(2,)](1, 2, 3)
        k[(2,)](1, 2, 3)
        k2[(1,)](4, 5)
        stack[(1,)](6, 7)
    assert OwnRun.launched == [((2,), (1, 2, 3)), ((2,), (1, 2, 3)), ((1,), (4, 5)), ("tuner", (6, 7))]
    reasons = {auto.cache_of(x).passthrough_reason for x in (k, k2, stack)}
    assert reasons == {f"own launch path: {__name__}.OwnRun.run", f"own launch path: {__name__}.OwnTuner.run"}
    assert auto.cache_of(k).counters()["fallback.passthrough"] == 2
    assert fake_adapter.compiles == []
    lines = [r.getMessage() for r in caplog.records if "own launch path" in r.getMessage()]
    assert len(lines) == 2  # one per class, not per kernel


def test_a_dropped_kernel_frees_its_cache(fake_adapter, installed):
    installed()
    k = fresh()
    k[(1,)](t(), t(), 64)
    cache = auto.cache_of(k)
    refs = weakref.ref(k), weakref.ref(cache)
    del k, cache
    gc.collect()
    assert refs[0]() is None and refs[1]() is None
    assert all(c._top is not None for c in auto.caches())


def test_a_copy_of_a_kernel_gets_its_own_cache(fake_adapter, installed):
    installed()
    k = fresh()
    k[(1,)](t(), t(), 64)
    twin = copy.copy(k)  # carries k's __dict__, cache included
    twin[(1,)](t(), t(), 64)
    assert auto.cache_of(twin) is not auto.cache_of(k) and auto.cache_of(twin)._top is twin


def test_first_launch_from_many_threads_makes_one_cache(fake_adapter, installed, monkeypatch):
    installed()
    k = fresh()
    made, real = [], auto._make_cache

    def slow_make(*a):
        made.append(1)
        time.sleep(0.05)  # a wide window for a second thread to make its own
        return real(*a)

    monkeypatch.setattr(auto, "_make_cache", slow_make)
    barrier = threading.Barrier(8)
    launchers = []

    def go():
        barrier.wait()
        launchers.append(k[(1,)])

    threads = [threading.Thread(target=go) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(made) == 1 and len(launchers) == 8 and auto.cache_of(k) is not None


def test_a_policy_that_does_not_fit_a_kernel_passes_it_through(fake_adapter, installed, tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[[policy]]\nname = "frozen_n"\nassume_const = ["n"]\n')
    installed(policy=f"{f}:frozen_n")
    fits, other = fresh(), JITFunction(K.one_param.fn)
    fits[(1,)](t(), t(), 64)
    assert auto.cache_of(fits).policy.name == "frozen_n" and auto.cache_of(fits).passthrough_reason is None
    made = auto._launcher(other, (1,))
    assert made is not None
    assert "does not fit" in auto.cache_of(other).passthrough_reason


def test_a_kernel_that_cannot_be_wrapped_is_left_to_triton(fake_adapter, installed, monkeypatch, caplog):
    def broken(*a):
        raise TypeError("boom")

    monkeypatch.setattr(auto, "_make_cache", broken)
    installed()
    k = fresh()
    with caplog.at_level(logging.WARNING, logger="jitlab.auto"):
        launcher = k[(1,)]
    assert launcher.__qualname__ == ORIGINAL.__qualname__ + ".<locals>.<lambda>"
    assert "cannot wrap it: TypeError: boom" in caplog.text and auto.cache_of(k) is None


def test_bad_policy_installs_nothing(fake_adapter, tmp_path):
    for bad in ("fast", f"{tmp_path}/missing.toml:x"):
        with pytest.raises(ValueError):
            jitlab.install(policy=bad)
        assert KernelInterface.__dict__["__getitem__"] is ORIGINAL


def test_kill_switch_installs_nothing(fake_adapter, monkeypatch):
    import dataclasses

    monkeypatch.setattr(settings, "SETTINGS", dataclasses.replace(settings.SETTINGS, disable=True))
    assert jitlab.install() is None
    assert KernelInterface.__dict__["__getitem__"] is ORIGINAL


def test_interpreted_kernels_pass_through_and_run(monkeypatch):
    """TRITON_INTERPRET=1 kernels (InterpretedFunction) are caught by the same patch and launched by
    the interpreter, counted as pass-through."""
    from triton.runtime.interpreter import InterpretedFunction

    def body(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) + 1, mask=offs < n)

    body.__module__ = __name__
    k = InterpretedFunction(body)
    jitlab.install()
    try:
        x = torch.arange(8, dtype=torch.float32)
        out = torch.zeros(8)
        with pytest.warns(RuntimeWarning, match="pass-through"):
            k[(1,)](x, out, 8, BLOCK=8)
        k[(1,)](x, out, 8, BLOCK=8)
        assert torch.equal(out, x + 1)
        assert auto.cache_of(k).counters()["fallback.passthrough"] == 2
    finally:
        jitlab.uninstall()


def test_trace_file_per_process(monkeypatch):
    monkeypatch.setenv("JITLAB_TRACE_FILE", "out/run.jsonl")
    monkeypatch.setenv("JITLAB_RUN_PID", "100")
    settings.reload()
    try:
        assert settings.trace_file_for_process(100) == "out/run.jsonl"
        assert settings.trace_file_for_process(101) == "out/run.pid101.jsonl"
        monkeypatch.delenv("JITLAB_RUN_PID")
        settings.reload()
        assert settings.trace_file_for_process(101) == "out/run.jsonl"
    finally:
        monkeypatch.undo()
        settings.reload()


@pytest.mark.parametrize("value, ok", [("safe", "safe"), ("OBSERVE", "observe"), ("off", "off"),
                                       ("fast", None), ("missing.toml:x", None), ("bad.toml:x", None)])
def test_jitlab_auto_values(monkeypatch, tmp_path, value, ok):
    (tmp_path / "bad.toml").write_text("[[policy]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JITLAB_AUTO", value)
    settings.reload()
    try:
        if ok is None:
            with pytest.raises(settings.SettingError, match="JITLAB_AUTO=") as e:
                settings.SETTINGS.auto
            assert "\n" not in str(e.value)
        else:
            assert settings.SETTINGS.auto == ok
    finally:
        monkeypatch.undo()
        settings.reload()
