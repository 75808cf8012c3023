"""The CPU-checkable adapter parts against other Triton versions than the one installed.

For each version, Triton is pip-installed (no dependencies) into .cache/triton-<version>/ and put
first on PYTHONPATH for a subprocess that runs the key, cache and pass-through tests. Those use
Triton's real binder/specialization code and probes, which run without a GPU. Skipped with a reason
when the wheel cannot be downloaded (no package index reachable).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# 3.3: oldest supported launcher contract; 3.9: newest on PyPI. 3.6 (the H200's) is the installed one.
VERSIONS = ["3.3.1", "3.9.0"]
TESTS = ["tests/unit/test_keys.py", "tests/unit/test_cache_cpu.py", "tests/unit/test_passthrough.py",
         "tests/unit/test_safety.py"]


def _install(version: str) -> Path:
    target = ROOT / ".cache" / f"triton-{version}"
    if (target / "triton" / "__init__.py").exists():
        return target
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        f"triton=={version}"], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.skip(f"cannot install triton=={version}: {r.stderr.strip()[-300:]}")
    return target


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_adapter_parts_on_other_triton(version):
    target = _install(version)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run([sys.executable, "-c", "import triton; print(triton.__version__)"], env=env,
                         capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == version, out.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], env=env,
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout.splitlines()[-1]
