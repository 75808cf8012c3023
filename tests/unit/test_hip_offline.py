"""Triton's HIP backend (ROCm / MI300X) checked without an AMD GPU.

- Triton compiles for gfx942 offline and produces HSACO; jitlab's HIP plan reads the kernel's own
  argument list from it and refuses what its launcher does not reproduce;
- jitlab's HIP key refines Triton's HIP binder (built offline for gfx942), including the buffer-ops
  range bit "S" (storage <= 2 GiB) and the `knobs.amd.use_buffer_ops` switch; the CUDA key alone
  would not (checked, so the test shows what it guards);
- the gate: HIP is pass-through unless JITLAB_HIP=1 (and a ROCm torch, and rules jitlab knows);
- jitcache end to end over a fake HIP binary with Triton's real HIP specialization;
- the native launcher built from the same C source against Triton's HIP headers, and Triton's own
  HIP launcher, both run against a stub libamdhip64.so (a subprocess): the same launch, byte for byte,
  and the same errors; the HIP C floor launches through the same stub.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import triton

from jitlab import jitcache, settings
from jitlab._triton import adapter as adapter_mod
from jitlab._triton import hip, native, probe
from jitlab.codegen import KeySpec, make_binder

from .conftest import FakeAdapter, subprocess_env
from .kernels_for_tests import add_one, many_kinds, no_spec
from .test_keys import INTS
from .test_native_build import _have_compiler, annotated, mixed, vadd

ROOT = Path(__file__).resolve().parents[2]
MI300X = ("hip", "gfx942", 64)
needs_cc = pytest.mark.skipif(not _have_compiler(), reason="no C compiler (cc/gcc/clang or $CC)")


def compile_hip(fn, *args, num_warps=4, **kwargs):
    """triton.compile for gfx942 with the signature/constexprs/attrs Triton's HIP binder derives."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend

    target = GPUTarget(*MI300X)
    backend = make_backend(target)
    bound, spec, _ = hip.offline_binder(fn)(*args, **kwargs)
    vals = list(bound.values())
    signature = {p.name: s[0] for p, s in zip(fn.params, spec)}
    constexprs = {(i,): vals[i] for i, s in enumerate(spec) if s[0] == "constexpr"}
    attrs = {(i,): backend.parse_attr(s[1]) for i, s in enumerate(spec) if isinstance(s[1], str)}
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options={"num_warps": num_warps})


def t(n, dtype=torch.float32):
    return torch.zeros(n, dtype=dtype)


@pytest.fixture(scope="module")
def offline():
    return {
        "vadd": compile_hip(vadd, t(64), t(64), t(64), 1000, BLOCK=128),
        "mixed": compile_hip(mixed, t(64), t(64, torch.float16), None, t(64, torch.bfloat16), 1, 2**40, 2**63 + 1,
                             1.5, True, 17, BLOCK=64, MODE="a", num_warps=8),
        "annotated": compile_hip(annotated, t(8), t(8), 1, 2, 3, 4, 5, 6, 7, 8, 0.5, 0.25, 0.125, 1.0, BLOCK=16),
    }


# -- compiling and planning -----------------------------------------------------------------------------------
def test_hip_compiles_hsaco_offline(offline):
    c = offline["vadd"]
    assert c.asm["hsaco"][:4] == b"\x7fELF" and "amdgcn" in c.asm
    assert (c.metadata.target.backend, c.metadata.target.arch, c.metadata.warp_size) == MI300X
    assert c.packed_metadata == (4, 1, 0)  # HIPBackend.pack_metadata: (num_warps, num_ctas, shared)


