"""Pass-through: the interpreter, no GPU driver, the kill switch. Never a crash, one warning."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest

from jitlab import jitcache, settings
from jitlab._triton import adapter as adapter_mod

from .kernels_for_tests import add_one


def test_no_gpu_driver_passes_through_with_one_warning(monkeypatch, no_gpu_driver):
    calls = []
    monkeypatch.setattr(type(add_one), "__getitem__", lambda self, grid: lambda *a, **k: calls.append(grid))
    from jitlab import cache

    monkeypatch.setattr(cache, "_WARNED", set())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        k1, _ = jitcache(add_one), jitcache(add_one)  # two kernels, one warning
    assert len([x for x in w if "pass-through" in str(x.message)]) == 1
    assert k1.passthrough_reason.startswith("no active GPU driver")
    # the warning says what to do: plain Triton cannot launch here either
    assert "set TRITON_INTERPRET=1" in k1.passthrough_reason and "'0 active drivers'" in k1.passthrough_reason
    k1[(3,)](None, None, 1)
    assert calls == [(3,)] and k1.counters()["fallback.passthrough"] == 1


def test_kill_switch_returns_the_kernel_before_any_probe(monkeypatch):
    monkeypatch.setenv("JITLAB_DISABLE", "1")
    settings.reload()
    try:
        monkeypatch.setattr(adapter_mod, "get_adapter", lambda: pytest.fail("probed despite JITLAB_DISABLE"))
        with pytest.warns(RuntimeWarning, match="JITLAB_DISABLE"):
            assert jitcache(check_keys=["nope"])(add_one) is add_one
    finally:
        monkeypatch.delenv("JITLAB_DISABLE")
        settings.reload()


INTERP = textwrap.dedent("""
    import os, warnings
    os.environ["TRITON_INTERPRET"] = "1"
    import torch, triton, triton.language as tl
    import jitlab
    from tests.unit.kernels_for_tests_interp import add_one
    k = jitlab.jitcache(add_one)
    x = torch.arange(300, dtype=torch.float32)
    y1, y2 = torch.empty_like(x), torch.empty_like(x)
    add_one[(3,)](x, y1, 300)
    k[(3,)](x, y2, 300)
    assert torch.equal(y1, y2) and torch.equal(y2, x + 1)
    print("reason:", k.passthrough_reason)
    print("counters:", k.counters())
""")


def test_interpreter_results_equal_interpreted_triton(tmp_path):
    src = open(__file__.replace("test_passthrough.py", "kernels_for_tests.py")).read()
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    for d in ("tests", "tests/unit"):
        (tmp_path / d / "__init__.py").write_text("")
    (tmp_path / "tests" / "unit" / "kernels_for_tests_interp.py").write_text(src)
    out = subprocess.run([sys.executable, "-c", INTERP], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "reason: interpreted kernel (TRITON_INTERPRET=1)" in out.stdout
    assert "'fallback.passthrough': 1" in out.stdout


def test_interpreter_without_numpy_names_numpy(monkeypatch):
    """Triton's interpreter needs numpy, which Triton does not install: the pass-through reason says so
    (numpy hidden: sys.modules["numpy"] = None makes it unfindable)."""
    import sys

    from jitlab._triton import probe

    import numpy  # noqa: F401  (installed in the dev environment)

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(probe, "interpreter_active", lambda: True)
    assert "numpy" not in probe.unsupported_reason()
    monkeypatch.setitem(sys.modules, "numpy", None)  # restored at teardown
    reason = probe.unsupported_reason()
    assert reason.startswith("TRITON_INTERPRET=1") and "needs numpy" in reason and "pip install numpy" in reason
