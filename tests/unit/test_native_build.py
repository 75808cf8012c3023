"""jitlab's native launcher on a machine without a GPU.

- the C module builds with the host compiler and imports without libcuda; a missing driver or a
  failed build is a reason string, never a crash;
- `plan()` maps kernels compiled OFFLINE by Triton (sm90 target) to type codes, and refuses what the
  C launcher does not reproduce (checked against each kernel's PTX parameter list);
- the per-call C path is exercised against a stub `libcuda.so.1` (in a subprocess, on
  LD_LIBRARY_PATH) that records the bytes cuLaunchKernel would read: packing of every type,
  Triton 3.6's overflow errors, pointers, frozen slots, empty grids, context retain, CUDA errors.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import triton
import triton.language as tl

from jitlab import _cbuild, settings
from jitlab._triton import native

from .conftest import subprocess_env



def _have_compiler() -> bool:
    return _cbuild.compiler() is not None and shutil.which(_cbuild.compiler()) is not None


needs_cc = pytest.mark.skipif(not _have_compiler(), reason="no C compiler (cc/gcc/clang or $CC)")


def _libcuda_loadable() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The module built into a private cache dir; the process-wide decision is restored after."""
    if not _have_compiler():
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("jitlab-cache")
    old = os.environ.get("JITLAB_CACHE_DIR")
    os.environ["JITLAB_CACHE_DIR"] = str(d)
    settings.reload()
    native.reset()
    ok, where = native.available()
    yield SimpleNamespace(ok=ok, where=where, cache=d, mod=native._MOD)
    native.reset()
    if old is None:
        os.environ.pop("JITLAB_CACHE_DIR", None)
    else:
        os.environ["JITLAB_CACHE_DIR"] = old
    settings.reload()


# -- building -------------------------------------------------------------------------------------------
@needs_cc
def test_builds_and_imports_without_libcuda(built):
    assert built.ok, built.where
    so = Path(built.where)
    assert so.is_file() and so.is_relative_to(built.cache)
    m = built.mod
    assert callable(m.make) and callable(m.param_sizes) and m.LIVE is not None
    # cached: a second call neither rebuilds nor re-imports
    assert native.available() == (True, built.where)
    if not _libcuda_loadable():
        assert "libcuda.so.1" in m.driver_status()
        with pytest.raises(RuntimeError, match="libcuda.so.1"):
            m.make(0x1234, 4, 0, b"P", (m.LIVE,))


@needs_cc
def test_build_failure_is_a_reason(built, monkeypatch, tmp_path):
    monkeypatch.setenv("JITLAB_CACHE_DIR", str(tmp_path))
    settings.reload()
    for cc, needle in (("false", "C build failed"), (str(tmp_path / "no-such-cc"), "")):
        monkeypatch.setenv("CC", cc)
        native.reset()
        ok, reason = native.available()
        assert not ok and reason.startswith("native launcher unavailable") and needle in reason
        launch, why = native.make_launch(_fake_kernel({"x": "*fp32"}))
        assert launch is None and why == reason
    native.reset()


@needs_cc
def test_make_launch_without_driver_reports_reason(built, offline):
    if _libcuda_loadable():
        pytest.skip("libcuda present (the stub-driver tests cover this path here)")
    launch, why = native.make_launch(offline["vadd"])
    assert launch is None and "no CUDA driver" in why and "libcuda.so.1" in why


# -- plan(): offline-compiled kernels -------------------------------------------------------------------
@triton.jit
def vadd(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=m) + tl.load(y_ptr + offs, mask=m), mask=m)


@triton.jit
def mixed(a_ptr, b_ptr, opt_ptr, c_ptr, n, big, huge, scale, flag, k, BLOCK: tl.constexpr, MODE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(a_ptr + offs, mask=m).to(tl.float32) * scale + k
    if flag:
        x += big.to(tl.float32)
    if opt_ptr is not None:
        x += tl.load(opt_ptr + offs, mask=m).to(tl.float32)
    tl.store(b_ptr + offs, x.to(tl.float16), mask=m)
    tl.store(c_ptr + offs, (x + huge.to(tl.float32)).to(tl.bfloat16), mask=m)


@triton.jit
def annotated(x_ptr, y_ptr, a: tl.int8, b: tl.int16, c: tl.int32, d: tl.int64, e: tl.uint8, f: tl.uint16,
              g: tl.uint32, h: tl.uint64, p: tl.float16, q: tl.bfloat16, r: tl.float32, s: tl.float64,
              BLOCK: tl.constexpr):
    tl.store(x_ptr, a.to(tl.float32) + b.to(tl.float32) + c.to(tl.float32) + d.to(tl.float32))
    tl.store(x_ptr + 1, e.to(tl.float32) + f.to(tl.float32) + g.to(tl.float32) + h.to(tl.float32))
    tl.store(y_ptr, p.to(tl.float32) + q.to(tl.float32) + r + s.to(tl.float32))


@triton.jit
def device_desc(x_ptr, y_ptr, M, N, BLOCK: tl.constexpr):
    desc = tl.make_tensor_descriptor(x_ptr, shape=[M, N], strides=[N, 1], block_shape=[BLOCK, BLOCK])
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs[:, None] * BLOCK + offs[None, :], desc.load([0, 0]))


class FakeTensor:
    """What Triton's binder needs of a tensor (a tl dtype and data_ptr): no torch, no GPU."""

    def __init__(self, dtype, ptr=0):
        self.dtype, self._ptr = dtype, ptr

    def data_ptr(self):
        return self._ptr


def compile_offline(fn, *args, **kwargs):
    """triton.compile for sm90 with exactly the signature/constexprs/attrs Triton's JIT derives for
    these arguments (its own binder, as JITFunction._pack_args uses it)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend

    from jitlab._triton.adapter import offline_binder

    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    bound, spec, _ = offline_binder(fn)(*args, **kwargs)
    vals = list(bound.values())
    signature = {p.name: s[0] for p, s in zip(fn.params, spec)}
    constexprs = {(i,): vals[i] for i, s in enumerate(spec) if s[0] == "constexpr"}
    attrs = {(i,): backend.parse_attr(s[1]) for i, s in enumerate(spec) if isinstance(s[1], str)}
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target)


@pytest.fixture(scope="module")
def offline():
    f32, f16, bf16, i64 = tl.float32, tl.float16, tl.bfloat16, tl.int64
    return {
        "vadd": compile_offline(vadd, FakeTensor(f32), FakeTensor(f32), FakeTensor(f32), 1000, BLOCK=128),
        # None pointer and n == 1 become constexprs; 2**40 is i64, 2**63+1 u64, 1.5 fp32, True u1
        "mixed": compile_offline(mixed, FakeTensor(f32), FakeTensor(f16), None, FakeTensor(bf16), 1, 2**40,
                                 2**63 + 1, 1.5, True, 17, BLOCK=64, MODE="a"),
        "ints": compile_offline(mixed, FakeTensor(i64, 8), FakeTensor(f16), FakeTensor(f32), FakeTensor(bf16),
                                100, -5, 3, 2.0, False, 1, BLOCK=32, MODE="b"),
        "annotated": compile_offline(annotated, FakeTensor(f32), FakeTensor(f32), 1, 2, 3, 4, 5, 6, 7, 8,
                                     0.5, 0.25, 0.125, 1.0, BLOCK=16),
        "device_desc": compile_offline(device_desc, FakeTensor(f16), FakeTensor(f16), 64, 64, BLOCK=16),
    }


def test_codes_for_offline_kernels(offline):
    expect = {
        "vadd": (b"PPPix", [8, 8, 8, 4]),
        "mixed": (b"PPxPxLKfBixx", [8, 8, 8, 8, 8, 4, 1, 4]),
        "ints": (b"PPPPiiifBxxx", [8, 8, 8, 8, 4, 4, 4, 4, 1]),
        # annotated scalars keep their declared type (and value 1 stays a runtime i8)
        "annotated": (b"PPbhiLBHIKeEfdx", [8, 8, 1, 2, 4, 8, 1, 2, 4, 8, 2, 2, 4, 8]),
    }
    for name, (codes, sizes) in expect.items():
        p, reason = native.plan(offline[name])
        assert p is not None, (name, reason)
        assert p.codes == codes, (name, p.codes, offline[name].src.signature)
        assert p.n_tail == 2  # 3.5/3.6: global_scratch + profile_scratch, NULL when unused
        assert p.param_sizes == sizes + [8, 8]
        # the kernel's own PTX agrees (plan() refuses otherwise; asserted here explicitly)
        assert native.ptx_param_sizes(offline[name].asm["ptx"]) == p.param_sizes
        assert (p.num_warps, p.shared) == (offline[name].metadata.num_warps, offline[name].metadata.shared)


def test_code_table_matches_triton_36_formats():
    """Integer codes are the PyArg format letters of triton 3.6's make_launcher (driver.py)."""
    drv = pytest.importorskip("triton.backends.nvidia.driver")
    fmt = {"int8_t": "b", "int16_t": "h", "int32_t": "i", "int64_t": "L",
           "uint8_t": "B", "uint16_t": "H", "uint32_t": "I", "uint64_t": "K"}
    for ty, code in native.TYPE_CODES.items():
        if ty == "constexpr" or ty.startswith("f") or ty == "bf16":
            continue
        assert fmt[drv.ty_to_cpp(ty)] == code, ty
    for ty, code in (("fp16", "e"), ("bf16", "E"), ("fp32", "f"), ("f32", "f"), ("fp64", "d")):
        assert drv.ty_to_cpp(ty) == "double" and native.TYPE_CODES[ty] == code
    assert native.code_of("*fp32") == native.code_of("*kfp16") == "P"
    assert native.code_of(("i32", "i32")) is None and native.code_of("fp8e4nv") is None


def _fake_kernel(signature, ptx=None, **md):
    base = dict(num_warps=4, num_ctas=1, shared=0, global_scratch_size=0, global_scratch_align=1,
                profile_scratch_size=0, profile_scratch_align=1, launch_cooperative_grid=False,
                launch_pdl=False, tensordesc_meta=[], instrumentation_mode="",
                target=SimpleNamespace(backend="cuda", arch=90, warp_size=32))
    base.update(md)
    return SimpleNamespace(metadata=SimpleNamespace(**base), src=SimpleNamespace(signature=signature),
                           asm={"ptx": ptx} if ptx else {}, name="fake", function=None)