def test_hip_plan_reads_the_kernels_argument_list(offline):
    expect = {  # runtime codes and byte sizes, then Triton 3.5/3.6's global_scratch + profile_scratch
        "vadd": (b"PPPix", [8, 8, 8, 4], 4),
        "mixed": (b"PPxPxLKfBixx", [8, 8, 8, 8, 8, 4, 1, 4], 8),
        "annotated": (b"PPbhiLBHIKeEfdx", [8, 8, 1, 2, 4, 8, 1, 2, 4, 8, 2, 2, 4, 8], 4),
    }
    for name, (codes, sizes, warps) in expect.items():
        c = offline[name]
        p, why = hip.plan(c)
        assert p is not None, (name, why)
        assert (p.codes, p.warp_size, p.num_warps, p.shared) == (codes, 64, warps, c.metadata.shared)
        args = hip.kernel_args(c.asm["amdgcn"])
        assert [s for _, s, _ in args] == sizes + [8, 8] == p.param_sizes, name
        offsets = [o for o, _, _ in args]
        assert offsets == sorted(offsets) and all(o % s == 0 for o, s, _ in args)  # natural alignment
    # CUDA's planner refuses HIP kernels, HIP's refuses CUDA-shaped metadata without an amdgcn list
    assert native.plan(offline["vadd"])[0] is None


def _fake_hip(signature, amdgcn, **md):
    base = dict(num_warps=4, num_ctas=1, shared=0, profile_scratch_size=0, launch_cooperative_grid=False,
                tensordesc_meta=[], instrumentation_mode="", warp_size=64,
                target=SimpleNamespace(backend="hip", arch="gfx942", warp_size=64))
    base.update(md)
    return SimpleNamespace(metadata=SimpleNamespace(**base), src=SimpleNamespace(signature=signature),
                           asm={"amdgcn": amdgcn} if amdgcn else {}, name="fake", function=None)


@pytest.mark.parametrize("md,amdgcn_of,needle", [
    ({"launch_cooperative_grid": True}, "vadd", "launch_cooperative_grid"),
    ({"num_ctas": 2}, "vadd", "num_ctas=2"),
    ({"profile_scratch_size": 64}, "vadd", "profile_scratch_size=64"),
    ({}, None, "no amdgcn"),
    ({}, "mixed", "kernel arguments"),  # another kernel's argument list
    ({"warp_size": 32}, "vadd", "wavefront size"),
])
def test_hip_refusals(offline, md, amdgcn_of, needle):
    sig = dict(offline["vadd"].src.signature)
    k = _fake_hip(sig, offline[amdgcn_of].asm["amdgcn"] if amdgcn_of else None, **md)
    p, why = hip.plan(k)
    assert p is None and needle in why
    launch, why = native.make_launch(k)  # native dispatches HIP kernels to hip.make_launch
    assert launch is None and why.startswith("refused: backend 'hip'") and needle in why


def test_hip_kernel_args_parser():
    text = textwrap.dedent("""\
        amdhsa.kernels:
          - .agpr_count:     0
            .args:
              - .address_space:  global
                .offset:         0
                .size:           8
                .value_kind:     global_buffer
              - .offset:         8
                .size:           2
                .value_kind:     by_value
              - .offset:         16
                .size:           8
                .value_kind:     hidden_block_count_x
            .group_segment_fixed_size: 0
            .name:           k
        """)
    assert hip.kernel_args(text) == [(0, 8, "global_buffer"), (8, 2, "by_value")]
    assert hip.kernel_args("no metadata") is None
    assert hip.kernel_args("amdhsa.kernels:\n  - .name: k\n") == []


# -- the key against Triton's HIP binder -------------------------------------------------------------------------
BIG = 2**31  # bytes: one more than is_within_2gb allows


class Ranged:
    """A tensor-like with `ptr_range()`, which Triton's is_within_2gb reads before the storage."""

    def __init__(self, dtype, ptr, rng):
        self.dtype, self._ptr, self._rng = dtype, ptr, rng

    def data_ptr(self):
        return self._ptr

    def ptr_range(self):
        return self._rng


@pytest.fixture(scope="module")
def hip_values():
    big = torch.empty(BIG, dtype=torch.uint8)  # 2 GiB of address space, never touched
    big32 = big.view(torch.float32)
    small = torch.empty(64, dtype=torch.float32)
    tensors = [small, small[1:], small[4:], big32[:64], big32[1:65], big32[4:68], big32[2**29 - 64:],
               torch.empty(64, dtype=torch.float16), big.view(torch.float16)[:64],
               Ranged(torch.float32, 64, 100), Ranged(torch.float32, 64, 2**31), Ranged(torch.float32, 65, 100)]
    return INTS + tensors + [None, True, False, 1.0, 0.5]


def _hip_spec(jit_fn, name, use_rule=True):
    params = adapter_mod.params_of(jit_fn)
    rt = frozenset(p.name for p in params if not p.constexpr)
    cx = frozenset(p.name for p in params if p.constexpr)
    ad = hip.HipAdapter()
    spec = KeySpec(tuple(params), rt, cx, ad.state_items(jit_fn), 0, ad.tensor_extra if use_rule else None)
    bind, layout = make_binder("k", spec)
    return bind, [n for n, _ in layout.items].index(name), params


def _defaults(params):
    return {p.name: (torch.empty(4) if not p.constexpr else 16) for p in params}


def _pairs_conflated(jit_fn, name, vals, use_rule=True):
    """Pairs of values jitlab keys alike but Triton's HIP binder specializes differently."""
    bind, pos, params = _hip_spec(jit_fn, name, use_rule)
    binder = hip.offline_binder(jit_fn)
    idx = [p.name for p in params].index(name)
    d = _defaults(params)
    ours = [bind(**{**d, name: v})[0][pos] for v in vals]
    theirs = [binder(**{**d, name: v})[1][idx] for v in vals]
    return [(a, b, ta, tb) for (a, oa, ta), (b, ob, tb) in itertools.combinations(zip(vals, ours, theirs), 2)
            if oa == ob and ta != tb]


@pytest.mark.parametrize("jit_fn, name", [
    (many_kinds, "x_ptr"), (many_kinds, "n"), (many_kinds, "opt_ptr"), (many_kinds, "flag"),
    (many_kinds, "scale"), (no_spec, "x_ptr"), (no_spec, "n"), (no_spec, "stride"),
])
def test_hip_key_refines_triton_hip_binder(jit_fn, name, hip_values):
    bad = _pairs_conflated(jit_fn, name, hip_values)
    assert not bad, f"{name}: jitlab keys alike what Triton's HIP binder does not: {bad[:3]}"


def test_cuda_key_alone_conflates_hip_buffer_ops(hip_values):
    """What the HIP rule is for: with jitlab's CUDA tensor item, a view of a > 2 GiB storage shares the
    entry of a small tensor (Triton: 'D' vs 'DS', pointer_range 32): a wrong kernel."""
    bad = _pairs_conflated(many_kinds, "x_ptr", hip_values, use_rule=False)
    assert any({ta[1], tb[1]} == {"D", "DS"} for _, _, ta, tb in bad), bad


def test_hip_use_buffer_ops_knob_is_keyed():
    from triton import knobs

    bind, _, params = _hip_spec(many_kinds, "x_ptr")
    binder = hip.offline_binder(many_kinds)
    kw = _defaults(params)
    old = knobs.amd.use_buffer_ops
    try:
        keys_, specs = [], []
        for on in (True, False):
            knobs.amd.use_buffer_ops = on
            keys_.append(bind(**kw)[0])
            specs.append(binder(**kw)[1][0])
    finally:
        knobs.amd.use_buffer_ops = old
    assert specs[0] != specs[1] and keys_[0] != keys_[1]


def test_hip_options_are_keyed():
    """HIP compile options passed as launch keywords (autotune configs do) are part of the key."""
    bind, _, params = _hip_spec(many_kinds, "x_ptr")
    kw = _defaults(params)
    seen = {bind(**kw)[0]}
    for opts in ({"waves_per_eu": 2}, {"matrix_instr_nonkdim": 16}, {"kpack": 2}, {"waves_per_eu": 2, "kpack": 2}):
        seen.add(bind(**kw, **opts)[0])
    assert len(seen) == 5


# -- the gate -------------------------------------------------------------------------------------------------------
@pytest.fixture
def hip_backend(monkeypatch):
    adapter_mod.reset()
    # no visible device, also on a CUDA host: with torch.version.hip set, a CUDA build of torch counts
    # devices through amdsmi, which it does not have (NameError, seen on the H200)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(probe, "active_backend", lambda: "hip")
    monkeypatch.setattr(probe, "interpreter_active", lambda: False)
    yield monkeypatch
    adapter_mod.reset()
    settings.reload()


