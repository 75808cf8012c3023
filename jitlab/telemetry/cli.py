"""The entry points of `jitlab-replay` and `jitlab-export`: each checks first that the [trace] extra is
installed, so that with the core install alone the command ends with one line naming the extra (exit
status 2) instead of a traceback, `--help` included. The commands themselves are `replay.main` and
`chrome.main`."""

from __future__ import annotations

import sys

from .._extras import one_line, require

# What the trace files' readers import: OpenTelemetry's SDK and protobuf messages (all in [trace]).
_TRACE_MODULES = ("opentelemetry.sdk", "opentelemetry.proto", "google.protobuf")


def _needs(prog: str, modules: tuple[str, ...]) -> None:
    with one_line(prog):
        for m in modules:
            require("trace", m)


def _setting_errors_in_one_line(prog: str, main) -> None:
    from ..settings import SettingError

    try:
        main()
    except SettingError as e:
        sys.stderr.write(f"{prog}: {e}\n")
        raise SystemExit(2) from None


def replay() -> None:
    _needs("jitlab-replay", _TRACE_MODULES + ("requests",))
    from .replay import main

    _setting_errors_in_one_line("jitlab-replay", main)


def export() -> None:
    _needs("jitlab-export", _TRACE_MODULES)
    from .chrome import main

    _setting_errors_in_one_line("jitlab-export", main)