@pytest.mark.parametrize("md,signature,needle", [
    ({"num_ctas": 2}, {"x": "*fp32"}, "num_ctas=2"),
    ({"cluster_dims": (2, 1, 1)}, {"x": "*fp32"}, "cluster_dims"),
    ({"launch_cooperative_grid": True}, {"x": "*fp32"}, "launch_cooperative_grid"),
    ({"launch_pdl": True}, {"x": "*fp32"}, "launch_pdl"),
    ({"global_scratch_size": 128}, {"x": "*fp32"}, "global_scratch_size=128"),
    ({"profile_scratch_size": 64}, {"x": "*fp32"}, "profile_scratch_size=64"),
    ({"instrumentation_mode": "consan"}, {"x": "*fp32"}, "instrumentation_mode"),
    ({"tensordesc_meta": [{"swizzle": 1}]}, {"d": "tensordesc<fp16[16, 16]>"}, "tensor descriptor"),
    ({}, {"d": "tensordesc<fp16[16, 16]>"}, "tensordesc"),
    ({}, {"t": ("i32", "*fp32")}, "'t'"),
    ({}, {"m": "nvTmaDesc"}, "nvTmaDesc"),
    ({}, {"s": "fp8e4nv"}, "fp8e4nv"),
    ({"target": SimpleNamespace(backend="hip")}, {"x": "*fp32"}, "backend"),
])
def test_refusals(md, signature, needle):
    p, reason = native.plan(_fake_kernel(signature, **md))
    assert p is None and needle in reason
    launch, why = native.make_launch(_fake_kernel(signature, **md))
    assert launch is None and why.startswith("refused:") and needle in why


def test_real_refusals(offline):
    # device-side tensor descriptors need a per-launch global scratch allocation
    p, reason = native.plan(offline["device_desc"])
    assert p is None and "global_scratch_size" in reason
    assert native.plan(SimpleNamespace())[0] is None


def test_ptx_cross_check():
    ptx = """.visible .entry k(
\t.param .u64 .ptr .global .align 1 k_param_0,
\t.param .u32 k_param_1,
\t.param .align 2 .b8 k_param_2[2],
\t.param .u64 .ptr .global .align 1 k_param_3,
\t.param .u64 .ptr .global .align 1 k_param_4
)
.reqntid 128"""
    assert native.ptx_param_sizes(ptx) == [8, 4, 2, 8, 8]
    assert native.plan(_fake_kernel({"x": "*fp32", "n": "i32", "h": "bf16", "B": "constexpr"}, ptx))[0] is not None
    p, reason = native.plan(_fake_kernel({"x": "*fp32", "n": "i64", "h": "bf16"}, ptx))
    assert p is None and "PTX parameters" in reason
    assert native.ptx_param_sizes(".entry k(\n)\n") == []
    assert native.ptx_param_sizes("no entry") is None


# -- the C path against a stub driver -----------------------------------------------------------------------
STUB = r"""
#include <stdint.h>
#include <string.h>
#include <stddef.h>
typedef int R;
static size_t sizes[256]; static int n_sizes = -1;
static unsigned char rec[4096]; static size_t rec_len;
static uint64_t st[16]; /* 0 launches 1 ptr_attr 2 retains 3 sets 4 dev 5 fn 6-8 grid 9 block 10 shared 11 stream
                           12 of the launches, those through cuLaunchKernelEx */
static int have_ctx = 1, launch_err = 0;
void stub_config(int ctx, int err, int n, const size_t *s) {
  have_ctx = ctx; launch_err = err; n_sizes = n; for (int i = 0; i < n; i++) sizes[i] = s[i];
}
size_t stub_record(unsigned char *out) { memcpy(out, rec, rec_len); return rec_len; }
void stub_state(uint64_t *out) { memcpy(out, st, sizeof st); }
R cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                 unsigned shared, void *stream, void **params, void **extra) {
  if (launch_err) return launch_err;
  st[0]++; st[5] = (uint64_t)(uintptr_t)f; st[6] = gx; st[7] = gy; st[8] = gz;
  st[9] = (uint64_t)bx * 1000000 + by * 1000 + bz; st[10] = shared; st[11] = (uint64_t)(uintptr_t)stream;
  rec_len = 0;
  for (int i = 0; i < n_sizes; i++) { memcpy(rec + rec_len, params[i], sizes[i]); rec_len += sizes[i]; }
  return extra ? 999 : 0;
}
typedef struct { unsigned gx, gy, gz, bx, by, bz, shared; void *stream; void *attrs; unsigned nattrs; } Config;
R cuLaunchKernelEx(const Config *c, void *f, void **params, void **extra) {  /* CUlaunchConfig's layout */
  if (c->nattrs) return 998;
  R r = cuLaunchKernel(f, c->gx, c->gy, c->gz, c->bx, c->by, c->bz, c->shared, c->stream, params, extra);
  if (!r) st[12]++;
  return r;
}
R cuCtxGetCurrent(void **c) { *c = have_ctx ? (void *)0x1 : 0; return 0; }
R cuCtxSetCurrent(void *c) { st[3]++; have_ctx = 1; return 0; }
R cuDeviceGet(int *d, int ord) { *d = ord; st[4] = ord; return 0; }
R cuDevicePrimaryCtxRetain(void **c, int d) { st[2]++; *c = (void *)0x2; return 0; }
R cuGetErrorString(R e, const char **s) { *s = e == 700 ? "an illegal memory access was encountered" : "stub"; return 0; }
R cuPointerGetAttribute(void *data, int attr, uint64_t p) {   /* "device memory" is [0x7000_0000_0000, +4G) */
  st[1]++;
  if (p >= 0x700000000000ULL && p < 0x700100000000ULL) { *(uint64_t *)data = p; return 0; }
  return 1; /* CUDA_ERROR_INVALID_VALUE */
}
R cuFuncGetParamInfo(void *f, size_t i, size_t *off, size_t *size) {
  if ((int)i >= n_sizes) return 1; *off = 0; *size = sizes[i]; return 0;
}
"""

