"""The vLLM plugin against vLLM 0.26.0's real kernel files (no GPU, no vLLM install).

vLLM's kernel and wrapper files come from its wheel (jitlab.vllm.kernel_files: `pip download`, then
only those files, checked against the wheel's RECORD, plus stand-ins for vLLM's package plumbing)
into `.vllm/` (git-ignored; built once, ~4 s). Skipped with a reason when the wheel cannot be
downloaded. Tests that run vLLM's wrappers launch in a subprocess under Triton's interpreter, or on
the fake adapter (Triton's real binder and specialization, a fake binary) in process.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from jitlab.vllm import known, policies, probe
from .conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugin(vllm_dir):
    import jitlab.vllm as jv

    jv.uninstall()
    yield jv
    jv.uninstall()


def _module(name):
    return importlib.import_module(name)


def _params(kernel):
    sig = probe.signature(kernel)
    return ([p.split(":")[0] for p in sig if p.endswith(":constexpr")], [p for p in sig if ":" not in p])


def test_real_vllm_kernel_files_are_imported(vllm_dir):
    import vllm

    assert vllm.__version__ == known.VLLM_VERSION and vllm.JITLAB_STANDIN
    for k in known.KERNELS:
        mod = _module(k.module)
        assert Path(mod.__file__).is_relative_to(vllm_dir)
        assert "SPDX-FileCopyrightText: Copyright contributors to the vLLM project" in Path(mod.__file__).read_text()
    modules, problems = probe.check()
    assert problems == []
    attn = probe.signature(_module(known.UNIFIED).kernel_unified_attention)
    assert (len(attn), sum(p.endswith(":constexpr") for p in attn)) == (77, 34)  # the counts


def test_install_wraps_the_globals_vllm_calls(plugin):
    from jitlab import JitCache
    from jitlab.scope import current

    before = {k.name: getattr(_module(k.module), k.name) for k in known.KERNELS}
    state = plugin.install("tuned")
    assert state is plugin.installed() and plugin.install("tuned") is state  # idempotent
    assert current().name == "vllm"
    originals = {name: orig for _, name, orig, _ in state.patched}
    for k in known.KERNELS:
        w = getattr(_module(k.module), k.name)
        assert isinstance(w, JitCache) and w is state.wrappers()[k.name] and originals[k.name] is before[k.name]
    # vLLM's wrappers read the kernels from their module globals at call time: those are ours now
    ua = _module(known.UNIFIED).unified_attention
    assert ua.__globals__["kernel_unified_attention"] is state.wrappers()["kernel_unified_attention"]
    assert ua.__globals__["reduce_segments"] is state.wrappers()["reduce_segments"]
    cw = _module(known.CACHE).triton_reshape_and_cache_flash
    assert cw.__globals__["reshape_and_cache_kernel_flash"] is state.wrappers()["reshape_and_cache_kernel_flash"]
    assert state.wrappers()["kernel_unified_attention"].policy.assume_const  # tuned relaxes


def test_uninstall_restores_vllm_exactly(plugin):
    from jitlab.scope import current

    mods = {m: _module(m) for m in (known.UNIFIED, known.CACHE)}
    before = {m: dict(vars(mod)) for m, mod in mods.items()}
    scope_before = current()
    plugin.install("safe")
    assert any(vars(mods[known.UNIFIED])[k] is not v for k, v in before[known.UNIFIED].items())
    assert plugin.uninstall() is True and plugin.uninstall() is False
    for m, mod in mods.items():
        after = dict(vars(mod))
        assert after.keys() == before[m].keys()
        assert [k for k in after if after[k] is not before[m][k]] == []
    assert current() is scope_before


def test_every_shipped_policy_validates_against_vllms_signatures(vllm_dir):
    path, table_names = policies.SHIPPED, policies.names()
    assert {"safe", "tuned", "uniform-layers"} <= set(table_names)
    for name in table_names:
        table, groups = policies.table(path, name)
        for k in known.KERNELS:
            pol = policies.for_kernel(table, groups, k.name)
            pol.validate(k.name, *_params(getattr(_module(k.module), k.name)))
            for extra in table.get("kernels", {}):
                assert extra in {kk.name for kk in known.KERNELS}, f"{name}: unknown kernel {extra}"


def test_a_bad_name_in_a_policy_file_is_rejected_before_wrapping(plugin, tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text('[[policy]]\nname = "oops"\n[policy.kernels.kernel_unified_attention]\n'
                   'assume_const = ["HEAD_SIZE"]\n')
    original = _module(known.UNIFIED).kernel_unified_attention
    with pytest.raises(ValueError, match=r"kernel_unified_attention.*assume_const: 'HEAD_SIZE' is a constexpr"):
        plugin.install(f"{bad}:oops")
    assert _module(known.UNIFIED).kernel_unified_attention is original and plugin.installed() is None


def test_launch_overhead_policies_apply_through_groups(vllm_dir):
    table, groups = policies.table(ROOT / "experiments" / "launch_overhead.toml", "minimal-checks")
    pol = policies.for_kernel(table, groups, "kernel_unified_attention")
    assert "num_seqs" in pol.check_specialization and "IS_3D" in pol.check_keys
    assert policies.for_kernel(table, groups, "_reshape_cache_per_token_head").relaxed is False  # no groups: safe


@pytest.mark.parametrize("spec", ["nope", "x.txt:tuned", "a.toml:", "  "])
def test_policy_spec_errors_are_one_line(vllm_dir, spec):
    if not spec.strip():  # empty means the default
        assert policies.parse(spec) == (policies.SHIPPED, "safe")
        return
    with pytest.raises(ValueError, match="JITLAB_VLLM_POLICY") as e:
        policies.table(*policies.parse(spec))
    assert "\n" not in str(e.value)


def test_env_var_off_and_named(plugin, monkeypatch):
    from jitlab import settings

    monkeypatch.setenv("JITLAB_VLLM_POLICY", "off")
    settings.reload()
    try:
        original = _module(known.UNIFIED).kernel_unified_attention
        plugin.register()
        assert plugin.installed() is None and _module(known.UNIFIED).kernel_unified_attention is original
        monkeypatch.setenv("JITLAB_VLLM_POLICY", "uniform-layers")
        settings.reload()
        plugin.register()
        assert _module(known.UNIFIED).kernel_unified_attention.policy.name == "uniform-layers"
    finally:
        monkeypatch.delenv("JITLAB_VLLM_POLICY")
        settings.reload()


def test_a_changed_signature_leaves_every_kernel_unwrapped_with_one_warning(plugin, monkeypatch):
    import triton
    import triton.language as tl

    @triton.jit
    def reduce_segments(output_ptr, segm_output_ptr, new_arg, NUM_SEGMENTS_PER_SEQ: tl.constexpr):
        pass

    mod = _module(known.UNIFIED)
    monkeypatch.setattr(mod, "reduce_segments", reduce_segments)
    before = {k.name: getattr(_module(k.module), k.name) for k in known.KERNELS}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert plugin.install("tuned") is None
    ours = [w for w in caught if "jitlab.vllm" in str(w.message)]
    assert len(ours) == 1
    msg = str(ours[0].message)
    assert "reduce_segments: signature differs" in msg and "'new_arg'" in msg and "kernel_unified_attention" not in msg
    assert {k.name: getattr(_module(k.module), k.name) for k in known.KERNELS} == before


def test_entry_point_is_registered_by_pip_install(tmp_path):
    """`pip install` of this tree (no dependencies) registers jitlab.vllm:register for vLLM."""
    import importlib.metadata as md

    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    dists = [d for d in md.distributions(path=[str(tmp_path)]) if d.metadata["Name"] == "jitlab"]
    eps = [ep for d in dists for ep in d.entry_points if ep.group == "vllm.general_plugins"]
    assert [(ep.name, ep.value) for ep in eps] == [("jitlab", "jitlab.vllm:register")]
    assert (tmp_path / "jitlab" / "vllm" / "policies.toml").exists()  # package data travels
    import jitlab.vllm

    assert eps[0].load() is jitlab.vllm.register


def test_the_installed_environment_registers_the_plugin():
    """What vLLM itself reads. In an environment installed from this tree (CI: pip install -e '.[dev]')."""
    import importlib.metadata as md

    # a jitlab.egg-info left in the tree by an editable install is a distribution too: look at all of them
    origins = [d.read_text("direct_url.json") or "" for d in md.distributions(name="jitlab")]
    if not any(str(ROOT) in o or f"file://{ROOT}" in o for o in origins):
        pytest.skip(f"the installed jitlab is not this tree ({[o[:80] for o in origins]})")
    eps = md.entry_points(group="vllm.general_plugins")
    assert "jitlab.vllm:register" in [ep.value for ep in eps if ep.name == "jitlab"]


# ---------------------------------------------------------------------------------------------
# vLLM's wrappers, launched


def test_shipped_policies_hold_over_the_batch_matrix_on_the_fake_adapter(plugin, fake_adapter, monkeypatch):
    """vLLM's own wrappers on CPU tensors in Llama-8B's layout, through jitcache with verify=1 on every
    hit: Triton's real specialization of each launch is compared with what the policy assumed."""
    import torch

    from jitlab.bench import vllm_batches as vb

    if probe.signature(_module(known.UNIFIED).kernel_unified_attention) and type(
            _module(known.UNIFIED).kernel_unified_attention).__name__ == "InterpretedFunction":
        pytest.skip("this session imported vLLM's kernels under TRITON_INTERPRET=1")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    shape = vb.Shape(context=64, prefill_chunk=8, max_num_seqs=17)
    specs = vb.matrix((1, 2, 7, 16, 17), vb.KINDS, vb.MODES, shape)
    for name in ("safe", "tuned", "uniform-layers"):
        state = plugin.install(name, scope=f"test-{name}", verify=1)
        for _ in range(2):  # the second pass hits entries prepared by other batches
            for s in specs:
                vb.step(vb.Batch(s, shape, "cpu"))
        counters = {n: w.counters() for n, w in state.wrappers().items()}
        assert counters["kernel_unified_attention"]["verify"] > len(specs)
        assert counters["reduce_segments"]["hit"] > 0 and counters["reshape_and_cache_kernel_flash"]["hit"] > 0
        assert all(c["fallback"] == 0 for c in counters.values()), counters
        if name != "safe":  # relaxed: fewer entries than distinct Triton keys is the point, never more
            assert counters["kernel_unified_attention"]["entries"] <= safe_entries
        else:
            safe_entries = counters["kernel_unified_attention"]["entries"]
        plugin.uninstall()
    assert len({launch["key"] for launch in fake_adapter.launches}) >= 4  # 2D/3D, num_seqs classes


