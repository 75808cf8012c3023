"""`@jitcache` and `@jitcache(...)`: the user-facing decorator."""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, overload

from . import settings
from .policy import SAFE, Policy
from .scope import CacheLock

log = logging.getLogger(__name__)
_KILL_WARNED = False


@overload
def jitcache(fn: Any) -> Any: ...
@overload
def jitcache(*, policy: Policy | str | None = None, check_keys: list[str] | None = None,
             check_specialization: list[str] | None = None, assume_const: list[str] | None = None,
             cache_launch_grid: bool | None = None, cache_lock: CacheLock | None = None,
             verify: int | None = None) -> Callable[[Any], Any]: ...


def jitcache(fn: Any = None, *, policy: Policy | str | None = None, check_keys: Any = None,
             check_specialization: Any = None, assume_const: Any = None, cache_lock: CacheLock | None = None,
             cache_launch_grid: bool | None = None, verify: int | None = None) -> Any:
    """Put jitlab's launch cache over a Triton kernel (`@jitcache` goes above `@triton.jit`,
    `@triton.autotune` or `@triton.heuristics`).

    With no argument the key covers everything Triton specializes on. Each argument relaxes one check
    by name (see `jitlab.Policy` for when each is unsafe); `policy=` passes them as one object, or names
    one ("safe", or "path/to/policies.toml:name"). Bad input raises ValueError here, at decoration.
    """
    overrides = {k: v for k, v in dict(check_keys=check_keys, check_specialization=check_specialization,
                                       assume_const=assume_const, cache_launch_grid=cache_launch_grid,
                                       verify=verify).items() if v is not None}
    if cache_lock is not None and not isinstance(cache_lock, CacheLock):
        raise ValueError(f"cache_lock must be a jitlab.CacheLock or None, got {type(cache_lock).__name__}")

    def decorate(kernel: Any) -> Any:
        # The kill switch comes before anything else, probes included (dejavu asserted first).
        if settings.SETTINGS.disable:
            global _KILL_WARNED
            if not _KILL_WARNED:
                _KILL_WARNED = True
                warnings.warn("JITLAB_DISABLE=1: jitcache returns kernels unwrapped", RuntimeWarning, stacklevel=3)
            return kernel
        name = getattr(kernel, "__name__", type(kernel).__name__)
        pol = _policy(name, kernel)
        from .cache import JitCache
        from .telemetry.recorder import ensure_process_session

        ensure_process_session()  # JITLAB_TRACE not off: start the process's tracing session (telemetry.process)
        return JitCache(kernel, pol, cache_lock)

    def _policy(name: str, kernel: Any) -> Policy:
        """The validated policy for `kernel`: the same checks on GPU, in the interpreter and in
        pass-through (only JITLAB_DISABLE=1 skips them)."""
        layer = kernel
        for _ in range(64):  # jitcache(jitcache(k)), or jitcache(autotune(jitcache(k))): one cache per launch
            if getattr(layer, "_jitlab_wrapper", False):
                raise ValueError(f"jitcache({name}): the kernel is already wrapped by jitcache ({layer!r}); "
                                 "apply one jitcache, with the policy you want, over the Triton kernel")
            layer = getattr(layer, "fn", None)
            if layer is None:
                break
        from ._triton.adapter import kernel_parameters

        names = kernel_parameters(kernel)
        if names is None:
            # a plain function most often means the decorators are in the wrong order (Triton's own
            # decorator would then fail on the JitCache with a bare AssertionError): say which is right
            order = (" (decorators apply bottom-up: write @jitcache above @triton.jit, not below it)"
                     if callable(kernel) and hasattr(kernel, "__code__") else "")
            raise ValueError(f"jitcache({name}): {type(kernel).__name__} {name!r} is not a Triton kernel "
                             f"(@triton.jit, @triton.autotune or @triton.heuristics){order}")
        try:
            base = Policy.named(SAFE if policy is None else policy)
            pol = base.replace(**overrides, name=_relaxed_name(base, overrides)) if overrides else base
            if cache_lock is not None and not pol.static:
                pol = pol.replace(static=True)
        except (ValueError, TypeError) as e:
            raise ValueError(f"jitcache({name}): {e}") from None
        pol.validate(name, *names)
        return pol

    if fn is not None:
        if isinstance(fn, Policy):
            raise ValueError("use jitcache(policy=...) to pass a Policy")
        return decorate(fn)
    return decorate


def _relaxed_name(base: Policy, overrides: dict) -> str:
    """The name of `base` changed by keyword arguments, saying what they change (it is what repr and spans
    show): `relaxed(check_keys=IS_3D; assume_const=scale)`, `mine(cache_launch_grid)`, `safe(verify=10)`."""
    parts = []
    for k, v in overrides.items():
        if v is True:
            parts.append(k)
        elif isinstance(v, (list, tuple, set, frozenset)):
            parts.append(f"{k}={','.join(map(str, v)) or '-'}")
        else:
            parts.append(f"{k}={v}")
    relaxes = any(k in ("check_keys", "check_specialization", "assume_const") or (k == "cache_launch_grid" and v)
                  for k, v in overrides.items())
    prefix = "relaxed" if base is SAFE and relaxes else base.name
    return f"{prefix}({'; '.join(parts)})"
