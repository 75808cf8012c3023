"""The jitcache's logic on CPU: Triton's real specialization rules, a fake binary/launcher."""

from __future__ import annotations

import contextlib
import gc
import random
import threading
import time
import weakref

import pytest
import torch

import jitlab
from jitlab import CacheLock, LockedMiss, AssumptionViolated, Policy, jitcache

from .kernels_for_tests import add_one, many_kinds


def t(n=64, dtype=torch.float32, offset=0):
    base = torch.empty(n + 8, dtype=dtype)
    return base[offset:offset + n]


def launched_key(fake):
    return fake.launches[-1]["key"]


VALUES = {
    "x_ptr": [lambda: t(), lambda: t(dtype=torch.float16), lambda: t(dtype=torch.float16, offset=1)],
    "opt_ptr": [lambda: None, lambda: t()],
    "n": [1, 16, 17, 2**31, 64],
    "stride": [1, 2, 32],
    "scale": [0.5, 2],
    "flag": [True, False, 1],
}


def random_call(rng):
    kw = {k: rng.choice(v) for k, v in VALUES.items()}
    kw = {k: (v() if callable(v) else v) for k, v in kw.items()}
    kw["y_ptr"] = t()
    kw["BLOCK"] = rng.choice([32, 64])
    kw["MODE"] = rng.choice([0, 1, True])
    return kw


def test_safe_default_launches_the_binary_triton_would_pick(fake_adapter):
    k = jitcache(many_kinds)
    rng = random.Random(0)
    calls = [random_call(rng) for _ in range(200)]
    for kw in calls + calls[::-1]:  # the second pass revisits every class: all hits
        k[(4,)](**kw)
        assert launched_key(fake_adapter) == fake_adapter.triton_key(many_kinds, (), kw)
    c = k.counters()
    assert c["hit"] + c["miss"] == 400 and c["miss"] == c["prepare"] == c["entries"]
    assert c["hit"] >= 200 and c["fallback"] == 0


def test_positional_keyword_defaults_and_options(fake_adapter):
    k = jitcache(add_one)
    x, y = t(), t()
    k[(1,)](x, y, 64)
    k[(1,)](x, out_ptr=y, n=64)
    k[(1,)](x, y, 64, BLOCK=128)  # the default value given explicitly: same entry
    assert k.counters()["miss"] == 1 and k.counters()["hit"] == 2
    k[(1,)](x, y, 64, num_warps=8)  # launch options are part of the key
    assert k.counters()["miss"] == 2
    assert launched_key(fake_adapter) == fake_adapter.triton_key(add_one, (x, y, 64), {"num_warps": 8})
    assert fake_adapter.launches[-1]["vals"][:3] == (x, y, 64)


def test_callable_grid_gets_the_dict_triton_passes(fake_adapter):
    seen = []

    def grid(meta):
        seen.append(dict(meta))
        return (triton_cdiv(meta["n"], meta["BLOCK"]),)

    k = jitcache(add_one)
    x, y = t(), t()
    k[grid](x, y, 300)
    k[grid](x, y, 64)
    assert seen[-1] == {"x_ptr": x, "out_ptr": y, "n": 64, "BLOCK": 128}
    assert fake_adapter.launches[-1]["grid"] == (1, 1, 1)
    assert fake_adapter.launches[-2]["grid"] == (3, 1, 1)


def triton_cdiv(a, b):
    return (a + b - 1) // b


def test_cache_launch_grid_reuses_prepare_time_grid(fake_adapter):
    k = jitcache(cache_launch_grid=True)(add_one)
    x, y = t(), t()
    k[lambda m: (triton_cdiv(m["n"], 128),)](x, y, 300)
    k[lambda m: (99,)](x, y, 304)  # same key class (n not 1, not %16? 304 % 16 == 0 -> different!)
    k[lambda m: (99,)](x, y, 301)  # same class as 300: cached grid (3,) is reused
    assert fake_adapter.launches[-1]["grid"] == (3, 1, 1)


def test_relaxed_keys_reuse_and_verify_names_the_argument(fake_adapter):
    k = jitcache(check_keys=["BLOCK"], check_specialization=["x_ptr"], verify=1)(many_kinds)
    kw = random_call(random.Random(1))
    kw.update(n=64, opt_ptr=None, MODE=0, x_ptr=t())
    k[(1,)](**kw)
    k[(1,)](**kw)  # verify passes
    with pytest.raises(AssumptionViolated, match="'n'.*check_specialization.*constexpr 1"):
        k[(1,)](**{**kw, "n": 1})
    with pytest.raises(AssumptionViolated, match="'MODE'.*check_keys"):
        k[(1,)](**{**kw, "MODE": 1})
    with pytest.raises(AssumptionViolated, match="'opt_ptr'"):
        k[(1,)](**{**kw, "opt_ptr": t()})
    assert k.counters()["verify"] == 4 and k.counters()["miss"] == 1


