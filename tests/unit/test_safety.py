"""The safety matrix on CPU: in every case, jitlab launches exactly what Triton launches, or raises
what Triton raises. Triton's real binder (offline sm_90) decides what Triton would launch; the fake
adapter (conftest) stands in for the binary, the launcher and Triton's run()."""

from __future__ import annotations

import importlib
import random
import textwrap
import threading
import time
import warnings

import pytest
import torch

import jitlab
from jitlab import AssumptionViolated, LockedMiss, Policy, jitcache, settings
from jitlab._triton import adapter as adapter_mod

from . import kernels_for_tests as K


def t(n=64, dtype=torch.float32, offset=0):
    return torch.empty(n + 8, dtype=dtype)[offset:offset + n]


def launched(fake):
    return fake.launches[-1]


# -- two wrappers over one autotune/heuristics kernel ------------------------------------------------
@pytest.mark.parametrize("make", [lambda: K.heuristic_fill, K.autotuned_fill], ids=["heuristics", "autotune"])
def test_two_wrappers_over_one_stack_stay_independent(fake_adapter, make):
    try:
        kernel = make()
    except RuntimeError as e:  # Triton 3.3's Autotuner needs a driver at construction
        pytest.skip(f"cannot build the stack without a GPU here: {e}")
    inner = kernel.fn
    safe, relaxed = jitcache(kernel), jitcache(check_keys=[])(kernel)
    assert kernel.fn is inner  # the user's stack is never written to
    out = t()
    for n in (17, 3, 17, 40, 3):
        relaxed[(1,)](out, n)
        safe[(1,)](out, n)
        want = dict(out_ptr=out, n=n, **_stack_kwargs(kernel, n))
        assert launched(fake_adapter)["key"] == fake_adapter.triton_key(inner, (), want)
    assert safe.counters()["fallback"] == relaxed.counters()["fallback"] == 0
    assert safe.counters()["hit"] + safe.counters()["miss"] == 5


def _stack_kwargs(kernel, n):
    if hasattr(kernel, "configs"):  # autotune: the config's kwargs, as Autotuner.run passes them
        return kernel.configs[0].all_kwargs()
    return {"BLOCK": 1 << (n - 1).bit_length()}


def test_jitcache_over_jitcache_is_refused_at_decoration(fake_adapter):
    with pytest.raises(ValueError, match="already wrapped by jitcache"):
        jitcache(jitcache(K.add_one))
    import types

    over = types.SimpleNamespace(fn=jitcache(K.add_one), __name__="stack")  # e.g. autotune over a jitcache
    with pytest.raises(ValueError, match="already wrapped by jitcache"):
        jitcache(over)


# -- Triton state beyond the arguments -------------------------------------------------------------------
@pytest.mark.parametrize("knob, value", [("runtime.debug", True), ("compilation.instrumentation_mode", "fpsan")])
def test_knob_changed_after_warmup_launches_what_triton_launches(fake_adapter, monkeypatch, knob, value):
    knobs = pytest.importorskip("triton.knobs", reason="Triton 3.3 has no knobs (TRITON_DEBUG: next test)")
    from jitlab._triton import probe

    if knob.split(".")[1] not in probe.run_injected_options():
        pytest.skip(f"this Triton's run() does not inject {knob}")

    holder, attr = knob.split(".")
    k = jitcache(K.add_one)
    x, y = t(), t()
    k[(1,)](x, y, 64)
    k[(1,)](x, y, 64)
    monkeypatch.setattr(getattr(knobs, holder), attr, value)
    k[(1,)](x, y, 64)
    key = launched(fake_adapter)["key"]
    assert key == fake_adapter.triton_key(K.add_one, (x, y, 64), {}) and repr(value) in key
    monkeypatch.undo()
    k[(1,)](x, y, 64)
    assert repr(value) not in launched(fake_adapter)["key"]
    assert k.counters()["prepare"] == 2 and k.counters()["hit"] == 2


