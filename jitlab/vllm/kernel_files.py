"""vLLM's Triton attention kernels without installing vLLM: the real files, plus small stand-ins.

vLLM 0.26.0's wheel is 304 MB (751 MB installed) and `import vllm...` pulls transformers,
huggingface_hub, regex, httpx2 and more through its package plumbing. The kernels and their
wrappers need none of that. `build(dest)` downloads the wheel once (`pip download --no-deps`, so
pip's index configuration applies), copies the files below into `dest/vllm/` unchanged, checks
each against the wheel's RECORD (sha256), writes the stand-ins and deletes the wheel: `dest` is
~190 KB, small enough for the CPU tests (`.vllm/`, git-ignored) and a GPU machine's carry.

    python -m jitlab.vllm.kernel_files --dest .vllm        # experiments/vllm_carry.sh does this

Real (from the wheel, byte for byte): see REAL_FILES. Stand-ins (see STANDINS; each says what it
replaces): the package `__init__`s, `vllm.logger` (stdlib logging), `vllm.platforms` (the CUDA
platform's answers to the four questions the kernel files ask), `vllm.triton_utils` (plain
`triton` / `triton.language`), and three modules reduced to the one or two definitions the kernel
files import, whose source is cut out of the real file with `ast` (no vLLM code is retyped).
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

VERSION = "0.26.0"
REAL_FILES = (
    "vllm/version.py",
    "vllm/_version.py",
    "vllm/envs.py",  # VLLM_BATCH_INVARIANT; imports only the standard library at import time
    "vllm/v1/__init__.py",
    "vllm/v1/attention/__init__.py",
    "vllm/v1/attention/ops/__init__.py",
    "vllm/v1/attention/ops/triton_attention_helpers.py",
    "vllm/v1/attention/ops/triton_unified_attention.py",
    "vllm/v1/attention/ops/triton_reshape_and_cache_flash.py",
)
# Definitions cut out of real files for the reduced stand-ins: stand-in path -> (real path, names).
EXCERPTS = {
    "vllm/v1/kv_cache_interface.py": ("vllm/v1/kv_cache_interface.py", ("KVQuantMode",)),
    "vllm/utils/torch_utils.py": ("vllm/utils/torch_utils.py", ("is_quantized_kv_cache",)),
    "vllm/model_executor/layers/quantization/utils/quant_utils.py": (
        "vllm/model_executor/layers/quantization/utils/quant_utils.py", ("get_fp8_min_max",)),
}
_HEADER = '"""jitlab stand-in for vLLM {what} (see jitlab/vllm/kernel_files.py)."""\n'
STANDINS = {
    "vllm/__init__.py": _HEADER.format(what="package plumbing: the real one imports the engine") +
    "from .version import __version__, __version_tuple__  # noqa: F401\n\nJITLAB_STANDIN = True\n",
    "vllm/logger.py": _HEADER.format(what="logging") +
    "import logging\n\n\ndef init_logger(name):\n    return logging.getLogger(name)\n",
    "vllm/triton_utils/__init__.py": _HEADER.format(what="triton_utils: Triton is installed here") +
    "import triton  # noqa: F401\nimport triton.language as tl  # noqa: F401\n",
    "vllm/platforms/__init__.py": _HEADER.format(what="platform detection: answers as CudaPlatform does") + '''
import torch


class _CudaPlatform:
    """The questions the kernel files ask, answered as vLLM's CudaPlatform answers them."""

    @staticmethod
    def _capability():
        return torch.cuda.get_device_capability() if torch.cuda.is_available() else None

    def fp8_dtype(self):
        return torch.float8_e4m3fn

    def is_fp8_fnuz(self):
        return False

    def is_rocm(self):
        return False

    def is_xpu(self):
        return False

    def has_device_capability(self, capability, device_id=0):
        cap = self._capability()
        if cap is None:
            return False
        if isinstance(capability, tuple):
            return cap >= capability
        return cap[0] * 10 + cap[1] >= capability

    def is_device_capability_family(self, capability, device_id=0):
        cap = self._capability()
        return cap is not None and (cap[0] * 10 + cap[1]) // 10 == capability // 10