def test_verify_catches_lost_alignment_and_assume_const(fake_adapter):
    k = jitcache(check_specialization=["n"], assume_const=["stride"], verify=1)(many_kinds)
    kw = random_call(random.Random(2))
    kw.update(n=64, stride=2, x_ptr=t(dtype=torch.float16))
    k[(1,)](**kw)
    with pytest.raises(AssumptionViolated, match="'x_ptr'.*not 16-divisible/aligned"):
        k[(1,)](**{**kw, "x_ptr": t(dtype=torch.float16, offset=1)})
    with pytest.raises(AssumptionViolated, match="'stride'.*assume_const.*2.*3"):
        k[(1,)](**{**kw, "stride": 3})


def test_assume_const_launches_the_frozen_value_and_keeps_no_tensor(fake_adapter):
    k = jitcache(assume_const=["out_ptr"])(add_one)
    x, y = t(), t()
    k[(1,)](x, y, 64)
    addr = y.data_ptr()
    ref = weakref.ref(y)
    del y
    gc.collect()
    assert ref() is None  # entries keep no strong reference to user tensors
    k[(1,)](x, t(), 64)
    assert fake_adapter.launches[-1]["vals"][1] == addr


def test_static_cache_locked_miss_names_the_differences(fake_adapter):
    lock = CacheLock()
    k = jitcache(cache_lock=lock)(add_one)
    x, y = t(), t()
    k[(1,)](x, y, 64)
    k[(1,)](x, y, 17)
    lock.lock()
    k[(1,)](x, y, 32)  # same class as 64: still a hit
    with pytest.raises(LockedMiss) as e:
        k[(1,)](x, y, 1)
    assert "add_one" in str(e.value) and "n: cached i32" in str(e.value) and "got i32 ==1" in str(e.value)
    with pytest.raises(LockedMiss, match="x_ptr: cached tensor torch.float32, got tensor torch.float16"):
        k[(1,)](t(dtype=torch.float16), y, 64)
    c = k.counters()
    assert c["locked_miss"] == 2 and c["miss"] == 2 and c["hit"] == 1
    lock.unlock()
    k[(1,)](x, y, 1)
    assert k.counters()["miss"] == 3


def test_scopes_isolate_entries_and_locks(fake_adapter):
    # Two "models" with different constexprs, each with a relaxed key that ignores them.
    k = jitcache(check_keys=[])(add_one)
    x, y = t(), t()
    with jitlab.scope("model-a"):
        k[(1,)](x, y, 64, BLOCK=32)
    with jitlab.scope("model-b") as b:
        k[(1,)](x, y, 64, BLOCK=64)
        assert "BLOCK': 64" in launched_key(fake_adapter) or "64" in launched_key(fake_adapter)
        b.lock()
        k[(1,)](x, y, 64, BLOCK=64)
        with pytest.raises(LockedMiss, match="model-b"):
            k[(1,)](x, y, 1)
    with jitlab.scope("model-a"):
        k[(1,)](x, y, 64, BLOCK=32)
        assert "constexpr', 32" in launched_key(fake_adapter)
        k[(1,)](x, y, 1)  # model-a is not locked
    assert k.counters("model-a") == {**k.counters("model-a"), "miss": 2, "hit": 1}
    assert k.counters("model-b")["locked_miss"] == 1
    jitlab.get_scope("model-b").clear()
    assert k.counters("model-b")["entries"] == 0
    with jitlab.scope("model-b"):
        k[(1,)](x, y, 1)  # cleared scope is unlocked and empty again
    assert k.counters("model-b")["miss"] == 1


def test_device_is_part_of_the_key(fake_adapter):
    k = jitcache(add_one)
    x, y = t(), t()
    k[(1,)](x, y, 64)
    fake_adapter.device = 1
    k[(1,)](x, y, 64)
    assert k.counters()["prepare"] == 2
    assert fake_adapter.launches[-1]["stream"] == 1001 and launched_key(fake_adapter).startswith("dev1")


@contextlib.contextmanager
def enter_hook(fn):
    """Attach a launch-enter hook the way this Triton version expects (see probe.hook_source)."""
    from jitlab._triton import probe

    src = probe.hook_source()
    if src == "knobs-chain":
        from triton import knobs

        knobs.runtime.launch_enter_hook.add(fn)
        try:
            yield
        finally:
            knobs.runtime.launch_enter_hook.remove(fn)
        return
    if src == "knobs":
        from triton import knobs as holder

        holder = holder.runtime
    else:
        from triton.compiler.compiler import CompiledKernel as holder
    holder.launch_enter_hook = fn
    try:
        yield
    finally:
        holder.launch_enter_hook = None


def test_hooks_are_read_per_launch_and_see_metadata(fake_adapter):
    k = jitcache(add_one)
    x, y = t(), t()
    k[(2,)](x, y, 64)
    seen = []
    with enter_hook(seen.append):
        k[(2,)](x, y, 64)  # a hook attached after the entry was prepared is still called
    k[(2,)](x, y, 64)
    assert len(seen) == 1 and seen[0]["grid"] == (2,) and seen[0]["stream"] == 1000
    assert fake_adapter.launches[-1]["md"] is None


