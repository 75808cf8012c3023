"""Optional parts of jitlab and the pip extra that brings each one.

`pip install jitlab` installs only what the decorator needs (triton, and torch from the user's own
setup). Tracing, the lab (experiments, report), the notebooks and the vLLM plugin are extras; a
missing one is reported in one line that names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {
    "trace": "OpenTelemetry SDK and OTLP exporters (jitlab.telemetry export, jitlab-replay)",
    "lab": "experiments, report and bench (rich, pandas)",
    "notebooks": "the notebooks (jupyterlab, jupytext, matplotlib)",
    "vllm": "the vLLM plugin",
}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the pip extra that brings it."""


def require(extra: str, module: str) -> ModuleType:
    """Import `module`, or raise MissingExtra naming `pip install 'jitlab[extra]'`."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; valid choices: {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"{module} is not installed: it comes with jitlab's [{extra}] extra "
                           f"({EXTRAS[extra]}): pip install 'jitlab[{extra}]'") from e
