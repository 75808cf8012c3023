"""The misses mode (jitlab.bench.first_launch): cold trials each get an empty Triton cache of their own,
warm trials share one filled once by both kinds; the table pairs stock Triton with jitcache per mode."""

from __future__ import annotations

import os

import pytest

from jitlab.bench import first_launch


@pytest.fixture
def spawned(monkeypatch):
    calls = []

    def fake_spawn(workload, who, cache_dir):
        calls.append((workload, who, cache_dir, os.path.isdir(cache_dir), sorted(os.listdir(cache_dir))))
        open(os.path.join(cache_dir, f"{who}-{len(calls)}"), "w").close()  # what a compile leaves behind
        return {"launch_ns": 1000 * len(calls)}

    monkeypatch.setattr(first_launch, "_spawn", fake_spawn)
    return calls


def test_cold_trials_each_get_a_fresh_empty_cache_that_is_removed(spawned):
    t = first_launch._Trials("tiny", "jitcache", "cold")
    assert t(3) == 3000 and t(1) == 2000  # the child's ns, times n (the runner divides by n)
    (_, who1, d1, existed1, before1), (_, _, d2, _, before2) = spawned
    assert who1 == "jitcache" and existed1 and before1 == [] and before2 == [] and d1 != d2
    assert not os.path.exists(d1) and not os.path.exists(d2)


def test_warm_trials_share_one_cache_filled_once_by_both_kinds(spawned):
    t = first_launch._Trials("tiny", "triton", "warm")
    t(1)
    t(1)
    fills, trials = spawned[:2], spawned[2:]
    assert [w for _, w, *_ in fills] == list(first_launch.WHO) and fills[0][4] == []
    assert len(trials) == 2 and {d for _, _, d, *_ in spawned} == {fills[0][2]}
    assert all(len(c[4]) >= 2 for c in trials)  # the trials find the cache the fills left
    d = fills[0][2]
    del t
    assert not os.path.exists(d)


def test_without_gpu_every_variant_is_skipped_and_named():
    vs = first_launch.variants("tiny", cuda=False)
    assert [v.name for v in vs] == [first_launch.variant_name(w, m) for m in first_launch.MODES
                                    for w in first_launch.WHO]
    assert all(v.skip == "needs a CUDA GPU" for v in vs)


def test_markdown_pairs_triton_and_jitcache_per_mode():
    rows = [{"workload": "tiny", "variant": first_launch.variant_name(w, m), "median_us": us}
            for (w, m), us in {("triton", "cold"): 900_000.0, ("jitcache", "cold"): 901_500.0,
                               ("triton", "warm"): 50_000.0}.items()]
    md = first_launch.markdown(rows)
    assert "| tiny | cold | 900.00 | 901.50 | +1.500 |" in md
    assert "| tiny | warm | 50.00 |  |  |" in md
    assert first_launch.markdown([{"workload": "tiny", "variant": "first_launch:triton", "median_us": 1.0}]) == []


def test_child_cli_refuses_an_unknown_kind():
    with pytest.raises(SystemExit) as e:
        first_launch.main(["--child", "tiny", "numba"])
    assert e.value.code == 2