def test_hip_backend_selects_the_hip_adapter(hip_backend):
    hip_backend.setattr(torch.version, "hip", None)
    assert "ROCm build of torch" in probe.unsupported_reason()
    hip_backend.setattr(torch.version, "hip", "6.4.0")
    ad, reason = adapter_mod.get_adapter()
    assert reason is None and isinstance(ad, hip.HipAdapter) and ad.tensor_extra is not None
    assert "<knobs.amd.use_buffer_ops>" in [s.name for s in ad.state_items(add_one)]


@pytest.mark.parametrize("opt_in", ["", "1"])
def test_jitcache_on_hip_needs_jitlab_hip(hip_backend, opt_in):
    hip_backend.setattr(torch.version, "hip", "6.4.0")
    hip_backend.setenv("JITLAB_HIP", opt_in)
    settings.reload()
    k = jitcache(add_one)
    if opt_in:
        assert k.passthrough_reason is None and "tensor key rule" in k.dispatcher_reason
    else:
        assert "JITLAB_HIP=1" in k.passthrough_reason


def test_hip_rules_probe_refuses_unknown_attributes(monkeypatch):
    assert hip.rules_reason() is None  # the installed Triton's rules are the ones jitlab keys
    from triton.backends.amd.compiler import HIPBackend

    class NewRule(HIPBackend):
        @staticmethod
        def parse_attr(desc):
            return HIPBackend.parse_attr(desc) + ([["tt.new", 1]] if "R" in desc else [])

    monkeypatch.setattr(hip, "_backend_class", lambda: NewRule)
    assert "['R']" in hip.rules_reason()

    class OtherS(HIPBackend):
        @staticmethod
        def get_tensor_specialization(arg, **kwargs):
            return "S"

    monkeypatch.setattr(hip, "_backend_class", lambda: OtherS)
    assert "get_tensor_specialization" in hip.rules_reason()


# -- jitcache end to end on a fake HIP binary ---------------------------------------------------------------------
class FakeHipAdapter(FakeAdapter, hip.HipAdapter):
    """conftest's fake binary and launcher with Triton's real HIP (gfx942) specialization."""

    def binder(self, jit_fn, device):
        b = self._binders.get(id(jit_fn))
        if b is None:
            b = self._binders[id(jit_fn)] = hip.offline_binder(jit_fn)
        return b


def test_jitcache_on_hip_compiles_per_buffer_ops_class(monkeypatch):
    from triton import knobs

    fake = FakeHipAdapter()
    monkeypatch.setenv("JITLAB_HIP", "1")
    settings.reload()
    monkeypatch.setattr(adapter_mod, "_ADAPTER", fake)
    monkeypatch.setattr(adapter_mod, "_REASON", None)
    try:
        k = jitcache(add_one)
        assert "tensor key rule" in k.dispatcher_reason  # the C++ dispatcher keys tensors the CUDA way
        big = torch.empty(BIG, dtype=torch.uint8).view(torch.float32)
        small, out = torch.zeros(64), torch.zeros(64)
        k[(1,)](small, out, 64)
        k[(1,)](big[:64], out, 64)  # same dtype and alignment, storage > 2 GiB: Triton compiles again
        k[(1,)](torch.zeros(32), out, 64)  # a small tensor again: a hit
        old = knobs.amd.use_buffer_ops
        knobs.amd.use_buffer_ops = False
        try:
            k[(1,)](small, out, 64)  # the switch changes Triton's key: a new entry
        finally:
            knobs.amd.use_buffer_ops = old
        assert len(fake.compiles) == len(set(fake.compiles)) == 3, fake.compiles
        assert [ln["key"] for ln in fake.launches] == [fake.compiles[0], fake.compiles[1], fake.compiles[0],
                                                      fake.compiles[2]]
    finally:
        adapter_mod.reset()
        monkeypatch.delenv("JITLAB_HIP")
        settings.reload()


