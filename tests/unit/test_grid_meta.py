"""Callable grids: what the native dispatcher passes a grid (jitlab._triton.gridmeta, dispatch.cpp's GridReads).

A grid whose code provably only reads constant names of its argument gets a dict of just those items;
every other grid gets Triton's whole dict. Checked two ways: the bytecode analysis shape by shape, and
whole launches through the native dispatcher against the generated Python hit path (the reference,
which always builds Triton's dict) with grids that read one, three or all arguments, unpack, store,
iterate, copy or mutate the dict, and grids that raise.
"""

from __future__ import annotations

import sys

import pytest
import torch
import triton

from jitlab import jitcache
from jitlab._triton import gridmeta
from jitlab._triton.gridmeta import reads

from .kernels_for_tests import many_kinds

N = 3
STORED: list = []


def spy() -> int:
    """How many items code outside a grid sees in the grid's argument (a frame walk, as a debugger does)."""
    return len(sys._getframe(1).f_locals["meta"])


def _rebinds(meta):
    meta = dict(meta)
    return (1,)


def _try_read(meta):
    x = meta["BLOCK"]
    try:
        y = meta["Y"]
    except KeyError:
        y = 1
    return (x, y)


def _gen(meta):
    yield meta["BLOCK"]


# (grid, the names it reads or None for Triton's whole dict)
SHAPES = [
    (lambda meta: (N, meta["BLOCK"]), ("BLOCK",)),
    (lambda meta: (meta["n"], meta["stride"] * meta["BLOCK"], meta["n"]), ("n", "stride", "BLOCK")),
    (lambda meta: (meta.get("n"), meta.get("nope", 4)), ("n", "nope")),
    (lambda meta: (1 if "MODE" in meta else 2, 1 if "x" not in meta else 3), ("MODE", "x")),
    (lambda meta: (meta["n"] if N else meta["stride"],), ("n", "stride")),
    (lambda meta: (4,), ()),
    (_try_read, ("BLOCK", "Y")),
    (lambda meta: (sum(1 for _ in meta),), None),                   # iterated (a generator: a closure)
    (lambda meta: tuple(meta), None),                               # iterated
    (lambda meta: (len(meta.keys()),), None),
    (lambda meta: (len(meta),), None),
    (lambda meta: (meta.copy()["n"],), None),
    (lambda meta: (dict(**meta)["n"],), None),                      # **meta
    (lambda meta: STORED.append(meta) or (1,), None),               # stored
    (lambda meta: (isinstance(meta, dict),), None),
    (lambda meta: (meta == {},), None),
    (lambda meta: meta.update(n=1) or (1,), None),                  # mutated
    (lambda meta: (meta[("n" if N else "stride")],), None),         # a computed key
    (lambda meta: ((("n" if N else "stride")) in meta,), None),     # a computed membership test
    (lambda meta: (meta.get("n", N),), None),                       # a non-constant default
    (lambda meta: (meta.get("n", default=1),), None),               # a keyword
    (lambda meta: (len(locals()),), None),                          # the frame's locals
    (lambda meta: (lambda: meta["n"])(), None),                     # captured
    (lambda *a: (a[0]["n"],), None),                                # no named first parameter
    (_rebinds, None),
    (_gen, None),
    (lambda meta: tuple(meta[k] for k in "ab"), None),
]


@pytest.mark.parametrize("grid,want", SHAPES, ids=[str(i) for i in range(len(SHAPES))])
def test_reads_proves_only_constant_reads(grid, want):
    assert reads(grid.__code__) == want


def test_reads_refuses_what_is_not_a_code_object_and_too_many_names():
    assert reads("not code") is None
    many = eval("lambda meta: (" + ", ".join(f"meta['a{i}']" for i in range(9)) + ",)")  # noqa: S307
    assert reads(many.__code__) is None


def _t(n=64):
    return torch.empty(n + 8)[:n]


def _call(k, grid, x, y):
    return k[grid](x, y, None, 300, 2, 0.5, True, BLOCK=64, MODE=1)


def _triton_dict(x, y):
    return {"x_ptr": x, "y_ptr": y, "opt_ptr": None, "n": 300, "stride": 2, "scale": 0.5, "flag": True,
            "BLOCK": 64, "MODE": 1}


