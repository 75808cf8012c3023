"""Build and import a one-file C or C++ extension with the host compiler, cached on disk.

Used by jitlab's C launcher and C++ dispatcher (`_triton/native.py`), the hit recorder and the bench's
C floors (`shared_library`, also with nvcc); nothing here is specific to Triton.
The shared object goes to $JITLAB_CACHE_DIR/<subdir>/<hash>/, keyed by the sources, the Python
build and the compiler, and is published atomically (concurrent builders race benignly).
Failures raise RuntimeError with the compiler's message; callers turn that into a fallback.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any, Callable

FLAGS = ["-O2", "-shared", "-fPIC", "-std=gnu11"]
CXX_FLAGS = ["-O2", "-shared", "-fPIC", "-std=c++17", "-w"]


def compiler(cxx: bool = False) -> str | None:
    """$CC / $CXX, else the first of cc, gcc, clang (c++, g++, clang++)."""
    env = os.environ.get("CXX" if cxx else "CC")
    if env:
        return shutil.which(env) or env
    names = ("c++", "g++", "clang++") if cxx else ("cc", "gcc", "clang")
    return next((p for p in map(shutil.which, names) if p), None)


def nvcc() -> str | None:
    """CUDA's compiler: on PATH, else /usr/local/cuda/bin/nvcc, else None."""
    default = Path("/usr/local/cuda/bin/nvcc")
    return shutil.which("nvcc") or (str(default) if default.exists() else None)


def shared_library(src: Path, subdir: str, cmd: list[str], after: tuple[str, ...] = (), tag: str = "",
                   timeout: int = 300) -> Path:
    """`src` built into a plain shared library (loaded with ctypes, not imported) by
    `cmd + [src] + after + ["-o", out]`, cached in $JITLAB_CACHE_DIR/<subdir>/ by the source and the
    command, published atomically. RuntimeError with the compiler's message on failure."""
    key = hashlib.sha256(src.read_bytes() + "\0".join([*cmd, *after]).encode()).hexdigest()[:16]
    out = cache_dir(subdir) / f"{key}{tag}.so"
    if out.exists():
        return out
    _compile_to(out, lambda tmp: [*cmd, str(src), *after, "-o", tmp], timeout,
                lambda c, msg: f"{Path(c[0]).name} failed: {msg[-500:]}")
    return out


def _compile_to(out: Path, command: Callable[[str], list[str]], timeout: int,
                failed: Callable[[list[str], str], str]) -> None:
    """Run `command(tmp)`, which writes a temporary file beside `out`, then publish it as `out` atomically
    (concurrent builders race benignly). RuntimeError(`failed(command, compiler output)`) on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=out.suffix, dir=out.parent)
    os.close(fd)
    try:
        cmd = command(tmp)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(failed(cmd, r.stderr or r.stdout))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cache_dir(subdir: str) -> Path:
    from . import settings

    return Path(settings.SETTINGS.cache_dir) / subdir


def build(modname: str, src: Path, subdir: str, headers: tuple[Path, ...] = (),
          include_dirs: tuple[str, ...] = (), cxx: bool = False, extra: tuple[str, ...] = (),
          timeout: int = 120) -> Any:
    """Compile `src` (which #includes `headers`) into extension module `modname` and import it.
    `cxx`: a C++ source; `extra`: more compiler/linker arguments (they are part of the cache key)."""
    cc = compiler(cxx)
    if cc is None:
        raise RuntimeError(f"no {'C++' if cxx else 'C'} compiler found (set {'CXX' if cxx else 'CC'})")
    flags = [*(CXX_FLAGS if cxx else FLAGS), *extra]
    py_inc = {sysconfig.get_paths()["include"], sysconfig.get_paths()["platinclude"]}
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    h = hashlib.sha256()
    for part in (src.read_bytes(), *(p.read_bytes() for p in headers), sys.version.encode(),
                 suffix.encode(), cc.encode(), " ".join(flags).encode(), "|".join(include_dirs).encode()):
        h.update(part)
    out_dir = cache_dir(subdir) / h.hexdigest()[:20]
    so = out_dir / (modname + suffix)
    if not so.exists():
        incs = [f"-I{d}" for d in (*sorted(py_inc), *include_dirs, str(src.parent))]
        _compile_to(so, lambda tmp: [cc, *incs, str(src), "-o", tmp, *flags], timeout,
                    lambda c, msg: f"C build failed ({' '.join(c)}): {msg[-2000:]}")
    loader = importlib.machinery.ExtensionFileLoader(modname, str(so))
    spec = importlib.util.spec_from_file_location(modname, str(so), loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod
