"""The launcher contract of Triton 3.3-3.9, and everything else jitlab needs from Triton's internals.

Only `jitlab._triton` may touch `device_caches`, the binder, `CompiledKernel.run`,
`packed_metadata`, `knobs` or the launch hooks. The rest of jitlab uses `Adapter` and `Param`.

The call contract, stable since 3.3 (notes: triton-launch.md section 3.5):
    kernel.run(gx, gy, gz, stream, function, packed_metadata, launch_metadata,
               enter_hook, exit_hook, *all_bound_args_in_parameter_order)
What moves between versions is where hooks live (`probe.hook_source`) and the arity of the
per-device cache tuple (we only use its last element, the binder).
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StateItem:
    """Triton state that `JITFunction.run` reads on every launch and that feeds its key or makes it
    do something else (a knob, the pre-run hooks); its value goes into jitlab's key. `reads` are
    (object, attribute) pairs and `op` combines them: "v" the value, "n" not the value, "o" the first
    or the second, "z" the value is None (the generated hit path and the C dispatcher both do this);
    "py" only for the Python hit path: `expr`, with `{P}` before each name taken from `namespace`."""

    name: str
    op: str
    reads: tuple[tuple[Any, str], ...] = ()
    expr: str = ""
    namespace: dict | None = None

    def python(self, prefix: str) -> tuple[str, dict]:
        """(expression, namespace) for generated code whose names for this item start with `prefix`."""
        if self.op == "py":
            return self.expr.format(P=prefix), {prefix + k: v for k, v in (self.namespace or {}).items()}
        names = [f"{prefix}{i}.{attr}" for i, (_, attr) in enumerate(self.reads)]
        expr = {"v": "{0}", "n": "not {0}", "o": "{0} or {1}", "z": "{0} is None"}[self.op].format(*names)
        return expr, {f"{prefix}{i}": obj for i, (obj, _) in enumerate(self.reads)}

    def native(self) -> tuple | None:
        """(op, obj, attr[, obj2, attr2]) for the C dispatcher, or None when only Python can read it."""
        if self.op == "py":
            return None
        return (self.op, *(x for read in self.reads for x in read))


@dataclass(frozen=True)
class Param:
    """What jitlab needs to know about one parameter of a @triton.jit function."""

    name: str
    index: int
    constexpr: bool
    specialize: bool  # False under do_not_specialize
    align: bool  # False under do_not_specialize_on_alignment
    annotation: str  # Triton's normalized annotation ("" when none)
    kind: inspect._ParameterKind
    default: Any  # inspect.Parameter.empty when required


def inner_jit_function(fn: Any) -> Any:
    """The JITFunction under `fn` (which may be an Autotuner/Heuristics stack), or None."""
    from triton.runtime.jit import JITFunction

    for _ in range(64):  # decorator stacks are shallow; the bound only stops a cycle
        if isinstance(fn, JITFunction):
            return fn
        fn = getattr(fn, "fn", None)
        if fn is None:
            return None
    return None


def is_interpreted(fn: Any) -> bool:
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return False
    for _ in range(64):
        if isinstance(fn, InterpretedFunction):
            return True
        fn = getattr(fn, "fn", None)
        if fn is None:
            return False
    return False


def params_of(jit_fn: Any) -> list[Param]:
    sig_params = list(jit_fn.signature.parameters.values())
    out = []
    for i, (kp, sp) in enumerate(zip(jit_fn.params, sig_params)):
        out.append(
            Param(
                name=kp.name,
                index=i,
                constexpr=bool(kp.is_constexpr),
                specialize=not kp.do_not_specialize,
                align=not kp.do_not_specialize_on_alignment,
                annotation=kp.annotation or "",
                kind=sp.kind,
                default=sp.default,
            )
        )
    return out


def kernel_parameters(fn: Any) -> tuple[list[str], list[str]] | None:
    """(constexpr names, runtime names) of a Triton kernel in any form (JITFunction, the interpreter's
    InterpretedFunction, an autotune/heuristics stack over either), or None when `fn` is no Triton
    kernel. Validation of policies uses this, so it is the same on GPU, interpreter and pass-through."""
    jit_fn = inner_jit_function(fn)
    if jit_fn is not None:
        params = params_of(jit_fn)
        return [p.name for p in params if p.constexpr], [p.name for p in params if not p.constexpr]
    for _ in range(64):
        if is_interpreted(fn):
            break
        fn = getattr(fn, "fn", None)
        if fn is None:
            return None
    else:
        return None
    from triton.runtime.interpreter import InterpretedFunction

    while not isinstance(fn, InterpretedFunction):
        fn = fn.fn
    cx, rt = [], []
    for p in inspect.signature(fn.fn).parameters.values():
        a = p.annotation
        (cx if "constexpr" in (a if isinstance(a, str) else getattr(a, "__name__", repr(a))) else rt).append(p.name)
    return cx, rt


def restack(top: Any, inner: Any) -> Any:
    """A copy of the autotune/heuristics stack `top` whose innermost `.fn` (the JITFunction) is `inner`.
    Each layer is a shallow copy, so the user's objects are never written to (two jitcache wrappers
    over one autotuned kernel stay independent); the copies share the layers' tuning caches, which
    hold choices that are the same whichever wrapper asks."""
    import copy

    from triton.runtime.jit import JITFunction

    if isinstance(top, JITFunction):
        return inner
    layer = copy.copy(top)
    layer.fn = restack(top.fn, inner)
    return layer


def hook_location() -> tuple[Any, type | None]:
    """(the object whose launch_enter_hook/launch_exit_hook Triton reads, the HookChain type or None)."""
    source = probe.hook_source()
    if source == "compiled-kernel":
        from triton.compiler.compiler import CompiledKernel as holder
    else:
        from triton import knobs

        holder = knobs.runtime
    chain = getattr(__import__("triton").knobs, "HookChain", None) if source == "knobs-chain" else None
    return holder, chain


def _hook_reader() -> Callable[[], tuple | None]:
    """A function returning (enter, exit) hooks when any is set, else None: read per launch, so a
    profiler that attaches hooks after a kernel was prepared is still called (dejavu froze them)."""
    holder, chain = hook_location()

    def active_hooks():
        e = holder.launch_enter_hook
        x = holder.launch_exit_hook
        if (e is None or (e.__class__ is chain and not e.calls)) and (
            x is None or (x.__class__ is chain and not x.calls)
        ):
            return None
        return e, x

    return active_hooks


def _device_and_stream() -> tuple[Callable[[], int] | int, Callable[[int], int]]:
    """The cheapest correct readers of the current device and stream. Triton's driver uses
    torch.cuda.current_device (0.5 us on the H200 host); torch's raw getter costs 0.24 us. With a
    single visible device the current device can only be 0, so it is a constant (the device count
    cannot change after CUDA initialisation)."""
    import torch

    if torch.cuda.device_count() == 1:
        get_device: Callable[[], int] | int = 0
    else:
        get_device = getattr(torch._C, "_cuda_getDevice", None) or torch.cuda.current_device
    get_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if get_stream is None:
        get_stream = lambda d: torch.cuda.current_stream(d).cuda_stream  # noqa: E731
    return get_device, get_stream


@dataclass
class Compiled:
    """A compiled kernel loaded on one device, plus what a launch needs. Holds no user tensors."""

    kernel: Any  # triton CompiledKernel
    run: Callable  # the launcher
    function: int
    packed_metadata: Any
    name: str


class Adapter:
    """The 3.3-3.9 launcher contract. Built once per process by `jitlab._triton.adapter()`."""

    name = "triton-launcher-3.3+"
    #: The JITFunction attribute holding the globals the kernel read (empty until its first compile;
    #: Triton replaces the dict then, so hit paths read the attribute, never keep the dict).
    used_globals_attr = "used_global_vals"
    #: value -> one more key item for each tensor, where the backend specializes tensors on more than
    #: keys.spec covers (hip.HipAdapter: Triton's is_within_2gb); None on CUDA.
    tensor_extra: Callable[[Any], Any] | None = None
    #: Why jitcache stays in pass-through unless the user opts in (JITLAB_HIP, read by the core); None on CUDA.
    opt_in_reason: str | None = None

    def __init__(self) -> None:
        self.hooks = _hook_reader()
        device, self.get_stream = _device_and_stream()
        # `device` is an int when it cannot change (one visible GPU): the binder then embeds it.
        self.device_constant = device if isinstance(device, int) else None
        self.get_device = (lambda: device) if isinstance(device, int) else device
        self._injected = _injected_option_readers()

    # -- binding -------------------------------------------------------------------------
    @staticmethod
    def binder(jit_fn: Any, device: int) -> Callable:
        """Triton's own generated binder for `device` (creating the per-device cache the way
        Triton's first launch would)."""
        return jit_fn.device_caches[device][-1]

    @staticmethod
    def launch_options(jit_fn: Any, kwargs: dict) -> dict:
        """The option kwargs Triton's JITFunction.run adds before binding: `debug` (3.3 read
        TRITON_DEBUG from the environment; 3.4+ `knobs.runtime.debug`, triton-lang/triton#6641) and,
        where it exists, `instrumentation_mode` (3.5+)."""
        try:
            from triton import knobs
        except ImportError:  # 3.3
            import os

            return {"debug": kwargs.get("debug", jit_fn.debug) or os.environ.get("TRITON_DEBUG", "0") == "1"}
        extra = {"debug": kwargs.get("debug", jit_fn.debug) or knobs.runtime.debug}
        comp = getattr(knobs, "compilation", None)
        if comp is not None and hasattr(comp, "instrumentation_mode"):
            extra["instrumentation_mode"] = comp.instrumentation_mode
        return extra

    def specialization(self, jit_fn: Any, device: int, args: tuple, kwargs: dict) -> tuple[list, dict]:
        """Triton's full specialization of this call: (per-parameter specialization, options)."""
        kw = dict(kwargs)
        kw.update(self.launch_options(jit_fn, kwargs))
        _bound, spec, options = self.binder(jit_fn, device)(*args, **kw)
        return list(spec), dict(options)

    @staticmethod
    def used_globals_changed(jit_fn: Any) -> str | None:
        """The first global the kernel read whose value changed since it was compiled, else None:
        Triton makes this comparison on every launch (after the cache lookup) and raises
        `RuntimeError: Global variable ... has changed`; the hit path calls this only when the kernel
        read any global (`jit_fn.used_global_vals` non-empty) and then lets Triton raise."""
        missing = object()
        for (name, _), (val, globals_dict) in jit_fn.used_global_vals.items():
            if globals_dict.get(name, missing) != val:
                return name
        return None

    def state_items(self, jit_fn: Any) -> tuple[StateItem, ...]:
        """The per-launch Triton state jitlab's key must cover for this Triton (see probe.run_injected_options):
        each option `run()` injects (debug from `@jit(debug=)` or a knob, instrumentation_mode, ...), whether
        pre-run hooks are set, and (3.7+) whether a stages-inspection hook is set (then every launch goes
        through Triton, which calls them)."""
        items = [self._injected[name](jit_fn) for name in probe.run_injected_options()]
        if hasattr(jit_fn, "pre_run_hooks"):
            items.append(StateItem("<pre_run_hooks>", "n", ((jit_fn, "pre_run_hooks"),)))
        if probe.run_calls_stages_hook():
            from triton import knobs

            items.append(StateItem("<knobs.runtime.add_stages_inspection_hook>", "z",
                                   ((knobs.runtime, "add_stages_inspection_hook"),)))
        return tuple(items)

    @staticmethod
    def needs_triton(jit_fn: Any) -> str | None:
        """Why launches must go through Triton's own `run()` in the current state (it calls something
        on every launch), else None. Both conditions are key items, so the fast path returns once
        they are gone."""
        if getattr(jit_fn, "pre_run_hooks", None):
            return "pre_run_hooks"
        if probe.run_calls_stages_hook():
            from triton import knobs

            if knobs.runtime.add_stages_inspection_hook is not None:
                return "add_stages_inspection_hook"
        return None

    # -- compiling and launching -----------------------------------------------------------
    def compile(self, fn: Any, grid: Any, args: tuple, kwargs: dict) -> Compiled:
        """Compile (or fetch from Triton's caches) through Triton's normal path, then load it.

        `fn` is the JITFunction. Errors are Triton's own (same messages as a plain launch)."""
        kernel = fn.run(*args, grid=grid, warmup=True, **kwargs)
        if kernel is None:
            raise RuntimeError("Triton returned no kernel (a jit_cache_hook skipped compilation)")
        if hasattr(kernel, "result"):  # 3.5+ async compile hands back a future
            kernel = kernel.result()
        run = kernel.run  # 3.5+: property that loads the binary; 3.3/3.4: loads on attribute access
        # CompiledKernel._init_handles publishes its launcher before the loaded function, so a thread
        # that reads `run` while another thread is loading the same kernel can see function None.
        deadline = time.monotonic() + 30
        while kernel.function is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        if kernel.function is None:
            raise RuntimeError(f"{kernel.name}: Triton did not finish loading the binary")
        return Compiled(kernel=kernel, run=run, function=kernel.function,
                        packed_metadata=kernel.packed_metadata, name=kernel.name)

    @staticmethod
    def launch_metadata(compiled: Compiled, grid: tuple, stream: int, values: tuple) -> Any:
        return compiled.kernel.launch_metadata(grid, stream, *values)

    def launch_hooked(self, compiled: Compiled, grid: tuple, stream: int, values: tuple, hooks: tuple) -> None:
        """Launch through Triton's launcher with the hooks and the launch metadata Triton gives them."""
        g = tuple(grid)
        md = self.launch_metadata(compiled, g, stream, values)
        g0, g1, g2 = g[0], g[1] if len(g) > 1 else 1, g[2] if len(g) > 2 else 1
        compiled.run(g0, g1, g2, stream, compiled.function, compiled.packed_metadata, md, hooks[0], hooks[1],
                     *values)

    @staticmethod
    def triton_launch(c: Compiled, pack: Callable | None) -> Callable[..., None]:
        """`launch(g0, g1, g2, stream, *values)` through Triton's own launcher, without hooks (the hit
        path routes hooked launches through `launch_hooked`). assume_const slots get their frozen values."""
        run, function, packed = c.run, c.function, c.packed_metadata
        if pack is None:
            def launch(g0: int, g1: int, g2: int, stream: int, *vals: Any) -> None:
                run(g0, g1, g2, stream, function, packed, None, None, None, *vals)
        else:
            def launch(g0: int, g1: int, g2: int, stream: int, *vals: Any) -> None:
                run(g0, g1, g2, stream, function, packed, None, None, None, *pack(*vals))
        return launch

    @staticmethod
    def run_triton(kernel: Any, grid: Any, kwargs: dict) -> Any:
        """Plain Triton's launch of `kernel` (a JITFunction or a stack over one), errors and all."""
        return kernel.run(grid=grid, warmup=False, **kwargs)



def _injected_option_readers() -> dict[str, Callable[[Any], StateItem]]:
    """How to read each option that `JITFunction.run` injects into its kwargs from Triton state, by
    option name (probe.run_injected_options lists which ones this Triton injects): for a JITFunction,
    a StateItem whose value is what run() injects when the caller passed none (a caller's own value
    is in the options jitlab keys anyway). Lines per release: docs/INTERFACES.md."""
    import os

    try:
        from triton import knobs
    except ImportError:  # 3.3: `kwargs.get("debug", self.debug) or os.environ.get("TRITON_DEBUG", "0") == "1"`
        return {"debug": lambda fn: StateItem(
            "<debug>", "py", expr='{P}fn.debug or {P}environ.get("TRITON_DEBUG", "0") == "1"',
            namespace={"fn": fn, "environ": os.environ})}
    cm = knobs.compilation
    out = {  # 3.4+: `kwargs.get("debug", self.debug) or knobs.runtime.debug`; 3.6+: instrumentation_mode
        "debug": lambda fn: StateItem("<debug>", "o", ((fn, "debug"), (knobs.runtime, "debug"))),
        "instrumentation_mode": lambda fn: StateItem("<knobs.compilation.instrumentation_mode>", "v",
                                                     ((cm, "instrumentation_mode"),))}
    if hasattr(cm, "fpsan_homomorphic_casts"):  # 3.9: a sanitizer option
        out["fpsan_homomorphic_casts"] = lambda fn: StateItem("<knobs.compilation.fpsan_homomorphic_casts>", "v",
                                                              ((cm, "fpsan_homomorphic_casts"),))
    return out


