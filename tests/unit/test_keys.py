"""jitlab's key is at least as fine as Triton's own specialization (checked against Triton's binder)."""

from __future__ import annotations

import itertools

import pytest
import torch

from jitlab import keys
from jitlab._triton import adapter as adapter_mod
from jitlab.codegen import KeySpec, make_binder

from .kernels_for_tests import annotated, many_kinds, no_spec

INTS = [0, 1, 2, 15, 16, 17, 32, -1, -16, 2**31 - 1, 2**31, 2**31 + 16, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63,
        2**63 + 16, 2**64 - 1]


def tensors():
    base16 = torch.empty(64, dtype=torch.float16)
    base32 = torch.empty(64, dtype=torch.float32)
    return [base16, base16[1:], base16[8:], base32, base32[1:], base32[4:], torch.empty(4, dtype=torch.int8)[1:]]


def values():
    return INTS + tensors() + [None, True, False, 1.0, 0.5]


def our_keys(jit_fn, name, vals):
    params = adapter_mod.params_of(jit_fn)
    rt = {p.name for p in params if not p.constexpr}
    cx = {p.name for p in params if p.constexpr}
    bind, layout = make_binder("k", KeySpec(tuple(params), frozenset(rt), frozenset(cx), (), 0))
    pos = [n for n, _ in layout.items].index(name)
    defaults = {p.name: (torch.empty(4) if not p.constexpr else 16) for p in params}
    out = []
    for v in vals:
        kw = {**defaults, name: v}
        out.append(bind(**kw)[0][pos])
    return out


def triton_specs(jit_fn, name, vals):
    binder = adapter_mod.offline_binder(jit_fn)
    params = adapter_mod.params_of(jit_fn)
    idx = [p.name for p in params].index(name)
    defaults = {p.name: (torch.empty(4) if not p.constexpr else 16) for p in params}
    return [binder(**{**defaults, name: v})[1][idx] for v in vals]


@pytest.mark.parametrize("jit_fn, name", [
    (many_kinds, "x_ptr"), (many_kinds, "n"), (many_kinds, "opt_ptr"), (many_kinds, "flag"),
    (many_kinds, "scale"), (no_spec, "n"), (no_spec, "stride"), (annotated, "n"), (annotated, "f"),
])
def test_key_partition_refines_triton(jit_fn, name):
    vals = values()
    if jit_fn is annotated and name == "f":
        vals = [0.5, 1.0, 2.0]
    ours = our_keys(jit_fn, name, vals)
    theirs = triton_specs(jit_fn, name, vals)
    for (a, oa, ta), (b, ob, tb) in itertools.combinations(zip(vals, ours, theirs), 2):
        if oa == ob:
            assert ta == tb, f"{name}: jitlab keys {a!r} and {b!r} alike, Triton: {ta} vs {tb}"


def test_generic_spec_matches_inline_binder():
    params = adapter_mod.params_of(many_kinds)
    bind, layout = make_binder("k", KeySpec(tuple(params), frozenset({"n"}), frozenset(), (), 0))
    for v in INTS:
        kw = dict(x_ptr=None, y_ptr=None, opt_ptr=None, n=v, stride=1, scale=1.0, flag=True, BLOCK=16, MODE=0)
        assert bind(**kw)[0][0] == keys.spec(v), v


def test_constexpr_types_are_not_conflated():
    assert keys.constexpr_item(1) != keys.constexpr_item(True) != keys.constexpr_item(1.0)
    assert keys.constexpr_item(1) != keys.constexpr_item(1.0)
    with pytest.raises(TypeError):
        keys.constexpr_item([1])


def test_describe():
    assert keys.describe(keys.spec(1)) == "i32 ==1"
    assert keys.describe(keys.spec(2**31)) == "i64 %16==0"
    assert keys.describe(keys.spec(torch.empty(4, dtype=torch.float16)[1:])) == "tensor torch.float16 misaligned"


def test_native_keyer_matches_python_items():
    """The C keyer (native_key.h) builds exactly the items of the Python binder, for every kind of value."""
    from jitlab._triton import native

    for jit_fn in (many_kinds, no_spec, annotated):
        params = adapter_mod.params_of(jit_fn)
        spec = KeySpec(tuple(params), frozenset(p.name for p in params if not p.constexpr),
                       frozenset(p.name for p in params if p.constexpr), (), 0)
        keyer, why = native.make_keyer(spec.codes(), torch.Tensor, keys.spec, keys.constexpr_item)
        if keyer is None:
            pytest.skip(why)
        bind, _ = make_binder("k", spec)
        for v in values() + [[1], 0.0, -0.0, float("nan"), (3, 2), (3.0, 2), "s", torch.float16]:
            for p in params:
                kw = {q.name: (torch.empty(4) if not q.constexpr else 16) for q in params}
                kw[p.name] = v
                try:
                    want = bind(**kw)[0]
                except Exception as e:  # noqa: BLE001 - the hit path falls back to Triton on either error
                    with pytest.raises(type(e)):
                        hash(keyer((), 0, tuple(kw.values())))  # unhashable items fail at the dict lookup
                    continue
                assert keyer((), 0, tuple(kw.values())) == want, (jit_fn, p.name, v)
