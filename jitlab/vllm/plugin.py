"""Install jitlab over vLLM's Triton attention kernels, and take it off again.

vLLM calls `register()` (entry point group `vllm.general_plugins`) in every process it starts
(front end, engine core, workers), before any model is loaded. `install()`:
  1. reads the policy (JITLAB_VLLM_POLICY; "off" wraps nothing),
  2. probes the installed vLLM (jitlab.vllm.probe): any difference from the kernels the plugin knows
     leaves all of them unwrapped, with one warning naming what differed,
  3. validates every policy name against the kernel's real signature (here, not only inside
     jitcache: under the interpreter jitcache passes through before it would validate),
  4. makes the scope "vllm" current in the calling thread, and
  5. replaces each kernel's module global with `jitcache(policy=...)` over it. vLLM's wrappers look
     the kernel up in their module's globals at every call, so the next launch goes through jitlab.

Scope: vLLM gives a general plugin no model name (the hook takes no arguments and runs in the front
end before any config exists), so the scope is a fixed name, "vllm"; one vLLM process serves one
model. Entering the scope once costs nothing per launch, but a context variable is per thread:
vLLM 0.26.0 loads plugins and runs the model in the same thread (the engine core's and each
worker's main thread); a launch from another thread would use the global scope (still correct).

`uninstall()` restores every patched global to the exact object it replaced and leaves the scope.
A module that imported a kernel by name while the plugin was installed keeps the wrapper
(vLLM 0.26.0: `int4_per_token_head` imports `reduce_segments` lazily, on its first INT4 call).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

from .. import settings
from . import policies, probe
from .known import KERNELS, VLLM_VERSION

log = logging.getLogger(__name__)
SCOPE = "vllm"


@dataclass
class Installed:
    policy: str
    scope: str
    patched: list[tuple[Any, str, Any, Any]] = field(default_factory=list)  # (module, name, original, wrapper)
    exit: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def wrappers(self) -> dict[str, Any]:
        return {name: w for _, name, _, w in self.patched}


_STATE: Installed | None = None
_LOCK = threading.Lock()


def register() -> None:
    """The vLLM general-plugin entry point: `install()` with JITLAB_VLLM_POLICY."""
    install()


def installed() -> Installed | None:
    return _STATE


def install(policy: str | None = None, scope: str = SCOPE, verify: int = 0) -> Installed | None:
    """Wrap vLLM's Triton attention kernels (policy: JITLAB_VLLM_POLICY's syntax; default the variable;
    verify=N re-derives Triton's full key on every Nth hit, as JITLAB_VERIFY=N does).
    Idempotent. None when nothing was wrapped ("off", JITLAB_DISABLE=1, or a vLLM the plugin does not know).
    A malformed policy raises ValueError (one line naming the variable, the value and the choices)."""
    global _STATE
    spec = settings.SETTINGS.vllm_policy if policy is None else policy
    with _LOCK:
        if _STATE is not None:
            if _STATE.policy != spec:
                log.warning("jitlab.vllm: already installed with policy %r; %r ignored", _STATE.policy, spec)
            return _STATE
        where = policies.parse(spec)
        if where is None or settings.SETTINGS.disable:
            log.info("jitlab.vllm: not wrapping vLLM's kernels (%s)",
                     "JITLAB_DISABLE=1" if settings.SETTINGS.disable else "JITLAB_VLLM_POLICY=off")
            return None
        table, groups = policies.table(*where)
        if not probe.vllm_installed():
            warnings.warn("jitlab.vllm: vLLM is not installed, so no kernel is wrapped "
                          f"(the plugin knows vLLM {VLLM_VERSION}: pip install -e \".[vllm]\")",
                          RuntimeWarning, stacklevel=2)
            return None
        modules, problems = probe.check()
        if problems:
            warnings.warn(f"jitlab.vllm: vLLM's kernels differ from vLLM {VLLM_VERSION}'s, so none is wrapped: "
                          + "; ".join(problems), RuntimeWarning, stacklevel=2)
            return None
        plan = []
        for k in KERNELS:
            original = getattr(modules[k.module], k.name)
            pol = policies.for_kernel(table, groups, k.name)
            pol = pol.replace(verify=verify) if verify else pol
            params = probe.signature(original)
            pol.validate(k.name, [p.split(":")[0] for p in params if p.endswith(":constexpr")],
                         [p for p in params if not p.endswith(":constexpr")])
            plan.append((modules[k.module], k.name, original, pol))
        _STATE = _wrap(spec, scope, plan)
        log.info("jitlab.vllm: %d vLLM kernels wrapped (policy %s, scope %s)", len(plan), table["name"], scope)
        return _STATE


def _wrap(spec: str, scope: str, plan: list) -> Installed:
    from .. import jitcache
    from ..scope import scope as scope_cm

    state = Installed(policy=spec, scope=scope)
    state.exit.enter_context(scope_cm(scope))
    for module, name, original, pol in plan:
        wrapper = jitcache(policy=pol)(original)
        setattr(module, name, wrapper)
        state.patched.append((module, name, original, wrapper))
    return state


def uninstall() -> bool:
    """Put back every global the plugin replaced (the identical objects). False if nothing was installed."""
    global _STATE
    with _LOCK:
        state, _STATE = _STATE, None
    if state is None:
        return False
    for module, name, original, wrapper in state.patched:
        current = getattr(module, name, None)
        if current is wrapper:
            setattr(module, name, original)
        else:
            log.warning("jitlab.vllm: %s.%s was replaced after install; left as it is", module.__name__, name)
    try:
        state.exit.close()
    except ValueError:  # the scope was entered in another thread's context: nothing to reset here
        pass
    return True