def test_unsupported_argument_falls_back_to_triton(fake_adapter):
    k = jitcache(add_one)
    k[(1,)]((1, 2), t(), 64)
    assert k.counters()["fallback.bind:Unsupported"] == 1 and fake_adapter.launches[-1]["via"] == "triton"


def test_threads_launch_concurrently(fake_adapter):
    k = jitcache(add_one)
    xs = [t() for _ in range(8)]
    errors = []

    def worker(i):
        try:
            for j in range(200):
                k[(1,)](xs[i], xs[(i + 1) % 8], [1, 16, 17][j % 3])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    c = k.counters()
    assert c["prepare"] == 3 and c["hit"] + c["miss"] == 1600
    for rec in fake_adapter.launches:
        n = rec["vals"][2]
        assert ("constexpr', 1)" in rec["key"]) == (n == 1)


def test_policy_is_data():
    p = Policy(name="relaxed", check_keys=["BLOCK"], assume_const=("n",))
    assert Policy.from_dict(p.to_dict()) == p and hash(p) == hash(Policy.from_dict(p.to_dict()))
    assert p.relaxed and not Policy().relaxed


@pytest.mark.parametrize("kwargs, match", [
    ({"check_keys": ["n"]}, r"check_keys: 'n' is a runtime argument; valid choices: \['BLOCK'\]"),
    ({"assume_const": ["BLOCK"]}, r"assume_const: 'BLOCK' is a constexpr"),
    ({"check_specialization": ["nope"]}, r"unknown argument 'nope'"),
    ({"check_keys": "BLOCK"}, r"must be a list"),
    ({"verify": -1}, r"verify"),
])
def test_bad_policy_names_kernel_and_choices(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        jitcache(**kwargs)(add_one)
    assert "add_one" in str(e.value)


def launch_recorded(rec, n=10):
    """n launches of a fresh jitcache(add_one) with `rec` as the active recorder; returns rec."""
    from jitlab.telemetry import recorder as R

    k = jitcache(add_one)
    x, y = t(), t()
    prev = R.activate(rec)
    try:
        for _ in range(n):
            k[(1,)](x, y, 64)
    finally:
        R.activate(prev)
    return rec


@pytest.mark.parametrize("level, every, hits_recorded", [("full", 1, 9), ("sampled", 3, 3), ("summary", 0, 0)])
def test_hit_path_records_per_level(fake_adapter, level, every, hits_recorded):
    from jitlab.telemetry import recorder as R

    t_before = time.perf_counter_ns()
    rec = launch_recorded(R.Recorder(level, capacity=100, sample_every=every))
    t_after = time.perf_counter_ns()
    recs = rec.drain()
    assert [r.outcome for r in recs].count(R.MISS) == 1
    hits = [r for r in recs if r.outcome == R.HIT]
    # `seen` counts launches offered for sampling at entry, before hit or miss is known: all 10
    assert len(hits) == hits_recorded and rec.seen == 10
    for r in hits:
        assert r.kernel == "add_one" and r.scope == "global" and t_before <= r.t_enter <= r.t_args <= r.t_exit <= t_after
        assert r.policy == "safe" and r.key == 0 and r.thread == threading.get_ident()


def test_keeping_every_hit_records_each_hit_of_a_window(fake_adapter):
    """At level sampled, `keeping_every_hit()` makes both hit paths (Python and native) record every
    hit inside the block (e2e's torch.profiler window) and sampling resume after it."""
    from jitlab.telemetry import recorder as R

    rec = R.Recorder("sampled", capacity=1000, sample_every=100)
    k = jitcache(add_one)
    x, y = t(), t()
    prev = R.activate(rec)
    try:
        for _ in range(10):  # the miss, then 9 hits: none is the 100th
            k[(1,)](x, y, 64)
        with rec.keeping_every_hit():
            for _ in range(20):
                k[(1,)](x, y, 64)
        for _ in range(50):
            k[(1,)](x, y, 64)
    finally:
        R.activate(prev)
    recs = rec.drain()
    assert [r.outcome for r in recs].count(R.MISS) == 1
    assert sum(r.outcome == R.HIT for r in recs) == 20 and rec.sample_every == 100 and rec.seen == 80
    for level in ("full", "summary"):  # other levels: unchanged inside
        other = R.Recorder(level)
        with other.keeping_every_hit():
            assert other.sample_every == {"full": 1, "summary": 0}[level]


def test_full_recorder_counts_drops_when_full(fake_adapter):
    from jitlab.telemetry import recorder as R

    rec = launch_recorded(R.Recorder("full", capacity=4))
    assert len(rec.drain()) == 4 and rec.dropped == 6 and rec.seen == 10
