"""The safety matrix on the H200: in every case, jitlab launches exactly what plain Triton launches
(bitwise equal outputs, same binary choice) or raises what Triton raises. CPU twin: tests/unit/test_safety.py.
Run: PYTHONPATH=. python3 -m pytest tests/gpu"""

from __future__ import annotations

import pytest
import torch
import triton
from triton import knobs

from jitlab import jitcache

from . import kernels_gpu as K

DEV = "cuda"


def outcome(kernel, grid, *args, **kwargs):
    """('ok', output bytes) or ('raised', exception type, first line of its message)."""
    try:
        kernel[grid](*args, **kwargs)
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - compared with what Triton raised
        return ("raised", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    return ("ok",)


def fresh(n=64, value=float("nan")):
    return torch.full((n,), value, device=DEV)


@pytest.mark.parametrize("stack", [K.heuristic_fill, K.tuned_fill], ids=["heuristics", "autotune"])
def test_two_wrappers_over_one_stack_each_write_what_triton_writes(stack):
    inner = stack.fn
    safe, relaxed = jitcache(stack), jitcache(check_keys=[])(stack)  # relaxed: reuses its first BLOCK
    for n in (17, 3, 17, 40, 3, 100):
        relaxed[(triton.cdiv(n, 32),)](fresh(), n, 2.0)
        want, got = fresh(), fresh()
        stack[(triton.cdiv(n, 32),)](want, n, 2.0)
        safe[(triton.cdiv(n, 32),)](got, n, 2.0)
        torch.cuda.synchronize()
        assert torch.equal(want.isnan(), got.isnan()) and torch.equal(want.nan_to_num(), got.nan_to_num()), n
    assert safe.counters()["fallback"] == 0 and relaxed.counters()["fallback"] == 0
    assert stack.fn is inner  # the user's stack is never rewired


def test_debug_knob_after_warmup_launches_the_debug_binary():
    k = jitcache(K.asserting)
    x = torch.randn(256, device=DEV)
    out = torch.empty_like(x)
    for _ in range(3):
        k[(2,)](x, out, 256, BLOCK=128)
    prev = knobs.runtime.debug
    knobs.runtime.debug = True
    try:
        k[(2,)](x, out, 256, BLOCK=128)
        torch.cuda.synchronize()
        debug_entries = [e for e in k.entries() if e.options.get("debug")]
        assert len(debug_entries) == 1 and k.counters()["prepare"] == 2
        assert debug_entries[0].compiled.kernel.metadata.debug
    finally:
        knobs.runtime.debug = prev
    k[(2,)](x, out, 256, BLOCK=128)
    assert k.counters()["prepare"] == 2  # back on the first entry
    assert torch.equal(out, x + 1)


def test_instrumentation_mode_after_warmup_does_what_triton_does():
    x = torch.randn(256, device=DEV)
    k = jitcache(K.add_global)
    k[(2,)](x, torch.empty_like(x), 256, BLOCK=128)
    prev = knobs.compilation.instrumentation_mode
    results = []
    try:
        knobs.compilation.instrumentation_mode = "consan"
        for kern in (K.add_global, k):
            results.append(outcome(kern, (2,), x, torch.empty_like(x), 256, BLOCK=128))
    finally:
        knobs.compilation.instrumentation_mode = prev
    assert results[0] == results[1]
    assert k.counters()["prepare"] == 2 or results[1][0] == "raised"


def test_changed_global_raises_what_triton_raises(monkeypatch):
    x = torch.randn(256, device=DEV)
    k = jitcache(K.add_global)
    for _ in range(2):
        k[(2,)](x, torch.empty_like(x), 256, BLOCK=128)
    monkeypatch.setattr(K, "GLOBAL_ADD", triton.language.constexpr(5))
    want = outcome(K.add_global, (2,), x, torch.empty_like(x), 256, BLOCK=128)
    got = outcome(k, (2,), x, torch.empty_like(x), 256, BLOCK=128)
    assert want[0] == "raised" and got == want


def test_parameter_names_of_the_generated_code():
    k = jitcache(K.shadowing)
    src, out_t, out_j = torch.randn(64, device=DEV), fresh(), fresh()
    args = dict(_scope=3, _device=2.5, _miss=None, _hooks=7, _table=16, _jl_key=1, launch=None, BLOCK=64)
    K.shadowing[(1,)](src, _jl_grid=out_t, **args)
    for _ in range(3):
        k[(1,)](src, _jl_grid=out_j, **args)
    torch.cuda.synchronize()
    assert torch.equal(out_t, out_j) and k.counters()["hit"] == 2


def test_one_parameter_kernel():
    k = jitcache(K.one_param)
    a, b = fresh(), fresh()
    K.one_param[(1,)](a)
    k[(1,)](b)
    k[(1,)](b)
    torch.cuda.synchronize()
    assert torch.equal(a[:16], b[:16]) and k.counters()["hit"] == 1


def test_tuple_and_float_constexprs():
    k = jitcache(K.tuple_scale)
    x = torch.randn(16, device=DEV)
    for shape, f in [((3, 2), 0.0), ((3.0, 2), 0.0), ((3, 2), -0.0), ((3, 2), 0.0)]:
        want, got = fresh(16), fresh(16)
        K.tuple_scale[(1,)](x, want, shape, f)
        k[(1,)](x, got, shape, f)
        torch.cuda.synchronize()
        assert torch.equal(want.view(torch.int32), got.view(torch.int32)), (shape, f)
    assert k.counters()["prepare"] == 3 and k.counters()["hit"] == 1


def test_dispatcher_and_python_hit_path_launch_the_same_bits():
    """The C++ dispatcher against the generated Python hit path (its reference) on every flip."""
    from .test_core_gpu import FLIPS, run_both

    fast, ref = jitcache(K.gather_scale), jitcache(K.gather_scale)
    if type(fast._launch).__name__ != "Dispatcher":
        pytest.skip(f"no native dispatcher here: {fast.dispatcher_reason}")
    ref._launch = ref.python_hit_path()
    for f in FLIPS * 2:
        f = dict(f)
        if f.get("opt") == "tensor":
            f["opt"] = torch.randn(f.get("n", 1000) + 1, device=DEV)
        a, b = run_both(fast, **{"n": 1000, **f})  # each against plain Triton on the same fresh inputs
        a2, c = run_both(ref, **{"n": 1000, **f})
        assert torch.equal(a.nan_to_num(), b.nan_to_num()) and torch.equal(a2.nan_to_num(), c.nan_to_num()), f
    assert fast.counters()["hit"] == ref.counters()["hit"] > 0
