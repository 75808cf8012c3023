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


def _hook_reader() -> Callable[[], tuple | None]:
    """A function returning (enter, exit) hooks when any is set, else None: read per launch, so a
    profiler that attaches hooks after a kernel was prepared is still called (dejavu froze them)."""
    source = probe.hook_source()
    if source == "compiled-kernel":
        from triton.compiler.compiler import CompiledKernel as holder
    else:
        from triton import knobs

        holder = knobs.runtime
    chain = getattr(__import__("triton").knobs, "HookChain", None) if source == "knobs-chain" else None

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

    def __init__(self) -> None:
        self.hooks = _hook_reader()
        device, self.get_stream = _device_and_stream()
        # `device` is an int when it cannot change (one visible GPU): the binder then embeds it.
        self.device_constant = device if isinstance(device, int) else None
        self.get_device = (lambda: device) if isinstance(device, int) else device

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
        """Triton re-checks on every launch that globals the kernel read are unchanged; jitlab
        does it at prepare and verify time only."""
        missing = object()
        for (name, _), (val, globals_dict) in jit_fn.used_global_vals.items():
            if globals_dict.get(name, missing) != val:
                return name
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



_ADAPTER: Adapter | None = None
_REASON: str | None = None


def get_adapter() -> tuple[Adapter | None, str | None]:
    """(Adapter, None) when the fast path is usable here, else (None, reason). Decided once."""
    global _ADAPTER, _REASON
    if _ADAPTER is None and _REASON is None:
        reason = probe.unsupported_reason()
        if reason is None:
            try:
                _ADAPTER = Adapter()
            except Exception as e:  # noqa: BLE001 - unsupported means pass-through, never a crash
                reason = f"adapter setup failed: {type(e).__name__}: {e}"
        _REASON = reason
    return _ADAPTER, _REASON


def reset() -> None:
    """Forget the adapter decision (tests monkeypatch probes, then call this)."""
    global _ADAPTER, _REASON
    _ADAPTER, _REASON = None, None
    for f in (probe.interpreter_active, probe.active_backend):
        f.cache_clear()


def offline_binder(jit_fn: Any, arch: int = 90) -> Callable:
    """Triton's generated binder for a CUDA target, without a GPU (for CPU tests of jitlab's key
    against Triton's own specialization rules)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(GPUTarget("cuda", arch, 32))
    return create_function_from_signature(jit_fn.signature, jit_fn.params, backend)