_ADAPTER: Adapter | None = None
_REASON: str | None = None


def get_adapter() -> tuple[Adapter | None, str | None]:
    """(Adapter, None) when the fast path is usable here, else (None, reason). Decided once."""
    global _ADAPTER, _REASON
    if _ADAPTER is None and _REASON is None:
        reason = probe.unsupported_reason()
        if reason is None:
            try:
                cls: type[Adapter] = Adapter
                backend = probe.BACKENDS.get(probe.active_backend())
                if backend is not None:  # hip, offline-checked: jitcache asks for JITLAB_HIP=1 (opt_in_reason)
                    cls = backend.ADAPTER
                _ADAPTER = cls()
                unknown = set(probe.run_injected_options()) - set(_ADAPTER._injected)
                if unknown:  # a Triton whose key reads state jitlab does not know: never guess
                    _ADAPTER, reason = None, (f"triton {probe.triton_version()} JITFunction.run injects options "
                                              f"{sorted(unknown)} that jitlab does not key")
            except Exception as e:  # noqa: BLE001 - unsupported means pass-through, never a crash
                reason = f"adapter setup failed: {type(e).__name__}: {e}"
        _REASON = reason
    return _ADAPTER, _REASON


def reset() -> None:
    """Forget the adapter decision (tests monkeypatch probes, then call this)."""
    global _ADAPTER, _REASON
    _ADAPTER, _REASON = None, None
    for f in (probe.interpreter_active, probe.active_backend):
        getattr(f, "cache_clear", lambda: None)()  # tests may have replaced a probe


def offline_binder(jit_fn: Any, arch: int = 90) -> Callable:
    """Triton's generated binder for a CUDA target, without a GPU (for CPU tests of jitlab's key
    against Triton's own specialization rules)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(GPUTarget("cuda", arch, 32))
    return create_function_from_signature(jit_fn.signature, jit_fn.params, backend)