def test_unified_attention_interpreted_plugin_on_and_off_bitwise(vllm_dir):
    """vLLM's unified_attention() and cache write under Triton's interpreter, plugin off then on
    (jitcache passes through there): bitwise equal, the launches went through the wrappers, and the
    output matches a torch reference (the batch is laid out as vLLM lays it out)."""
    script = r"""
import sys, torch
from jitlab.vllm import kernel_files
kernel_files.activate(sys.argv[1])
torch.cuda.get_device_capability = lambda device=None: (9, 0)  # vLLM's cache write asks; no GPU here
from jitlab.bench import vllm_batches as vb
from jitlab._triton.interpreter import nested_jit_calls_interpreted
import jitlab.vllm as jv
for spec in (vb.Spec(3, "mixed", "2d"), vb.Spec(2, "decode", "3d")):
    b = vb.Batch(spec, vb.CPU_SHAPE, "cpu")
    kv0 = b.kv_cache.clone()
    with nested_jit_calls_interpreted():
        b.out.fill_(float("nan")); vb.step(b)
        off = [vb.bits(x).clone() for x in b.outputs()]
        err = (b.out.float() - vb.reference_attention(b)).abs().max().item()
        state = jv.install("tuned")
        b.kv_cache.copy_(kv0); b.out.fill_(float("nan")); vb.step(b)
        on = [vb.bits(x) for x in b.outputs()]
        routed = sorted(n for n, w in state.wrappers().items() if w.counters().get("fallback.passthrough"))
        jv.uninstall()
    print(spec.name, all(torch.equal(a, c) for a, c in zip(off, on)), err < 1e-4, ",".join(routed))
"""
    env = subprocess_env(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")  # CPU, also on a GPU host
    r = subprocess.run([sys.executable, "-c", script, str(vllm_dir)], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines == ["mixed n=3 2d True True kernel_unified_attention,reshape_and_cache_kernel_flash",
                     "decode n=2 3d True True kernel_unified_attention,reduce_segments,reshape_and_cache_kernel_flash"]


def test_default_matrix_splits_into_device_calls_under_8_minutes():
    """The default vllm_kernels matrix exceeds one 8-minute device call on the H200's estimate; split by
    --kinds (decode | prefill,mixed) each part fits, and together they cover the matrix."""
    from experiments import vllm_kernels as exp
    from jitlab.bench import vllm_batches as vb, vllm_kernels
    from jitlab.bench.runner import Config

    shape = vb.Shape()
    cfg = Config(launches=exp.LAUNCHES, repeats=exp.REPEATS, warmup=exp.WARMUP)
    quick = Config(launches=exp.LAUNCHES // 2, repeats=5, warmup=exp.WARMUP)
    full = vb.matrix(exp.NUM_SEQS, exp.KINDS, exp.MODES, shape)
    parts = [vb.matrix(exp.NUM_SEQS, kinds, exp.MODES, shape) for kinds in (("decode",), ("prefill", "mixed"))]
    n = len(exp.POLICY_NAMES)
    assert 60 <= vllm_kernels.estimate(vb.matrix(exp.QUICK_NUM_SEQS, exp.QUICK_KINDS, exp.MODES, shape), shape,
                                       quick, n) <= 120  # the committed --quick run: ~1.5 min
    assert vllm_kernels.estimate(full, shape, cfg, n) > 8 * 60
    assert all(vllm_kernels.estimate(p, shape, cfg, n) < 8 * 60 for p in parts)
    assert sorted(s.name for p in parts for s in p) == sorted(s.name for s in full)


def test_register_without_vllm_says_vllm_is_not_installed(monkeypatch):
    """Without vLLM (forced: sys.modules["vllm"] = None hides any install), register() wraps nothing and
    says so in one warning, instead of blaming a difference in vLLM's kernels."""
    import jitlab.vllm as jv

    monkeypatch.setitem(sys.modules, "vllm", None)
    jv.uninstall()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert jv.install("tuned") is None
    msgs = [str(w.message) for w in caught if "jitlab.vllm" in str(w.message)]
    assert len(msgs) == 1 and "vLLM is not installed" in msgs[0] and "differ" not in msgs[0], msgs
    assert '.[vllm]' in msgs[0]