SCRIPT = r"""
import ctypes, struct, sys
from types import SimpleNamespace
from jitlab._triton import native
ok, where = native.available(); assert ok, where
m = native.module()
assert m.driver_status() is None, m.driver_status()
stub = ctypes.CDLL("libcuda.so.1")  # the same (already dlopen'ed) stub

def config(sizes, ctx=1, err=0):
    arr = (ctypes.c_size_t * max(1, len(sizes)))(*sizes)
    stub.stub_config(ctx, err, len(sizes), arr)

def state():
    out = (ctypes.c_uint64 * 16)(); stub.stub_state(out); return list(out)

def record():
    buf = ctypes.create_string_buffer(4096); n = stub.stub_record(buf); return buf.raw[:n]

class Dev:   # a CUDA tensor as the launcher sees it
    is_cuda = True
    def __init__(self, p): self.p = p
    def data_ptr(self): return self.p
class Host(Dev):  # a CPU torch tensor: is_cuda False, host address
    is_cuda = False
class Foreign:  # data_ptr() but no is_cuda: Triton's cuPointerGetAttribute check applies
    def __init__(self, p): self.p = p
    def data_ptr(self): return self.p
DEV = 0x700000001000
L = m.LIVE
codes = b"PPxbhiLBHIKeEfdP"
sizes = [8, 8, 1, 2, 4, 8, 1, 2, 4, 8, 2, 2, 4, 8, 8, 8, 8]
config(sizes)
launch = m.make(0xABC, 4, 1024, codes, (L,) * len(codes), 2, 0)
vals = (Dev(DEV), 0x1234, "ignored-constexpr", 255, -32768, -7, -2**63, 257, 70000, 2**32 + 5, 2**64 - 1,
        1.0009765625, 3.14159, 2.5, 1e300, None)
launch(3, 2, 1, 777, vals)
s = state()
assert s[0] == 1 and s[5] == 0xABC and s[6:9] == [3, 2, 1] and s[9] == 128 * 1000000 + 1001, s
assert s[10] == 1024 and s[11] == 777 and s[1] == 0, s   # is_cuda fast path: no cuPointerGetAttribute
bf = struct.unpack("<I", struct.pack("<f", 3.14159))[0] >> 16
want = (struct.pack("<QQ", DEV, 0x1234) + struct.pack("<BhiqBHIQ", 255, -32768, -7, -2**63, 257 & 0xFF,
        70000 & 0xFFFF, (2**32 + 5) & 0xFFFFFFFF, 2**64 - 1) + struct.pack("<e", 1.0009765625)
        + struct.pack("<H", bf) + struct.pack("<f", 2.5) + struct.pack("<d", 1e300) + struct.pack("<Q", 0)
        + b"\0" * 16)
assert record() == want, (record().hex(), want.hex())

# Triton 3.6's PyArg_ParseTuple errors, raised before any launch
def raises(exc, text, v, i):
    vv = list(vals); vv[i] = v
    try:
        launch(1, 1, 1, 0, tuple(vv))
    except exc as e:
        assert text in str(e), (text, str(e)); return
    raise AssertionError(f"no {exc.__name__} for {v!r} at {i}")
before = state()[0]
raises(OverflowError, "greater than maximum", 256, 3)        # 'b' is 0..255
raises(OverflowError, "less than minimum", -1, 3)
raises(OverflowError, "less than minimum", -32769, 4)        # 'h'
raises(OverflowError, "greater than maximum", 2**31, 5)      # 'i'
raises(OverflowError, "", 2**63, 6)                          # 'L'
raises(TypeError, "", 1.5, 5)                                # ints refuse floats
raises(TypeError, "must be int", 1.5, 10)                    # 'K' refuses non-int
raises(TypeError, "", "x", 13)                               # floats refuse str
raises(OverflowError, "", 1e6, 11)                           # fp16 out of range
raises(TypeError, "Pointer argument must be either uint64 or have data_ptr method", object(), 1)
raises(ValueError, "Pointer argument (at 0) cannot be accessed from Triton (cpu tensor?)", Host(0x55550000), 0)
raises(ValueError, "Pointer argument (at 15) cannot be accessed from Triton (cpu tensor?)", Foreign(0x1000), 15)
assert state()[0] == before
# pinned host memory / foreign objects pass when the driver says it is device-accessible
launch(1, 1, 1, 0, (Foreign(DEV + 64),) + vals[1:])
assert record()[:8] == struct.pack("<Q", DEV + 64) and state()[1] >= 1
# data_ptr() == 0 is a valid NULL, no check
launch(1, 1, 1, 0, (Host(0),) + vals[1:])
assert record()[:8] == b"\0" * 8
# bools and __index__ ints, as PyArg accepts them
launch(1, 1, 1, 0, vals[:3] + (True,) + vals[4:])
# empty grid: arguments still checked (as Triton), nothing launched
n = state()[0]
launch(0, 5, 1, 0, vals); launch(4, 0, 0, 0, vals)
assert state()[0] == n
try:
    launch(0, 1, 1, 0, (Host(0x55550000),) + vals[1:]); raise AssertionError("no error")
except ValueError:
    pass
# call-shape errors
for bad in ((1, 1, 1, 0), (1, 1, 1, 0, vals[:-1]), (1, 1, 1, 0, list(vals)), (1, 1, 1, 1.0, vals)):
    try:
        launch(*bad); raise AssertionError(bad)
    except TypeError:
        pass
try:
    launch(2**31, 1, 1, 0, vals); raise AssertionError("grid overflow")
except OverflowError:
    pass

# frozen slots (assume_const): written once, the vals entries are ignored
fz = (Dev(DEV + 16), L, L, L, L, 99, L, L, L, L, L, L, L, 0.5, L, 7)
launch2 = m.make(0xABD, 8, 0, codes, fz, 2, 0)
launch2(1, 1, 1, 0, tuple("junk" if f is not L else v for f, v in zip(fz, vals)))
r = record()
assert r[:8] == struct.pack("<Q", DEV + 16) and r[8:16] == struct.pack("<Q", 0x1234)
assert r[19:23] == struct.pack("<i", 99) and r[-24:-16] == struct.pack("<Q", 7)
assert state()[9] == 256 * 1000000 + 1001
try:
    m.make(0xABD, 4, 0, b"i", (2**40,)); raise AssertionError("frozen overflow")
except OverflowError:
    pass
for bad in ((0xABD, 4, 0, b"?", (L,)), (0xABD, 4, 0, b"PP", (L,)), (0xABD, 0, 0, b"P", (L,)), (0, 4, 0, b"", ())):
    try:
        m.make(*bad); raise AssertionError(bad)
    except ValueError:
        pass

# no current context: retain the primary context of the launcher's device, make it current
config(sizes, ctx=0)
m.make(0xABC, 4, 0, codes, (L,) * len(codes), 2, 3)  # make() needs a context too
s = state(); assert s[2] == 1 and s[3] == 1 and s[4] == 3, s
config(sizes, ctx=0)
launch(1, 1, 1, 0, vals)
s = state(); assert s[2] == 2 and s[3] == 2 and s[4] == 0, s
# CUDA errors: Triton's message
config(sizes, err=700)
try:
    launch(1, 1, 1, 0, vals); raise AssertionError("no error")
except RuntimeError as e:
    assert str(e) == "Triton Error [CUDA]: an illegal memory access was encountered", e
config(sizes)

# make_launch end to end, with the loaded function's parameter sizes checked
k = SimpleNamespace(metadata=SimpleNamespace(num_warps=2, num_ctas=1, shared=0, global_scratch_size=0,
                    profile_scratch_size=0, launch_cooperative_grid=False, launch_pdl=False, tensordesc_meta=[]),
                    src=SimpleNamespace(signature={"x": "*fp32", "n": "i32", "B": "constexpr"}), asm={},
                    name="k", function=0xBEE)
config([8, 4, 8, 8])
fn, why = native.make_launch(k, {1: 41})
assert fn is not None and why == "native Pix+2 tail", why
fn(2, 1, 1, 5, (Dev(DEV), 0, 128))
assert record() == struct.pack("<Qi", DEV, 41) + b"\0" * 16 and state()[9] == 64 * 1000000 + 1001
config([8, 8, 8, 8])
fn, why = native.make_launch(k)
assert fn is None and "parameter sizes [8, 8, 8, 8]" in why, why
assert native.make_launch(k, {7: 1})[0] is None
print("STUB-OK")
"""