def test_triton_debug_env_on_triton_without_knobs(fake_adapter, monkeypatch):
    """Triton 3.3 reads TRITON_DEBUG from the environment on every launch; so does jitlab's key there."""
    import importlib.util

    if importlib.util.find_spec("triton.knobs") is not None:
        pytest.skip("this Triton reads debug from knobs (previous test)")
    k = jitcache(K.add_one)
    x, y = t(), t()
    k[(1,)](x, y, 64)
    monkeypatch.setenv("TRITON_DEBUG", "1")
    k[(1,)](x, y, 64)
    assert launched(fake_adapter)["key"] == fake_adapter.triton_key(K.add_one, (x, y, 64), {})
    assert "('debug', True)" in launched(fake_adapter)["key"] and k.counters()["prepare"] == 2


def test_pre_run_hooks_send_launches_through_triton(fake_adapter):
    k = jitcache(K.add_one)
    x, y = t(), t()
    k[(1,)](x, y, 64)
    seen = []
    K.add_one.add_pre_run_hook(lambda *a, **kw: seen.append(1))
    try:
        k[(1,)](x, y, 64)
        assert launched(fake_adapter)["via"] == "triton" and k.counters()["fallback.pre_run_hooks"] == 1
    finally:
        K.add_one.pre_run_hooks.clear()
    k[(1,)](x, y, 64)
    assert "via" not in launched(fake_adapter)


def test_changed_global_raises_what_triton_raises(fake_adapter, monkeypatch):
    k = jitcache(K.reads_global)
    x = t()
    k[(1,)](x, BLOCK=16)
    k[(1,)](x, BLOCK=16)
    assert K.reads_global.used_global_vals  # recorded at compile, as Triton does
    monkeypatch.setattr(K, "GLOBAL_SCALE", K.tl.constexpr(3))
    with pytest.raises(RuntimeError, match="Global variable GLOBAL_SCALE has changed"):
        k[(1,)](x, BLOCK=16)
    with pytest.raises(RuntimeError, match="Global variable GLOBAL_SCALE has changed"):
        k[(1,)](x, BLOCK=32)  # a miss too
    assert k.counters()["fallback.globals_changed"] == 2


# -- any valid signature ---------------------------------------------------------------------------------
def test_parameter_names_never_shadow_the_generated_code(fake_adapter):
    k = jitcache(K.shadowing)
    kw = dict(_stream=t(), _scope=1, _device=2, _miss=t(), _hooks=3.0, _table=None, _now=16, _jl_grid=t(),
              _jl_key=17, launch=t(), BLOCK=32)
    for _ in range(3):
        k[(1,)](**kw)
        assert launched(fake_adapter)["key"] == fake_adapter.triton_key(K.shadowing, (), kw)
    assert k.counters()["hit"] == 2 and "_jl1_" in k.hit_source()
    key, vals = k.bind(**kw)  # the test binder uses the same prefix
    assert vals == tuple(kw.values()) and len(key) == len(k._layout.items)


@pytest.mark.parametrize("kernel, args", [(K.one_param, (16,)), (K.no_params, ())], ids=["one", "none"])
def test_one_and_no_parameter_kernels(fake_adapter, kernel, args):
    k = jitcache(kernel)
    for _ in range(2):
        k[(1,)](*args)
    assert k.counters()["hit"] == 1 and launched(fake_adapter)["vals"] == args


def test_tuple_and_signed_zero_constexprs_are_distinct_entries(fake_adapter):
    k = jitcache(K.tuple_cx)
    x = t()
    for shape, f in [((3, 2), 0.0), ((3.0, 2), 0.0), ((3, 2), -0.0), ((3, 2), float("nan")), ((3, 2), float("nan"))]:
        k[(1,)](x, shape, f)
        assert launched(fake_adapter)["key"] == fake_adapter.triton_key(K.tuple_cx, (x, shape, f), {})
    assert k.counters()["prepare"] == 4 and k.counters()["hit"] == 1  # NaN: one key, as Triton's text


