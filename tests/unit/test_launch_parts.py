"""The launch-overhead breakdown (jitlab.bench.launch_parts): parts are differences of consecutive stops,
the table names each part, and a missing stop leaves its neighbours' parts empty, never invented."""

from __future__ import annotations

import pytest

from jitlab.bench import launch_parts
from jitlab._triton import native


def _rows(times: dict[str, float], workload: str = "w") -> list[dict]:
    return [{"workload": workload, "variant": v, "kind": launch_parts.KIND if ".." in v else "x", "median_us": t}
            for v, t in times.items()]


STOPS = dict(zip((launch_parts.variant_name("safe", s) for s in native.STAGES), (1.5, 2.5, 2.75, 3.0, 3.5)))


def test_parts_are_differences_of_consecutive_stops():
    rows = _rows({"c_call": 1.0, **STOPS, "jitcache:safe": 7.5, "c_floor": 3.25})
    got = dict(launch_parts.breakdown(rows, "w"))
    assert got == pytest.approx({"call site (c_call)": 1.0, "bind arguments": 0.5, "find entry (key)": 1.0,
                                 "checks (globals, hooks, grid)": 0.25, "count + stream": 0.25,
                                 "pack parameters": 0.5, "driver call": 4.0, "whole launch (jitcache:safe)": 7.5,
                                 "C floor": 3.25})
    # the parts add up to the whole launch
    assert sum(v for k, v in got.items() if k not in ("whole launch (jitcache:safe)", "C floor")) == pytest.approx(7.5)


def test_a_missing_stop_leaves_both_neighbouring_parts_empty():
    stops = {k: v for k, v in STOPS.items() if not k.endswith("..checks")}
    got = dict(launch_parts.breakdown(_rows({"c_call": 1.0, **stops, "jitcache:safe": 7.5}), "w"))
    assert got["checks (globals, hooks, grid)"] is None and got["count + stream"] is None
    assert got["find entry (key)"] == pytest.approx(1.0) and got["C floor"] is None


def test_markdown_one_column_per_workload_and_nothing_without_parts():
    rows = _rows({"c_call": 1.0, **STOPS, "jitcache:safe": 7.5, "c_floor": 3.25}, "a")
    rows += _rows({"c_call": 2.0, **STOPS, "jitcache:safe": 9.0, "c_floor": 3.5}, "b")
    md = launch_parts.markdown(rows)
    assert md[2] == "| part | a | b |"
    assert "| driver call | +4.00 | +5.50 |" in md and "| C floor | 3.25 | 3.50 |" in md
    assert launch_parts.markdown(_rows({"c_call": 1.0, "jitcache:safe": 7.5})) == []


def test_stop_hits_refuses_unknown_stages():
    with pytest.raises(ValueError, match="stage must be one of"):
        native.stop_hits(object(), object(), "driver")


def test_ab_rows_are_differences_from_the_bench_builds_stock_launch():
    ab = {launch_parts.ab_name("safe", n): t for n, t in
          (("launch", 6.0), ("no-gil-release", 5.75), ("launch-ex", 6.5), ("params-once", 5.5))}
    rows = [{**r, "kind": launch_parts.AB_KIND} for r in _rows(ab)]
    got = dict(launch_parts.ab_table(rows, "w"))
    assert got["no-gil-release"] == pytest.approx(-0.25) and got["launch-ex"] == pytest.approx(0.5)
    assert got["params-once"] == pytest.approx(-0.5) and got["stream-once"] is None  # not timed: no number
    assert set(got) == set(native.AB_VARIANTS)
    md = launch_parts.ab_markdown(rows)
    assert "| stock launch, bench build (µs) | 6.00 |" in md
    assert any(line.startswith("| launch-ex:") and line.endswith("| +0.50 |") for line in md)
    without_stock = [r for r in rows if not r["variant"].endswith("ab:launch")]
    assert all(v is None for v in dict(launch_parts.ab_table(without_stock, "w")).values())
    assert launch_parts.ab_markdown(_rows({"c_call": 1.0})) == []


def test_ab_launches_and_stops_need_the_bench_build():
    shipping = type("Shipping", (), {})()  # a module without set_stop/set_ab (the shipping dispatcher's)
    with pytest.raises(ValueError, match="bench build"):
        native.stop_hits(shipping, object(), "bind")
    with pytest.raises(ValueError, match="bench build"):
        native.ab_launches(shipping, object(), ["launch-ex"])
    with pytest.raises(ValueError, match="unknown A/B variant"):
        native.ab_launches(shipping, object(), ["faster"])


def test_ab_markdown_shows_the_launcher_loop_beside_the_c_floor():
    rows = [{"workload": "w", "variant": launch_parts.ab_name("safe", "launch"), "kind": launch_parts.AB_KIND,
             "median_us": 6.0},
            {"workload": "w", "variant": launch_parts.LOOP, "kind": launch_parts.AB_KIND, "median_us": 3.75},
            {"workload": "w", "variant": "c_floor", "kind": "floor", "median_us": 3.5}]
    md = launch_parts.ab_markdown(rows)
    assert "| jitlab's launcher in a C loop, no Python between launches (µs) | 3.75 |" in md
    assert "| C floor: cuLaunchKernel in a C loop, prebuilt parameters (µs) | 3.50 |" in md


def test_stop_and_ab_variants_run_on_the_bench_build(fake_adapter, request):
    """The experiment's part and A/B variants, wired through JitCache.use_dispatcher_build: each is a
    wrapper on the bench build; a stopped one launches nothing, an A/B one launches (here on the fake
    adapter's launcher, through the dispatcher's Python-call branch), and none touches the shipping build."""
    if request.node.callspec.params["fake_adapter"] != "native":
        pytest.skip("the bench build is a native dispatcher")
    from types import SimpleNamespace

    import torch

    from jitlab import Policy

    from .kernels_for_tests import add_one

    mod, why = native.DISPATCH_BENCH.get(wait=True)
    if mod is None:
        pytest.skip(why)
    x, y = torch.empty(64), torch.empty(64)
    case = SimpleNamespace(kernel=add_one, grid=lambda meta: (meta["n"] // 32,), args=(x, y, 64), kwargs={})
    case.launch = lambda k: k[case.grid](*case.args, **case.kwargs)
    stops = launch_parts.variants(case, Policy())
    abs_ = launch_parts.ab_variants(case, Policy())
    assert [v.name for v in stops] == [launch_parts.variant_name("safe", s) for s in native.STAGES]
    assert [v.name for v in abs_] == [launch_parts.ab_name("safe", n) for n in ("launch", *native.AB_VARIANTS)]
    assert not any(v.skip for v in stops + abs_), [v.skip for v in stops + abs_]
    n0 = len(fake_adapter.launches)
    for v in stops:
        v.launch()
    assert len(fake_adapter.launches) == n0, "a stopped dispatcher launched"
    for v in abs_:
        v.launch()
    assert len(fake_adapter.launches) == n0 + len(abs_)
    assert all(launch["grid"] == (2, 1, 1) for launch in fake_adapter.launches[n0:])
    wrappers = [v.launch.__defaults__[0] for v in stops + abs_]  # each variant's JitCache (its lambda's default)
    assert {type(jk.native_dispatcher()).__module__ for jk in wrappers} == {"_jitlab_dispatch_bench"}