@pytest.fixture(scope="module")
def stub_dir(built, tmp_path_factory):
    d = tmp_path_factory.mktemp("stubcuda")
    src = d / "stub.c"
    src.write_text(STUB)
    r = subprocess.run([_cbuild.compiler(), "-O1", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", str(src),
                        "-o", str(d / "libcuda.so.1")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return d


def _run_with_driver(driver_dir: Path, script: str, cache: Path, *argv: str) -> subprocess.CompletedProcess:
    env = subprocess_env(LD_LIBRARY_PATH=f"{driver_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}",
                         JITLAB_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env,
                          timeout=120)


@needs_cc
def test_c_path_against_stub_driver(built, stub_dir):
    r = _run_with_driver(stub_dir, SCRIPT, built.cache)
    assert r.returncode == 0 and "STUB-OK" in r.stdout, r.stdout + r.stderr


@needs_cc
def test_driver_missing_symbols_is_a_reason(built, tmp_path):
    """A libcuda.so.1 without the entry points (any machine): a clear reason, from make_launch too."""
    src = tmp_path / "empty.c"
    src.write_text("int cuInit(unsigned f) { return 0; }\n")
    subprocess.run([_cbuild.compiler(), "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", str(src), "-o",
                    str(tmp_path / "libcuda.so.1")], check=True)
    script = textwrap.dedent("""
        from types import SimpleNamespace
        from jitlab._triton import native
        assert native.available()[0]
        k = SimpleNamespace(metadata=SimpleNamespace(num_warps=4, shared=0), src=SimpleNamespace(signature={"x": "*fp32"}),
                            asm={}, name="k", function=1)
        fn, why = native.make_launch(k)
        assert fn is None and "libcuda.so.1 lacks cuLaunchKernel" in why, why
        print("EMPTY-OK")
    """)
    r = _run_with_driver(tmp_path, script, built.cache)
    assert r.returncode == 0 and "EMPTY-OK" in r.stdout, r.stdout + r.stderr


DISPATCH_SCRIPT = r"""
import contextvars, ctypes, inspect, itertools, struct, sys, threading
import torch
from jitlab import keys, record_layout as L
from jitlab._triton import native
BENCH = sys.argv[1] == "bench"
m, why = (native.DISPATCH_BENCH if BENCH else native.DISPATCH).get(wait=True); assert m is not None, why
stub = ctypes.CDLL("libcuda.so.1")

def config(sizes):
    arr = (ctypes.c_size_t * len(sizes))(*sizes); stub.stub_config(1, 0, len(sizes), arr)
def state():
    out = (ctypes.c_uint64 * 16)(); stub.stub_state(out); return list(out)
def record():
    buf = ctypes.create_string_buffer(4096); n = stub.stub_record(buf); return buf.raw[:n]

DEV = 0x700000001000
config([8, 4, 4, 8, 8])
launch = m.make(0xABC, 4, 0, b"Piix", (m.LIVE,) * 4, 2, 0)
class Table: pass
class Entry: pass
class Active: recorder = None
class Fn: used_global_vals = {}; debug = None
class Hooks: launch_enter_hook = None; launch_exit_hook = None
table = Table(); table.entries = {}; table.hits = itertools.count()
slow_calls = []
R = inspect.Parameter.empty
d, why = native.make_dispatcher(
    m, names=("x", "n", "s", "BLOCK"), defaults=(R, R, 1, 64), required=R, npositional=4, codes="rrrc",
    state=(("v", Fn, "debug"),), device=0, get_stream=lambda dev: 777, hook_holder=Hooks, hook_chain=None,
    active=Active, scope_var=contextvars.ContextVar("scope", default="s"), tables={"s": table}, fn=Fn,
    slow=lambda grid, *a, **kw: slow_calls.append((grid, a, kw)), tensor_type=torch.Tensor, spec=keys.spec,
    constexpr_item=keys.constexpr_item)
assert d is not None, why
e = Entry(); e.verify = 0; e.grid = None; e.launch = launch; e.device = 0; e.head = L.head("k", "global", "safe", 0, 0)
table.entries[(keys.spec(DEV), keys.spec(17), keys.spec(1), 64, (), None, 0)] = e

def hits_since(n0):
    return next(table.hits) - n0 - 1
n0 = next(table.hits)
d((3, 2), DEV, 17)                      # a hit: launched in C, counted, the bytes Triton's launcher would pass
s = state()
assert not slow_calls and s[6:9] == [3, 2, 1] and s[11] == 777, (slow_calls, s)
assert record() == struct.pack("<Qii", DEV, 17, 1) + b"\0" * 16
d((3,), n=17, x=DEV + 16)               # keywords in any order, the same key class: a hit
d((3,), DEV, 17, s=1, BLOCK=64)         # defaults given explicitly: the same entry
assert not slow_calls and record()[:8] == struct.pack("<Q", DEV)
assert hits_since(n0) == 3, "three hits counted"
misses = [((3,), (DEV, 16), {}),                       # n % 16 == 0: another key
          ((3,), (DEV, 17), {"BLOCK": 32}),            # another constexpr
          ((3,), (DEV, 17), {"num_warps": 4})]         # a launch option
for grid, a, kw in misses:
    d(grid, *a, **kw)
assert len(slow_calls) == 3, slow_calls
seen = []
d(lambda meta: seen.append(dict(meta)) or (meta["n"] // 8, 2), DEV, 17)   # a callable grid: evaluated here, once
assert seen == [{"x": DEV, "n": 17, "s": 1, "BLOCK": 64}] and state()[6:9] == [2, 2, 1] and len(slow_calls) == 3
d(lambda meta: (meta["n"] // 8, meta.get("BLOCK") // 32 + ("s" in meta)), DEV, 17)  # reads 3 names
assert state()[6:9] == [2, 3, 1] and len(slow_calls) == 3
def spy():  # what code outside the grid sees of its argument (a frame walk): the items it reads
    return len(sys._getframe(1).f_locals["meta"])
d(lambda meta: (spy(), meta["BLOCK"]), DEV, 17)
assert state()[6:9] == [1, 64, 1], state()[6:9]
sys.setprofile(lambda *a: None)   # a profiler or debugger set: Triton's whole dict
d(lambda meta: (spy(), meta["BLOCK"]), DEV, 17)
sys.setprofile(None)
assert state()[6:9] == [4, 64, 1], state()[6:9]
try:
    d(lambda meta: (meta["n"], meta["nope"]), DEV, 17); raise AssertionError("no KeyError")
except KeyError as err:           # the same KeyError as Triton's dict, whose frame holds Triton's dict
    assert err.args == ("nope",), err.args
    frame = err.__traceback__
    while frame.tb_next: frame = frame.tb_next
    assert frame.tb_frame.f_locals["meta"] == {"x": DEV, "n": 17, "s": 1, "BLOCK": 64}, frame.tb_frame.f_locals
n_before = state()[0]
d(lambda meta: (meta.get("nope", 5), 1 if "nope" in meta else 2), DEV, 17)   # absent names, as in Triton's dict
assert state()[6:9] == [5, 2, 1] and state()[0] == n_before + 1
d(lambda meta: "not a grid", DEV, 17)                        # a grid it cannot read: the Python path
assert len(slow_calls) == 4
Fn.debug = True; d((3,), DEV, 17); Fn.debug = None           # Triton state changed
assert len(slow_calls) == 5
from jitlab.telemetry.recorder import Recorder
rec = Active.recorder = Recorder("full", capacity=2)            # traced at level full: recorded in C
d((3,), DEV, 17); d((3,), DEV, 17)                              # two rows of the recorder's hit block
assert rec.c_hits and rec.in_block == 2 and rec.hits[0] == [e.head] * 2, rec.hits[0]
d((3,), DEV, 17)                                                # the third finds the buffer full: dropped
out = rec.drain_raw()
assert [r[:len(L.HEAD)] for r in out] == [e.head] * 2 and rec.dropped == 1 and len(slow_calls) == 5, out
I = L.INDEX
assert all(r[I["t_enter"]] <= r[I["t_args"]] <= r[I["t_exit"]] for r in out) and out[0][I["thread"]] == threading.get_ident()
rec = Active.recorder = Recorder("sampled", capacity=10, sample_every=2)   # sampled: wants_hit()'s rule, in C
rec.wants_hit = None                                            # (on the recorder's own counters: no call)
for _ in range(4):
    d((3,), DEV, 17)
assert rec.buffered == 2 and rec.seen == 4 and len(slow_calls) == 5, (rec.buffered, rec.seen)
assert [Recorder.wants_hit(rec) for _ in range(2)] == [False, True]  # the Python path continues the same phase
rec = Active.recorder = Recorder("summary", capacity=10)        # summary: counted, nothing recorded
for _ in range(3):
    d((3,), DEV, 17)
assert not rec.buffered and rec.seen == 3 and len(slow_calls) == 5, (rec.buffered, rec.seen)
Active.recorder = None
Hooks.launch_enter_hook = print; d((3,), DEV, 17); Hooks.launch_enter_hook = None  # a profiler hook
G = {"G": 1}
Fn.used_global_vals = {("G", id(G)): (1, G)}; d((3,), DEV, 17)   # a global the kernel read, unchanged: C path
assert len(slow_calls) == 6
G["G"] = 2; d((3,), DEV, 17); Fn.used_global_vals = {}          # changed: the Python path (Triton raises)
e2 = Entry(); e2.verify = 5; e2.grid = None; e2.launch = launch; e2.device = 0; e2.head = e.head
table.entries[(keys.spec(DEV), keys.spec(32), keys.spec(1), 64, (), None, 0)] = e2
d((3,), DEV, 32)                                              # verify due on that entry: the Python path
d((3,), DEV)                                                  # a missing argument: Python raises it
d((3,), DEV, 17, x=DEV)                                       # given twice: Python raises it
d((3,), (1, 2), 17)                                           # a value jitlab does not key
assert len(slow_calls) == 11, len(slow_calls)
n1 = state()[0]
d((3,), DEV, 17)
assert state()[0] == n1 + 1 and len(slow_calls) == 11         # and back on the C path
if not BENCH:                                                 # the shipping build has no stops
    assert not hasattr(m, "set_stop") and not hasattr(m, "set_ab")
    try:
        native.stop_hits(m, d, "bind"); raise AssertionError("the shipping dispatcher took a stop")
    except ValueError as err:
        assert "bench build" in str(err)
    print("DISPATCH-OK"); sys.exit(0)
for i, stage in enumerate(native.STAGES):                     # the bench's stops (jitlab.bench.launch_parts)
    native.stop_hits(m, d, stage)
    h0 = next(table.hits)
    d((3,), DEV, 17)
    assert state()[0] == n1 + 1 and len(slow_calls) == 11, stage   # nothing launched, no Python path
    assert next(table.hits) - h0 - 1 == (i >= native.STAGES.index("prep")), stage  # counted from "prep" on
py_launches = []                                               # an entry on Triton's launcher (a Python call)
e3 = Entry(); e3.verify = 0; e3.grid = None; e3.device = 0; e3.head = e.head
e3.launch = lambda *a: py_launches.append(a)
table.entries[(keys.spec(DEV), keys.spec(48), keys.spec(1), 64, (), None, 0)] = e3
d((3,), DEV, 48)                                               # stopped at "pack": that launcher is not called
assert py_launches == [] and len(slow_calls) == 11, py_launches
native.stop_hits(m, d, None); d((3,), DEV, 17)
assert state()[0] == n1 + 2                                    # whole launches again
d((3,), DEV, 48)
assert len(py_launches) == 1 and py_launches[0][:4] == (3, 1, 1, 777), py_launches
try:
    native.stop_hits(m, d, "driver"); raise AssertionError("a stage that does not exist was accepted")
except ValueError:
    pass
# The A/B variants of the launch: the same bytes, grid, block and stream as the stock launch.
d((3, 2), DEV, 17)
stock, s0 = record(), state()
assert stock == struct.pack("<Qii", DEV, 17, 1) + b"\0" * 16
streams = [777]
Stream = type("Stream", (), {})
for name in native.AB_VARIANTS:
    native.ab_launches(m, d, [name])
    for _ in range(2):
        n0, ex0 = state()[0], state()[12]
        d((3, 2), DEV, 17)
        s = state()
        assert record() == stock and s[0] == n0 + 1 and s[5:12] == s0[5:12], (name, s)
        assert s[12] == ex0 + (name == "launch-ex"), (name, s)
native.ab_launches(m, d, list(native.AB_VARIANTS))            # all at once
d((3, 2), DEV, 17); d((3, 2), DEV, 18)                        # params-once: the next launch's values are its own
assert record() == struct.pack("<Qii", DEV, 18, 1) + b"\0" * 16
d(lambda meta: (spy(), meta["BLOCK"]), DEV, 17)               # grid-whole-dict: Triton's dict
assert state()[6:9] == [4, 64, 1], state()[6:9]
from jitlab._triton import gridmeta                           # grid-cache: a pure grid's result reused while
native.ab_launches(m, d, ["grid-cache"])                      # what it depends on is equal
ticks = []
def tick(x):                                                  # a counting stand-in, declared pure to see reuse
    ticks.append(x)
    return x
m.set_grid_purity(gridmeta.purity, (tick,))
g_n = lambda meta: (tick(meta["n"] // 8), 2)
d(g_n, DEV, 17); d(g_n, DEV, 17)
assert ticks == [2] and state()[6:9] == [2, 2, 1], (ticks, state()[6:9])
d(g_n, DEV, 18)                                               # another value read (same entry): called again
d(g_n, DEV, 33)
assert ticks == [2, 2, 4] and state()[6:9] == [4, 2, 1], (ticks, state()[6:9])
def make(k):
    return lambda meta: (tick(k), 1)
d(make(3), DEV, 17); d(make(3), DEV, 17); d(make(5), DEV, 17)  # closure cells are part of the key
assert ticks[3:] == [3, 5] and state()[6:9] == [5, 1, 1], (ticks, state()[6:9])
SCALE = 6
g_s = lambda meta: (tick(SCALE), 1)
d(g_s, DEV, 17); d(g_s, DEV, 17); SCALE = 7; d(g_s, DEV, 17)  # an int global too
assert ticks[5:] == [6, 7] and state()[6:9] == [7, 1, 1], (ticks, state()[6:9])
calls = []
g_list = lambda meta: (calls.append(1) or 3, 1)               # a method of a list: not pure, called each time
d(g_list, DEV, 17); d(g_list, DEV, 17)
assert calls == [1, 1] and state()[6:9] == [3, 1, 1]
counted, tick = tick, (lambda x: calls.append(x) or x)        # `tick` rebound to a callable not declared pure
d(g_n, DEV, 17); d(g_n, DEV, 17)
assert calls[2:] == [2, 2] and ticks[7:] == [], (calls, ticks)
tick = counted
native.ab_launches(m, d, [])                                  # off: the grid is called on every launch
d(g_n, DEV, 17); d(g_n, DEV, 17)
assert ticks[7:] == [2, 2], ticks
assert len(slow_calls) == 11, slow_calls
native.ab_launches(m, d, ["stream-once"])
get_stream_calls = []
d2, why = native.make_dispatcher(
    m, names=("x", "n", "s", "BLOCK"), defaults=(R, R, 1, 64), required=R, npositional=4, codes="rrrc",
    state=(("v", Fn, "debug"),), device=0, get_stream=lambda dev: get_stream_calls.append(dev) or 555,
    hook_holder=Hooks, hook_chain=None, active=Active, scope_var=contextvars.ContextVar("scope", default="s"),
    tables={"s": table}, fn=Fn, slow=lambda *a, **kw: None, tensor_type=torch.Tensor, spec=keys.spec,
    constexpr_item=keys.constexpr_item)
native.ab_launches(m, d2, ["stream-once"])
for _ in range(3):
    d2((3,), DEV, 17)
assert len(get_stream_calls) == 1 and state()[11] == 555, get_stream_calls
native.ab_launches(m, d2, [])
d2((3,), DEV, 17)
assert len(get_stream_calls) == 2
for bad in (["nope"],):
    try:
        native.ab_launches(m, d, bad); raise AssertionError(bad)
    except ValueError:
        pass
n0 = state()[0]                                               # jitlab's launcher in a C loop: the same launches
ns = m.launch_loop(launch, 3, 3, 2, 1, 777, (DEV, 17, 1, 64))
assert ns >= 0 and state()[0] == n0 + 3 and record() == stock and state()[11] == 777
assert m.launch_loop(launch, 2, 3, 2, 1, 777, (DEV, 17, 1, 64), native.AB_VARIANTS["launch-ex"][0]) >= 0
assert state()[0] == n0 + 5 and record() == stock
for bad in ((launch, 1, 1, 1, 1, 0, (DEV, 17)), (launch, 1, 1, 1, 1, 0, (DEV, 17, 1, 64), 99)):
    try:
        m.launch_loop(*bad); raise AssertionError(bad)
    except ValueError:
        pass
print("DISPATCH-OK")
"""


@needs_cc
@pytest.mark.parametrize("build", ["shipping", "bench"])
def test_dispatcher_against_stub_driver(built, stub_dir, build):
    """The C++ dispatcher's hit path launches the bytes jitlab's launcher packs, counts the hit, and
    records traced hits as the Python path does, and sends every other case (a new key, options,
    callable grid, state, hooks, globals, verify, binding errors) to the Python hit path. Both builds:
    the shipping one has no stage stops; the bench one stops and launches its A/B variants, each
    passing the driver the same launch."""
    which = native.DISPATCH_BENCH if build == "bench" else native.DISPATCH
    if which.get(wait=True)[0] is None:
        pytest.skip(which.get()[1])
    r = _run_with_driver(stub_dir, DISPATCH_SCRIPT, built.cache, build)
    assert r.returncode == 0 and "DISPATCH-OK" in r.stdout, r.stdout + r.stderr
