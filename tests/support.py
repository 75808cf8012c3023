"""Helpers shared by the CPU suite (tests/unit) and the GPU suite (tests/gpu): standard library only."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The @jitcache kernel of the traced child programs (tests/unit/test_telemetry_process.py's PLAIN,
# tests/otlp_collector.py's TRACED_LOOP), as source text: each child defines it as a plain program would.
ADD_ONE = """\
@jitcache
@triton.jit
def add_one(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=m) + 1, mask=m)
"""


def subprocess_env(**overrides: str) -> dict[str, str]:
    """The environment for a test's child Python: this checkout first on PYTHONPATH, ahead of (not instead
    of) the caller's own entries, which may be where packages are installed (the H200 runs with wheels
    unpacked onto PYTHONPATH)."""
    env = dict(os.environ, **overrides)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago (tests start servers on it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> bool:
    """True once 127.0.0.1:port accepts a connection; False if `proc` exits first or time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def child_env(interpret: bool = True, **extra) -> dict[str, str]:
    """A traced child's environment: none of the caller's OTEL_*/JITLAB_* variables, then `extra`.
    `interpret`: Triton's interpreter on CPU, also on a GPU host (CUDA hidden: the traces are CPU demos
    there too); else the GPU as it is (TRITON_INTERPRET removed)."""
    env = {k: v for k, v in subprocess_env().items() if not k.startswith(("OTEL_", "JITLAB_"))}
    env["PYTHONWARNINGS"] = "ignore"
    if interpret:
        env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    else:
        env.pop("TRITON_INTERPRET", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env