# -- the native launcher and Triton's HIP launcher against a stub libamdhip64.so ---------------------------------
STUB = r"""
#include <stdint.h>
#include <string.h>
#include <stddef.h>
typedef int E;
static size_t offs[256], sizes[256]; static int n_args = 0, launch_err = 0;
static unsigned char rec[4096]; static size_t rec_len;
static uint64_t st[16]; /* 0 launches 1 ptr_attr 2 last_error 3 fn 4-6 grid 7 block 8 shared 9 stream 10 version 11 attr */
void stub_config(int err, int n, const size_t *o, const size_t *s) {
  launch_err = err; n_args = n; for (int i = 0; i < n; i++) { offs[i] = o[i]; sizes[i] = s[i]; }
}
size_t stub_record(unsigned char *out) { memcpy(out, rec, rec_len); return rec_len; }
void stub_state(uint64_t *out) { memcpy(out, st, sizeof st); }
/* the HIP runtime copies each argument into the kernarg segment at its offset, per the code object */
E hipModuleLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void *stream, void **params, void **extra) {
  if (launch_err) return launch_err;
  st[0]++; st[3] = (uint64_t)(uintptr_t)f; st[4] = gx; st[5] = gy; st[6] = gz;
  st[7] = (uint64_t)bx * 1000000 + by * 1000 + bz; st[8] = shared; st[9] = (uint64_t)(uintptr_t)stream;
  memset(rec, 0, sizeof rec); rec_len = 0;
  for (int i = 0; i < n_args; i++) { memcpy(rec + offs[i], params[i], sizes[i]); rec_len = offs[i] + sizes[i]; }
  return extra ? 999 : 0;
}
E hipModuleLaunchCooperativeKernel(void) { return 98; }
E hipDrvLaunchKernelEx(void) { return 98; }
E hipPointerGetAttribute(void *data, int attr, uint64_t p) {  /* "device memory" is [0x7000_0000_0000, +4G) */
  st[1]++; st[11] = attr;
  if (p >= 0x700000000000ULL && p < 0x700100000000ULL) { *(uint64_t *)data = p; return 0; }
  return 1; /* hipErrorInvalidValue */
}
const char *hipGetErrorString(E e) { return e == 700 ? "an illegal memory access was encountered" : "stub"; }
E hipGetLastError(void) { st[2]++; return 0; }
E hipGetProcAddress(const char *sym, void **pfn, int version, uint64_t flags, int *status) {
  static const struct { const char *n; void *f; } t[] = {
    {"hipModuleLaunchKernel", (void *)hipModuleLaunchKernel}, {"hipPointerGetAttribute", (void *)hipPointerGetAttribute},
    {"hipGetErrorString", (void *)hipGetErrorString}, {"hipGetLastError", (void *)hipGetLastError},
    {"hipModuleLaunchCooperativeKernel", (void *)hipModuleLaunchCooperativeKernel},
    {"hipDrvLaunchKernelEx", (void *)hipDrvLaunchKernelEx}};
  st[10] = (uint64_t)version;
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (!strcmp(sym, t[i].n)) { *pfn = t[i].f; if (status) *status = 0; return 0; }
  *pfn = 0; return 500;
}
"""