current_platform = _CudaPlatform()
''',
    "vllm/v1/kv_cache_interface.py": _HEADER.format(what="kv_cache_interface: KVQuantMode only") +
    "from enum import IntEnum\n",
    "vllm/utils/__init__.py": _HEADER.format(what="utils"),
    "vllm/utils/torch_utils.py": _HEADER.format(what="torch_utils: is_quantized_kv_cache only"),
    "vllm/model_executor/__init__.py": _HEADER.format(what="model_executor"),
    "vllm/model_executor/layers/__init__.py": _HEADER.format(what="model_executor.layers"),
    "vllm/model_executor/layers/quantization/__init__.py": _HEADER.format(what="quantization"),
    "vllm/model_executor/layers/quantization/utils/__init__.py": _HEADER.format(what="quantization.utils"),
    "vllm/model_executor/layers/quantization/utils/quant_utils.py": _HEADER.format(
        what="quant_utils: FP8_DTYPE and get_fp8_min_max only") +
    "import torch\n\nfrom vllm.platforms import current_platform\n\nFP8_DTYPE = current_platform.fp8_dtype()\n",
}
_DONE = ".jitlab-complete"


def _excerpt(source: str, names: tuple[str, ...], path: str) -> str:
    tree = ast.parse(source)
    found = {n.name: ast.get_source_segment(source, n) for n in tree.body
             if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in names}
    missing = [n for n in names if n not in found]
    if missing:
        raise RuntimeError(f"{path} in vllm {VERSION} has no {missing}")
    return "".join(f"\n\n# from {path} (unchanged)\n{found[n]}\n" for n in names)


def _record(z: zipfile.ZipFile) -> dict[str, str]:
    rec = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
    out = {}
    for line in z.read(rec).decode().splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1].startswith("sha256="):
            out[parts[0]] = parts[1][len("sha256="):]
    return out


def _checked(z: zipfile.ZipFile, record: dict[str, str], path: str) -> bytes:
    data = z.read(path)
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    if record.get(path) != digest:
        raise RuntimeError(f"{path}: sha256 does not match the wheel's RECORD")
    return data


def extract(wheel: Path, dest: Path) -> Path:
    """Write the real files and the stand-ins of `wheel` into `dest/vllm/`."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel) as z:
        record = _record(z)
        files = {p: _checked(z, record, p) for p in REAL_FILES}
        for stand_in, (real, names) in EXCERPTS.items():
            src = _checked(z, record, real).decode()
            files[stand_in] = (STANDINS[stand_in] + _excerpt(src, names, real)).encode()
    for path, text in STANDINS.items():
        files.setdefault(path, text.encode())
    for path, data in files.items():
        (tmp / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp / path).write_bytes(data)
    (tmp / "vllm" / _DONE).write_text(VERSION + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def download(into: Path) -> Path:
    """`pip download --no-deps vllm==VERSION` (pip's index configuration applies)."""
    r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", str(into), f"vllm=={VERSION}"], capture_output=True, text=True, timeout=900)
    wheels = sorted(into.glob(f"vllm-{VERSION}-*.whl"))
    if r.returncode != 0 or not wheels:
        raise RuntimeError(f"cannot download vllm=={VERSION}: {(r.stderr or r.stdout).strip()[-300:]}")
    return wheels[0]


def is_built(dest: Path) -> bool:
    marker = Path(dest) / "vllm" / _DONE
    return marker.exists() and marker.read_text().strip() == VERSION


def build(dest: str | Path = ".vllm", wheel: str | Path | None = None) -> Path:
    """`dest/vllm/` with vLLM's kernel files and the stand-ins (downloads the wheel unless given).
    Idempotent: an existing complete build of this version is reused."""
    dest = Path(dest)
    if is_built(dest):
        return dest
    if wheel is not None:
        return extract(Path(wheel), dest)
    with tempfile.TemporaryDirectory(prefix="vllm-wheel-") as d:
        return extract(download(Path(d)), dest)


def activate(dest: str | Path = ".vllm") -> None:
    """Make `import vllm` find `dest` (first on sys.path). Raises if another vllm is already imported."""
    dest = Path(dest).resolve()
    loaded = sys.modules.get("vllm")
    if loaded is not None and Path(loaded.__file__).resolve().parent.parent != dest:
        raise RuntimeError(f"vllm is already imported from {loaded.__file__}, not {dest}")
    if str(dest) not in sys.path:
        sys.path.insert(0, str(dest))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dest", default=".vllm", help="folder that will hold vllm/ (default .vllm)")
    p.add_argument("--wheel", default=None, help=f"a vllm-{VERSION} wheel already on disk (else pip downloads it)")
    a = p.parse_args(argv)
    try:
        out = build(a.dest, a.wheel)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}/vllm: vLLM {VERSION} kernel files + stand-ins, {size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
