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
    assert keys.describe(item, "options") == "num_warps=4.0, num_stages=np.int64(2), debug=True"
    assert keys.options_item({"num_warps": 4}) != keys.options_item({"num_warps": 4.0})