def _random_kernel_module(rng, tmp_path, i):
    # (`options`, `backend`, `specialize_impl` break Triton's own binder: not valid Triton signatures)
    names = rng.sample(["a", "b", "n", "x_ptr", "_jl_grid", "_jl_vals", "len", "_stream", "launch", "bind",
                        "_scope", "BLOCK", "stride", "p", "q", "_jl1_e", "table"], rng.randint(0, 7))
    parts, defaults_started = [], False
    for nm in names:
        cx = rng.random() < 0.3
        ann = ": tl.constexpr" if cx else ""
        if defaults_started or rng.random() < 0.25:
            defaults_started = True
            parts.append(f"{nm}{ann} = {rng.choice([4, 16, 'None']) if not cx else 8}")
        else:
            parts.append(f"{nm}{ann}")
    src = textwrap.dedent(f"""
        import triton
        import triton.language as tl

        @triton.jit
        def k{i}({", ".join(parts)}):
            pass
    """)
    (tmp_path / f"randsig{i}.py").write_text(src)
    return importlib.import_module(f"randsig{i}").__dict__[f"k{i}"]


def test_random_signatures_bind_like_tritons_binder(fake_adapter, tmp_path, monkeypatch):
    import inspect

    monkeypatch.syspath_prepend(str(tmp_path))
    rng = random.Random(7)
    values = [1, 16, 17, 2**33, None, 0.5, True]
    for i in range(40):
        fn = _random_kernel_module(rng, tmp_path, i)
        k = jitcache(fn)
        params = adapter_mod.params_of(fn)
        binder = adapter_mod.offline_binder(fn)
        for _ in range(4):
            given = {p.name: (rng.choice([16, 32]) if p.constexpr else rng.choice(values)) for p in params
                     if p.default is inspect.Parameter.empty or rng.random() < 0.5}
            required = [p.name for p in params if p.default is inspect.Parameter.empty]
            args = tuple(given.pop(n) for n in required[:rng.randint(0, len(required))])
            bound, _, _ = binder(*args, **given)
            k[(1,)](*args, **given)
            assert launched(fake_adapter)["vals"] == tuple(bound.values()), (fn.__name__, args, given)
            assert launched(fake_adapter)["key"] == fake_adapter.triton_key(fn, args, given)
        assert max(map(len, k.hit_source().splitlines())) < 200


# -- validation is the same everywhere --------------------------------------------------------------------
BAD_POLICIES = [
    ({"check_keys": ["n"]}, r"'n' is a runtime argument"),
    ({"cache_launch_grid": 1}, r"cache_launch_grid must be True or False"),
    ({"verify": True}, r"verify must be a non-negative int"),
    ({"policy": 3}, r"policy must be a jitlab.Policy or a policy name"),
    ({"policy": "nope"}, r"'safe' or 'path/to/policies.toml:name'"),
]


@pytest.mark.parametrize("kwargs, match", BAD_POLICIES)
@pytest.mark.parametrize("backend", ["gpu", "no-driver", "interpreter"])
def test_validation_does_not_depend_on_the_backend(request, monkeypatch, kwargs, match, backend):
    from .conftest import install_fake_adapter

    kernel = K.add_one
    if backend == "gpu":
        install_fake_adapter(monkeypatch)
    elif backend == "no-driver":
        request.getfixturevalue("no_gpu_driver")
    else:
        from triton.runtime.interpreter import InterpretedFunction

        kernel = InterpretedFunction(K.add_one.fn)
    with pytest.raises(ValueError, match=match):
        jitcache(**kwargs)(kernel)


