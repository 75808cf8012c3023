"""Optional parts of jitlab and the pip extra that brings each one.

`pip install -e .` (in a checkout: jitlab is not on the package index) installs only what the
decorator needs (triton, and torch from the user's own setup). Tracing, the lab (experiments, report),
the notebooks and the vLLM plugin are extras; a missing one is reported in one line that names the
extra to install, and a command line ends with that line alone (`one_line`).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from types import ModuleType
from typing import Iterator

EXTRAS = {
    "trace": "OpenTelemetry SDK and OTLP exporters (jitlab.telemetry export, jitlab-replay)",
    "lab": "experiments, report and bench (rich, pandas)",
    "notebooks": "the notebooks (jupyterlab, jupytext, matplotlib)",
    "vllm": "the vLLM plugin",
}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the pip extra that brings it."""


def install_hint(extra: str) -> str:
    """The command that installs `extra` from a checkout of jitlab (the form that works: jitlab is not on
    the package index)."""
    return f'pip install -e ".[{extra}]"'


def require(extra: str, module: str) -> ModuleType:
    """Import `module`, or raise MissingExtra naming the extra and the command that installs it."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; valid choices: {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        what = "is not installed" if isinstance(e, ModuleNotFoundError) else f"cannot be imported ({e})"
        raise MissingExtra(f"{module} {what}: it comes with jitlab's [{extra}] extra ({EXTRAS[extra]}): "
                           f"{install_hint(extra)} in the jitlab checkout") from None


@contextlib.contextmanager
def one_line(prog: str) -> Iterator[None]:
    """For a command line: a MissingExtra raised inside ends the program with `prog: <message>` on
    stderr and exit status 2, no traceback."""
    try:
        yield
    except MissingExtra as e:
        sys.stderr.write(f"{prog}: {e}\n")
        raise SystemExit(2) from None
