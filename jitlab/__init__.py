"""jitlab: cheap Triton kernel launches, safe by default, relaxed by name, traced.

    from jitlab import jitcache
    @jitcache                      # key covers everything Triton specializes on
    @triton.jit
    def kernel(...): ...
    kernel[grid](*args, **kwargs)  # launches like the Triton kernel

    jitlab.install()               # or every Triton kernel of the process, no decorator
                                   # (`jitlab run -- python app.py` does it from the outside)
"""

from __future__ import annotations

from .auto import install, uninstall
from .decorator import jitcache
from .errors import AssumptionViolated, LockedMiss
from .policy import SAFE, Policy
from .scope import CacheLock, Scope, get_scope, scope
from .settings import configure_logging as _configure_logging

__version__ = "0.1.0"
__all__ = ["jitcache", "install", "uninstall", "JitCache", "Policy", "SAFE", "CacheLock", "Scope", "scope", "get_scope",
           "LockedMiss", "AssumptionViolated", "__version__"]

_configure_logging()


def __getattr__(name: str):
    if name == "JitCache":  # imported lazily: `import jitlab` stays cheap and Triton-free
        from .cache import JitCache

        return JitCache
    raise AttributeError(name)