def test_policy_by_name_from_toml(fake_adapter, tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[[policy]]\nname = "loose"\ncheck_keys = []\ncache_launch_grid = true\n')
    k = jitcache(policy=f"{f}:loose")(K.add_one)
    assert k.policy == Policy(name="loose", check_keys=(), cache_launch_grid=True)
    with pytest.raises(ValueError, match=r"valid choices: \['loose'\]"):
        jitcache(policy=f"{f}:tight")(K.add_one)
    f.write_text('[[policy]]\nname = "x"\nassume_const = "@strides"\n')
    with pytest.raises(ValueError, match="workload groups"):
        jitcache(policy=f"{f}:x")(K.add_one)


def test_a_plain_function_is_refused(fake_adapter):
    with pytest.raises(ValueError, match="is not a Triton kernel"):
        jitcache(lambda x: x)


def test_triton_jit_above_jitcache_says_which_order_is_right(fake_adapter):
    import triton
    import triton.language as tl

    with pytest.raises(ValueError, match=r"jitcache\(k\): function 'k' is not a Triton kernel.*"
                                         r"write @jitcache above @triton.jit, not below it"):
        @triton.jit
        @jitcache
        def k(x_ptr, BLOCK: tl.constexpr):
            pass
    with pytest.raises(ValueError) as e:
        jitcache(42)
    assert "above @triton.jit" not in str(e.value)  # not a function: no order to fix


# -- verify catches every relaxation ------------------------------------------------------------------------
def test_verify_catches_a_changed_grid_under_cache_launch_grid(fake_adapter):
    k = jitcache(cache_launch_grid=True, verify=1)(K.add_one)
    x, y = t(), t()
    k[lambda m: (m["n"] // 16,)](x, y, 64)
    k[lambda m: (m["n"] // 16,)](x, y, 64)
    with pytest.raises(AssumptionViolated, match=r"'<grid>'.*cache_launch_grid.*\(4, 1, 1\), now \(5, 1, 1\)"):
        k[lambda m: (m["n"] // 16,)](x, y, 80)


def test_verify_names_changed_options_and_globals(fake_adapter, monkeypatch):
    k = jitcache(verify=1)(K.reads_global)
    x = t()
    k[(1,)](x, BLOCK=16)
    e = k.entries()[0]
    e.options = {**e.options, "num_warps": 99}  # what a key that missed an option would have prepared
    with pytest.raises(AssumptionViolated, match="options"):
        k._verify(k._table(), e, (1,), (x, 16), {})
    e.options = dict(k.entries()[0].options)
    monkeypatch.setattr(adapter_mod.Adapter, "used_globals_changed", staticmethod(lambda fn: "GLOBAL_SCALE"))
    e.options = fake_adapter.specialization(K.reads_global, 0, (), {"x_ptr": x, "BLOCK": 16})[1]
    with pytest.raises(AssumptionViolated, match="GLOBAL_SCALE.*unchanged globals"):
        k._verify(k._table(), e, (1,), (x, 16), {})


# -- counters, memory, messages ------------------------------------------------------------------------------
def test_counters_add_up_when_threads_wait_on_a_miss(fake_adapter, monkeypatch):
    slow = fake_adapter.compile

    def compile_slowly(*a):
        time.sleep(0.05)
        return slow(*a)

    monkeypatch.setattr(fake_adapter, "compile", compile_slowly)
    k = jitcache(K.add_one)
    xs = [t() for _ in range(8)]
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait()
        for j in range(50):
            k[(1,)](xs[i], xs[(i + 1) % 8], [1, 16, 17][j % 3])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    c = k.counters()
    assert c["hit"] + c["miss"] + c["fallback"] + c["locked_miss"] == 400 and c["miss"] == c["prepare"] == 3


def test_too_many_entries_warn_once_naming_what_changes(fake_adapter, monkeypatch):
    monkeypatch.setenv("JITLAB_MAX_ENTRIES", "4")
    settings.reload()
    monkeypatch.setattr(jitlab.cache, "_WARNED", set())
    try:
        k = jitcache(K.add_one)
        x, y = t(), t()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            for block in (16, 32, 64, 128, 256, 512):
                k[(1,)](x, y, 64, BLOCK=block)
        msgs = [str(m.message) for m in w if "cache entries" in str(m.message)]
        assert len(msgs) == 1 and "more than 4 cache entries" in msgs[0] and "BLOCK (5 values)" in msgs[0]
    finally:
        monkeypatch.delenv("JITLAB_MAX_ENTRIES")
        settings.reload()


def test_cleared_scopes_leave_the_registry(fake_adapter):
    import gc

    S = importlib.import_module("jitlab.scope")

    k = jitcache(K.add_one)
    with jitlab.scope("request-1234") as s:
        k[(1,)](t(), t(), 64)
    assert "request-1234" in S._REGISTRY
    s.clear()
    del s
    gc.collect()
    assert "request-1234" not in S._REGISTRY and k.counters("request-1234")["entries"] == 0


def test_locked_miss_describes_each_key_part_by_kind(fake_adapter):
    k = jitcache(K.add_one)
    x, y = t(), t()
    k[(1,)](x, y, 64, BLOCK=64)
    k.lock()
    fake_adapter.device = 1
    with pytest.raises(LockedMiss) as e:
        k[(1,)](x, y, 1, BLOCK=32, num_warps=8)
    msg = str(e.value)
    for part in ("<device>: cached device 0, got device 1", "n: cached i32 %16==0, got i32 ==1",
                 "BLOCK: cached 64, got 32", "<options>: cached no options, got {'num_warps': 8}"):
        assert part in msg, msg


def test_tracebacks_through_a_hit_show_the_generated_line(fake_adapter):
    import traceback

    k = jitcache(K.add_one)
    k._launch = k.python_hit_path()  # the generated Python hit path (the dispatcher in front of it is C)
    x, y = t(), t()
    k[(1,)](x, y, 64)
    k.entries()[0].launch = None  # make the hit path's launch line raise
    with pytest.raises(TypeError) as e:
        k[(1,)](x, y, 64)
    text = "".join(traceback.format_exception(e.value))
    assert "<jitlab launch for add_one" in text and "_jl_e.launch(_jl_g[0]" in text
    assert "def launch(_jl_grid, x_ptr, out_ptr, n, BLOCK=_jl_d_BLOCK, **_jl_options)" in k.hit_source()


def test_stages_inspection_hook_sends_launches_through_triton_where_run_calls_it(fake_adapter, monkeypatch):
    from jitlab._triton import probe

    if not probe.run_calls_stages_hook():
        pytest.skip("this Triton's run() does not call add_stages_inspection_hook (only its compiler does)")
    from triton import knobs

    k = jitcache(K.add_one)
    x, y = t(), t()
    k[(1,)](x, y, 64)
    monkeypatch.setattr(knobs.runtime, "add_stages_inspection_hook", lambda *a: ("k", "h"))
    k[(1,)](x, y, 64)
    assert k.counters()["fallback.add_stages_inspection_hook"] == 1 and launched(fake_adapter)["via"] == "triton"


def test_jit_debug_attribute_changed_after_warmup(fake_adapter, monkeypatch):
    """`@triton.jit(debug=...)` is an attribute run() reads on every launch (`kwargs.get("debug", self.debug)`)."""
    k = jitcache(K.add_one)
    x, y = t(), t()
    k[(1,)](x, y, 64)
    monkeypatch.setattr(K.add_one, "debug", True)
    k[(1,)](x, y, 64)
    key = launched(fake_adapter)["key"]
    assert key == fake_adapter.triton_key(K.add_one, (x, y, 64), {}) and "('debug', True)" in key


def test_threads_with_different_keys_launch_their_own_entries(fake_adapter):
    """8 threads, each with its own key class, a callable grid (Python code inside the launch path, so
    threads switch there) and a 1 µs switch interval: every launch used its own call's entry."""
    import sys

    k = jitcache(K.add_one)
    xs = [t() for _ in range(8)]
    ns = [1, 16, 17, 2**31, 32, 3, 48, 5]  # distinct or shared key classes across threads
    errors = []

    def worker(i):
        try:
            for _ in range(150):
                k[lambda meta: (meta["n"] % 7 + 1,)](xs[i], xs[(i + 1) % 8], ns[i])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors
    for rec in fake_adapter.launches:
        n = rec["vals"][2]
        assert rec["grid"] == (n % 7 + 1, 1, 1)
        assert rec["key"] == fake_adapter.triton_key(K.add_one, rec["vals"][:3], {}), (n, rec["key"])


def test_a_missing_policy_file_names_the_kernel_and_the_file(fake_adapter, tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ValueError) as e:
        jitcache(policy=f"{missing}:loose")(K.add_one)
    msg = str(e.value)
    assert msg.startswith("jitcache(add_one): cannot read policies from ") and str(missing) in msg, msg
    assert "\n" not in msg


def test_one_table_is_read_from_a_file_whose_other_tables_need_a_workload(fake_adapter, tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[[policy]]\nname = "x"\nassume_const = "@strides"\n[[policy]]\nname = "plain"\n'
                 'assume_const = "n + x_ptr - x_ptr"\n')
    assert jitcache(policy=f"{f}:plain")(K.add_one).policy.assume_const == ("n",)