SCRIPT = r"""
import ctypes, os, re
import torch
torch.cuda.device_count = lambda: 0  # no visible device, also on a CUDA host (see the hip_backend fixture)
from triton.backends.amd.driver import HIPLauncher
from jitlab._triton import hip
from jitlab.bench import floors, floors_hip
from tests.unit.test_hip_offline import compile_hip, t
from tests.unit.test_native_build import annotated, mixed, vadd

stub = ctypes.CDLL(os.environ["TRITON_LIBHIP_PATH"])
def state():
    out = (ctypes.c_uint64 * 16)(); stub.stub_state(out); return list(out)
def record():
    buf = ctypes.create_string_buffer(4096); n = stub.stub_record(buf); return buf.raw[:n]
def config(c, err=0):
    args = hip.kernel_args(c.asm["amdgcn"])
    o = (ctypes.c_size_t * len(args))(*[a[0] for a in args]); s = (ctypes.c_size_t * len(args))(*[a[1] for a in args])
    stub.stub_config(err, len(args), o, s)

mod, where = hip.module(); assert mod is not None, where
assert hip.driver_reason(mod) is None, hip.driver_reason(mod)
assert state()[10] > 0   # hipGetProcAddress was asked with the HIP_VERSION of the headers (same as Triton: below)
ours_version = state()[10]

class Dev:   # a ROCm torch GPU tensor as launchers see it
    is_cuda = True
    def __init__(self, p): self.p = p
    def data_ptr(self): return self.p
class Foreign:  # data_ptr() only: both launchers ask hipPointerGetAttribute
    def __init__(self, p): self.p = p
    def data_ptr(self): return self.p
DEV = 0x700000001000
cases = {
    "vadd": (compile_hip(vadd, t(64), t(64), t(64), 1000, BLOCK=128), (Dev(DEV), Foreign(DEV + 256), 0x700000002000, 1000, 128)),
    "mixed": (compile_hip(mixed, t(64), t(64, torch.float16), None, t(64, torch.bfloat16), 1, 2**40, 2**63 + 1, 1.5,
                          True, 17, BLOCK=64, MODE="a", num_warps=8),
              (Dev(DEV), Dev(DEV + 64), None, Foreign(DEV + 128), 1, 2**40, 2**63 + 1, 1.5, True, -17, 64, "a")),
    "annotated": (compile_hip(annotated, t(8), t(8), 1, 2, 3, 4, 5, 6, 7, 8, 0.5, 0.25, 0.125, 1.0, BLOCK=16),
                  (Dev(DEV), None, 255, -32768, -7, -2**63, 255, 65535, 2**32 - 1, 2**64 - 1, 1.0009765625, 3.14159,
                   2.5, 1e300, 16)),
}
def outcome(fn, *a):
    before = state()[0]
    try:
        fn(*a)
    except Exception as e:  # PyArg numbers arguments in Triton's whole call, the launchers' own index differs
        return ("raised", type(e).__name__, re.sub(r"argument \d+", "argument N", str(e)), state()[0] - before)
    s = state()
    return ("launched", s[0] - before, s[3:10], record())

for name, (c, vals) in cases.items():
    config(c)
    p, why = hip.plan(c); assert p is not None, (name, why)
    ours = hip.launcher_for(p, mod, 0xF00D)
    theirs = HIPLauncher(c.src, c.metadata)
    assert state()[10] == ours_version   # Triton's launcher asked for the same HIP_VERSION
    def t_launch(g, v): theirs(*g, 777, 0xF00D, c.packed_metadata, None, None, None, *v)
    def o_launch(g, v): ours(*g, 777, v)
    o, r = outcome(o_launch, (3, 2, 1), vals), outcome(t_launch, (3, 2, 1), vals)
    assert o == r and o[0] == "launched" and o[1] == 1, (name, o, r)
    assert o[2][4] == 64 * c.metadata.num_warps * 1000000 + 1001, o[2]   # block = 64 * num_warps
    # the same errors (type and text), neither launching
    # (Triton 3.6's HIP getPointer does Py_DECREF(NULL) for an object without data_ptr(): a crash, not
    # compared here; ours raises the TypeError Triton's CUDA launcher raises, checked below.)
    odd = {"vadd": [(3, 2**31), (3, 1.5), (1, Foreign(0x1000))],
           "mixed": [(9, 2**31), (5, 2**63), (6, -1), (7, "x")],
           "annotated": [(2, 256), (2, -1), (3, 2**15), (6, 256), (10, 1e6), (9, 1.5), (9, -1)]}[name]
    outcomes = []
    for i, v in odd:  # the same outcome: the same error (type and text) and no launch, or the same launch
        vv = list(vals); vv[i] = v; vv = tuple(vv)
        o, r = outcome(o_launch, (1, 1, 1), vv), outcome(t_launch, (1, 1, 1), vv)
        if (name, i) == ("annotated", 10):  # fp16 overflow: Triton raises it after launching, we before
            assert o[:3] == r[:3] and (o[3], r[3]) == (0, 1), (o, r)
        else:
            assert o == r, (name, i, v, o, r)
        outcomes.append(o[0])
    assert outcomes.count("raised") >= 3, (name, outcomes)
    vv = (object(),) + vals[1:]
    assert outcome(o_launch, (1, 1, 1), vv)[:3] == ("raised", "TypeError",
                                                  "Pointer argument must be either uint64 or have data_ptr method")
    # empty grid: nothing launched by either
    assert outcome(o_launch, (0, 4, 1), vals) == outcome(t_launch, (0, 4, 1), vals)
    # a runtime error from the launch, with Triton's message
    config(c, err=700)
    o, r = outcome(o_launch, (1, 1, 1), vals), outcome(t_launch, (1, 1, 1), vals)
    assert o == r and "Triton Error [HIP]:  Code: 700, Messsage: an illegal memory access" in o[2], (o, r)
    config(c)
assert state()[2] >= 2   # hipGetLastError cleared the invalid-pointer errors (both launchers)

# the HIP C floor: the same launch through the same entry point, n times
c, vals = cases["vadd"]
config(c)
p, _ = hip.plan(c)
lib = floors_hip.build()
entry = ctypes.cast(stub.hipModuleLaunchKernel, ctypes.c_void_p).value
params = floors.Params(p.codes.decode(), p.n_tail, (DEV, DEV + 256, 0x700000002000, 1000, 128))
n0 = state()[0]
ns = lib.jitlab_hip_floor_loop(entry, 0xF00D, 3, 2, 1, p.warp_size * p.num_warps, p.shared, 777, params.address, 5)
assert ns >= 0 and state()[0] == n0 + 5
floor_rec = record()
HIPLauncher(c.src, c.metadata)(3, 2, 1, 777, 0xF00D, c.packed_metadata, None, None, None, *vals)
assert record() == floor_rec
print("HIP-STUB-OK")
"""


