"""Where a measurement came from: machine, GPU, driver, library versions, jitlab commit.

`provenance()` is cheap after the first call (cached), never raises, and imports nothing from
OpenTelemetry. On a machine without a GPU, `gpu` is "none" and `driver` is "none".
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

UNKNOWN = "unknown"


def _safe(fn, default=UNKNOWN):
    try:
        v = fn()
        return default if v is None or v == "" else v
    except Exception:  # provenance must never break an experiment
        return default


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _torch_version() -> str:
    t = sys.modules.get("torch")
    if t is not None and getattr(t, "__version__", None):
        return str(t.__version__)
    return _dist_version("torch")


def _triton_version() -> str:
    t = sys.modules.get("triton")
    if t is not None and getattr(t, "__version__", None):
        return str(t.__version__)
    return _dist_version("triton")


def _jitlab_version() -> str:
    j = sys.modules.get("jitlab")
    v = getattr(j, "__version__", None) if j is not None else None
    return str(v) if v else _dist_version("jitlab")


def _run(cmd: list[str], cwd: str | None = None, timeout: float = 5.0) -> str | None:
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def _git_commit() -> str:
    """Short sha of the checkout jitlab is imported from, "+dirty" if tracked files are modified;
    "unknown" when jitlab is not imported from a git checkout (or git is missing)."""
    from . import settings

    if settings.SETTINGS.commit:  # a copy of the tree sent to a GPU machine: JITLAB_COMMIT names it
        return settings.SETTINGS.commit
    here = Path(__file__).resolve().parent
    top = _run(["git", "rev-parse", "--show-toplevel"], cwd=str(here))
    if not top:
        return UNKNOWN
    sha = _run(["git", "rev-parse", "--short", "HEAD"], cwd=top)
    if not sha:
        return UNKNOWN  # a repository without commits
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=top)
    return sha + ("+dirty" if status else "")


def _driver_version() -> str:
    # Cheapest first: the kernel module's version file (no subprocess, no CUDA context).
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        for tok in text.split():
            parts = tok.split(".")
            if len(parts) >= 2 and all(p.isdigit() for p in parts):
                return tok
    except OSError:
        pass
    out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if out:
        return out.splitlines()[0].strip()
    return "none"


def _cuda() -> tuple[bool, str, str]:
    """(cuda available, gpu name, cuda runtime version torch was built with)."""
    try:
        import torch  # the project's core dependency; experiments have it imported already
    except Exception:
        return False, "none", "none"
    runtime = str(getattr(torch.version, "cuda", None) or "none")
    try:
        if not torch.cuda.is_available():
            return False, "none", runtime
        return True, str(torch.cuda.get_device_name(0)), runtime
    except Exception:
        return False, "none", runtime


def _cpu_model() -> str:
    """The host CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def _static() -> dict:
    cuda, gpu, cuda_runtime = _safe(_cuda, (False, "none", "none"))
    driver = _safe(_driver_version, "none") if cuda else "none"
    return {
        "gpu": gpu,
        "gpu_count": _safe(lambda: __import__("torch").cuda.device_count(), 0) if cuda else 0,
        "driver": driver,
        "cuda_available": bool(cuda),
        "cuda_runtime": cuda_runtime,
        "torch": _safe(_torch_version),
        "triton": _safe(_triton_version),
        "python": platform.python_version(),
        "jitlab": _safe(_jitlab_version),
        "jitlab_commit": _safe(_git_commit),
        "hostname": _safe(socket.gethostname),
        "cpu": _safe(_cpu_model),
        "cpu_count": _safe(os.cpu_count, 0),
        "platform": _safe(platform.platform),
        "pid": os.getpid(),
    }


def provenance() -> dict:
    """A dict describing this machine and software: gpu, gpu_count, driver, cuda_available,
    cuda_runtime, torch, triton, python, jitlab, jitlab_commit, hostname, cpu (host CPU model),
    cpu_count, platform, pid, date.

    Everything but `date` (ISO 8601, UTC, now) is computed once per process. Never raises."""
    try:
        d = dict(_static())
    except Exception:
        d = {"gpu": "none", "driver": "none", "cuda_available": False}
    d["pid"] = os.getpid()
    d["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    d.update(_dispatcher())
    return d


def _dispatcher() -> dict:
    """Whether jitlab's C++ dispatcher was built in this process, and how long that took (s)."""
    import sys

    native = sys.modules.get("jitlab._triton.native")
    if native is None:
        return {"dispatcher": "not requested"}
    mod, why = native.DISPATCH.get() if native.DISPATCH.seconds is not None else (None, "not built")
    out = {"dispatcher": "built" if mod is not None else why}
    if native.DISPATCH.seconds is not None:
        out["dispatcher_build_s"] = round(native.DISPATCH.seconds, 1)
    return out


def clear_cache() -> None:
    """Forget the cached values (tests; after a fork into a different environment)."""
    _static.cache_clear()
