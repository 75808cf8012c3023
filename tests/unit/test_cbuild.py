"""`_cbuild.shared_library`: the one place a plain shared library is compiled (the bench's C floors use it
with nvcc or the host compiler), cached by source and command, failures as one RuntimeError."""

from __future__ import annotations

import ctypes
import dataclasses

import pytest

from jitlab import _cbuild, settings


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "SETTINGS", dataclasses.replace(settings.SETTINGS, cache_dir=str(tmp_path / "c")))
    return tmp_path


@pytest.fixture
def cc():
    found = _cbuild.compiler()
    if found is None:
        pytest.skip("no C compiler")
    return found


def test_a_library_is_built_once_and_loads(cache, cc):
    src = cache / "add.c"
    src.write_text("int jitlab_add(int a, int b) { return a + b; }\n")
    out = _cbuild.shared_library(src, "floor", [cc, "-O2", "-shared", "-fPIC"], tag="-t")
    assert out.parent == cache / "c" / "floor" and out.name.endswith("-t.so")
    assert ctypes.CDLL(str(out)).jitlab_add(2, 3) == 5
    mtime = out.stat().st_mtime_ns
    assert _cbuild.shared_library(src, "floor", [cc, "-O2", "-shared", "-fPIC"], tag="-t") == out
    assert out.stat().st_mtime_ns == mtime  # cached: not rebuilt
    assert _cbuild.shared_library(src, "floor", [cc, "-O1", "-shared", "-fPIC"], tag="-t") != out  # command keyed


def test_a_failed_build_is_one_runtime_error_and_leaves_nothing(cache, cc):
    src = cache / "bad.c"
    src.write_text("this is not C\n")
    with pytest.raises(RuntimeError, match="failed"):
        _cbuild.shared_library(src, "floor", [cc, "-shared", "-fPIC"])
    assert not list((cache / "c" / "floor").glob("*.so"))