@needs_cc
def test_hip_native_launcher_matches_triton_hip_launcher(tmp_path):
    from jitlab._cbuild import compiler

    so = tmp_path / "stub" / "libamdhip64.so"
    so.parent.mkdir()
    (tmp_path / "stub.c").write_text(STUB)
    subprocess.run([compiler(), "-shared", "-fPIC", "-O1", str(tmp_path / "stub.c"), "-o", str(so)], check=True)
    # CUDA hidden: on a CUDA host Triton would see two active drivers (the stub HIP one and CUDA's)
    env = subprocess_env(TRITON_LIBHIP_PATH=str(so), JITLAB_CACHE_DIR=str(tmp_path / "jl"),
                         TRITON_CACHE_DIR=str(tmp_path / "triton"), CUDA_VISIBLE_DEVICES="")
    env.pop("TRITON_INTERPRET", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "HIP-STUB-OK" in r.stdout, r.stdout[-3000:] + r.stderr[-5000:]


# -- the experiments on a HIP target -----------------------------------------------------------------------------
def test_hip_floor_variants_are_selected_on_hip(monkeypatch):
    """On a HIP backend the launch-overhead experiment takes the HIP floors (the C hipModuleLaunchKernel loop,
    reported as c_floor) and skips the cuda-python floor with a reason; on CUDA it keeps the CUDA floors."""
    from jitlab.bench import floors, floors_hip, launch_variants
    from jitlab.bench.runner import Variant

    for name in ("_python_call", "_compiled", "_graph"):
        monkeypatch.setattr(launch_variants, name, lambda *a: Variant(name, "baseline", skip="stubbed"))
    monkeypatch.setattr(launch_variants, "_first_launch", lambda case: [])
    monkeypatch.setattr(native.DISPATCH, "get", lambda **kw: (None, "stubbed"))
    monkeypatch.setattr(floors, "variants", lambda case: [Variant("c_floor", "floor", skip="cuda floor")])
    monkeypatch.setattr(floors_hip, "c_variant", lambda case: Variant("c_floor", "floor", skip="hip floor"))
    case = SimpleNamespace(kernel=add_one, grid=(1,), args=(), kwargs={})
    for backend, want in (("cuda", "cuda floor"), ("hip", "hip floor")):
        monkeypatch.setattr(probe, "active_backend", lambda b=backend: b)
        out = {v.name: v for v in launch_variants.variants(case, [], cuda=True)}
        assert out["c_floor"].skip == want
        if backend == "hip":
            assert "CUDA only" in out["cuda_python_floor"].skip