@pytest.mark.parametrize("grid,want", [
    (lambda meta: ((meta["n"] + meta["BLOCK"] - 1) // meta["BLOCK"],), (5, 1, 1)),           # reads one (twice)
    (lambda meta: (meta["n"], meta["stride"], meta.get("MODE") + ("flag" in meta)), (300, 2, 2)),  # three
    (lambda meta: (len([v for v in meta.values() if v is not None]),), (8, 1, 1)),           # all of them
    (lambda meta: ((lambda n, BLOCK, **rest: n // BLOCK)(**meta),), (4, 1, 1)),               # **meta
    (lambda meta: STORED.append(meta) or (len(meta),), (9, 1, 1)),                             # stored
    (lambda meta: (len(meta.copy()), len(list(meta.items()))), (9, 9, 1)),                     # copied
    (lambda meta: (meta.setdefault("extra", 7), len(meta)), (7, 10, 1)),                       # mutated
    (lambda meta: (meta.get("nope", 3), 1 if "nope" in meta else 2), (3, 2, 1)),               # absent names
], ids=["one", "three", "all", "unpack", "store", "copy", "mutate", "absent"])
def test_callable_grids_launch_as_the_python_reference(fake_adapter, grid, want):
    """Native dispatcher and Python hit path (the fixture's two params): the same grid launched, and a
    stored dict equals Triton's (so a grid that keeps it sees every argument)."""
    k = jitcache(many_kinds)
    x, y = _t(), _t()
    for _ in range(3):  # a miss, then hits (in C with the native param)
        STORED.clear()
        _call(k, grid, x, y)
        assert fake_adapter.launches[-1]["grid"] == want
        if STORED:
            assert STORED[0] == _triton_dict(x, y) and list(STORED[0]) == list(_triton_dict(x, y))
    assert k.counters()["hit"] == 2


def test_a_grid_that_only_reads_gets_just_those_items_on_a_native_hit(fake_adapter, request):
    """What the analysis buys: code outside the grid (a frame walk) sees one item on a native hit, all
    nine on the Python path and whenever a profiler or tracer is set."""
    k = jitcache(many_kinds)
    x, y = _t(), _t()
    grid = lambda meta: (spy(), meta["BLOCK"])  # noqa: E731
    _call(k, grid, x, y)  # the miss: Triton's dict
    assert fake_adapter.launches[-1]["grid"] == (9, 64, 1)
    _call(k, grid, x, y)
    native = request.node.callspec.params["fake_adapter"] == "native"
    assert fake_adapter.launches[-1]["grid"] == ((1 if native else 9), 64, 1)
    sys.setprofile(lambda *a: None)
    try:
        _call(k, grid, x, y)
    finally:
        sys.setprofile(None)
    assert fake_adapter.launches[-1]["grid"] == (9, 64, 1)


def test_a_grid_that_raises_raises_the_same_error_with_tritons_dict_in_its_frame(fake_adapter):
    k = jitcache(many_kinds)
    x, y = _t(), _t()
    _call(k, (1,), x, y)
    for _ in range(2):
        with pytest.raises(KeyError) as err:
            _call(k, lambda meta: (meta["n"], meta["nope"]), x, y)
        assert err.value.args == ("nope",)
        tb = err.value.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        assert tb.tb_frame.f_locals["meta"] == _triton_dict(x, y)


def _ins(opname, argval=None, arg=None, argrepr="", target=False):
    from types import SimpleNamespace

    return SimpleNamespace(opname=opname, opcode=-1, argval=argval, arg=arg, argrepr=argrepr, is_jump_target=target)


def test_superinstructions_of_newer_pythons():
    """3.13+ loads two locals in one instruction: the argument on top is a read like any other; the
    argument below another value, or a membership test of a loaded local, is not."""
    from jitlab._triton.gridmeta import _reads_in

    top = [_ins("LOAD_FAST_LOAD_FAST", ("n", "meta")), _ins("LOAD_CONST", "BLOCK"), _ins("BINARY_SUBSCR"),
           _ins("BINARY_OP", argrepr="+"), _ins("RETURN_VALUE")]
    assert _reads_in("meta", top) == ("BLOCK",)
    subscr14 = [_ins("LOAD_FAST_BORROW", "meta"), _ins("LOAD_CONST", "B"), _ins("BINARY_OP", argrepr="[]")]
    assert _reads_in("meta", subscr14) == ("B",)
    below = [_ins("LOAD_FAST_LOAD_FAST", ("meta", "n")), _ins("LOAD_CONST", "B"), _ins("BINARY_SUBSCR")]
    assert _reads_in("meta", below) is None
    member = [_ins("LOAD_CONST", "X"), _ins("LOAD_FAST_LOAD_FAST", ("k", "meta")), _ins("CONTAINS_OP")]
    assert _reads_in("meta", member) is None  # `k in meta`, with a constant lying lower on the stack
    jumped = [_ins("LOAD_FAST", "meta"), _ins("LOAD_CONST", "B", target=True), _ins("BINARY_SUBSCR")]
    assert _reads_in("meta", jumped) is None


_K = 7  # a module-level int a grid may read (part of the memo's key)


def _closure(k):
    return lambda meta: (triton.cdiv(k, meta["BLOCK"]), 1)


def _loop(meta):
    n = 0
    for _ in range(meta["n"]):
        n += 1
    return (n,)


@pytest.mark.parametrize("grid, want", [
    (lambda meta: (triton.cdiv(meta["n"], meta["BLOCK"]),), ((("triton", "cdiv"),), 0)),
    (_closure(3), ((("triton", "cdiv"),), 1)),
    (lambda meta: (meta.get("BLOCK", 4) * 2, 1 if "X" in meta else 2), ((), 0)),
    (lambda meta: (max(1, meta["n"] // 64) if meta["n"] > 3 else _K,), ((("max",), ("_K",)), 0)),
    (lambda meta: (meta["x"].shape[0],), None),                   # an attribute of a value read
    (lambda meta: (_SEEN.append(1) or 1,), None),                  # a method of a global object
    (lambda meta: (sum(i for i in range(meta["n"])),), None),     # a nested code object (generator)
    (lambda meta, extra=1: (extra,), None),                        # a second parameter (a default)
    (lambda *meta: (1,), None),                                    # *args
    (_loop, None),                                                 # a backward jump
])
def test_purity_proves_what_a_grid_result_can_depend_on(grid, want):
    """The grid memo's analysis (bench A/B grid-cache): the global chains and closure cells a pure grid's
    result depends on, or None for code that may do anything else."""
    assert gridmeta.purity(grid.__code__) == want


_SEEN: list = []


def test_pure_callables_are_compared_by_identity():
    """Triton's cdiv hashes by its cache_key (Python code): the dispatcher gets a tuple and compares identities."""
    allowed = gridmeta.pure_callables()
    assert type(allowed) is tuple and triton.cdiv in allowed and min in allowed and print not in allowed
