"""`jitlab doctor`: what jitlab sees on this machine, as plain text (nothing is built or changed)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import importlib.metadata
import os
import shutil
import subprocess
import sys

from .. import __version__, settings
from .._extras import EXTRAS

#: The module each extra brings that tells whether it is installed.
EXTRA_PROBES = {"trace": "opentelemetry.sdk", "lab": "pandas", "notebooks": "matplotlib", "vllm": "vllm"}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _gpu() -> list[str]:
    out = []
    try:
        import torch

        cuda = torch.version.cuda or (f"hip {torch.version.hip}" if getattr(torch.version, "hip", None) else None)
        out.append(f"torch CUDA/HIP: {cuda or 'none (CPU build)'}")
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            names = ", ".join(torch.cuda.get_device_name(i) for i in range(n))
            out.append(f"GPU: {n} x {names}")
        else:
            out.append("GPU: none: use TRITON_INTERPRET=1 (kernels run in Triton's interpreter; jitlab passes through)")
    except Exception as e:  # noqa: BLE001 - doctor reports, never fails
        out.append(f"GPU: unknown ({type(e).__name__}: {e})")
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            r = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=10)
            out.append(f"driver: NVIDIA {r.stdout.split()[0] if r.stdout.split() else '?'}")
        except (OSError, subprocess.SubprocessError) as e:
            out.append(f"driver: nvidia-smi failed ({e})")
    else:
        out.append("driver: no nvidia-smi on PATH")
    return out


def _native() -> list[str]:
    """The C launcher and C++ dispatcher builds found in jitlab's cache (built on first use)."""
    from .. import _cbuild

    out = []
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for what, subdir, module in (("C launcher", "native", "_jitlab_native"),
                                 ("native dispatcher", "dispatch", "_jitlab_dispatch")):
        d = _cbuild.cache_dir(subdir)
        built = sorted(d.glob(f"*/{module}{suffix}"), key=lambda p: p.stat().st_mtime) if d.is_dir() else []
        # builds are keyed by jitlab's sources, Python, compiler (and torch, for the dispatcher): the newest one
        # in the cache is the likeliest to be this installation's, not proof of it
        out.append(f"{what}: newest build in the cache: {built[-1]} (each jitlab/Python/torch builds its own on "
                   "first launch)" if built else
                   f"{what}: not built yet (built on first launch, once per torch/Python, under {d})")
    if importlib.util.find_spec("torch") is None:
        out.append("native dispatcher: needs torch, which is not installed (launches take the Python hit path)")
    cc, cxx = _cbuild.compiler(), _cbuild.compiler(cxx=True)
    out.append(f"compilers: C {cc or 'none'}, C++ {cxx or 'none'} (without them: Triton's launcher)")
    return out


def _jitlab_on_triton() -> list[str]:
    try:
        from .._triton import probe

        why = probe.unsupported_reason()
    except Exception as e:  # noqa: BLE001
        why = f"{type(e).__name__}: {e}"
    return [f"jitlab fast path here: {'yes' if why is None else 'no, pass-through: ' + why}"]


def _extras() -> list[str]:
    out = []
    for extra in EXTRAS:
        probe = EXTRA_PROBES.get(extra)
        found = probe is not None and importlib.util.find_spec(probe.split(".")[0]) is not None
        if found and "." in probe:
            try:
                found = importlib.util.find_spec(probe) is not None
            except ImportError:
                found = False
        out.append(f"  [{extra}] {'installed' if found else 'missing'}: {EXTRAS[extra]}")
    return out


def _variables() -> list[str]:
    names = sorted(k for k in os.environ if k.startswith(("JITLAB_", "OTEL_", "TRITON_")))
    out = [f"  {k}={os.environ[k]}" for k in names] or ["  (none set)"]
    try:
        settings.reload()
        s = settings.SETTINGS
        out.append("  in force: " + ", ".join(f"{n}={getattr(s, n)!r}" for n in settings.Settings.names()))
    except settings.SettingError as e:
        out.append(f"  invalid: {e}")
    return out


def report() -> str:

    lines = [f"jitlab {__version__} ({os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})",
             f"python {sys.version.split()[0]} ({sys.executable})",
             f"triton {_version('triton')}, torch {_version('torch')}"]
    lines += _gpu()
    lines += _jitlab_on_triton()
    lines += _native()
    lines.append("extras:")
    lines += _extras()
    lines.append("settings (JITLAB_* are jitlab's; OTEL_* mean what OpenTelemetry says; TRITON_* are Triton's):")
    lines += _variables()
    return "\n".join(lines)
