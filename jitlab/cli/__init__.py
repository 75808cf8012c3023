"""The `jitlab` command (also `python -m jitlab`): run, report, export, replay, doctor.

    jitlab run [--policy safe|observe|FILE.toml:NAME] [--trace off|summary|sampled|full] [--trace-file F]
               [--include PAT] [--exclude PAT] -- python app.py ARGS
    jitlab report TRACE.jsonl          (was: python -m jitlab.bench.report; needs [lab])
    jitlab export TRACE --chrome OUT   (was: jitlab-export; needs [trace])
    jitlab replay FILES...             (was: jitlab-replay; needs [trace])
    jitlab doctor                      what jitlab sees on this machine

Every failure of the command itself is one line on stderr and exit status 2; `jitlab run` exits
with the program's own status. docs/CLI.md has the same reference.
"""

from __future__ import annotations

import argparse
import sys

from .._extras import MissingExtra, require
from ..settings import SettingError
from .errors import CliError

# Each delegated subcommand's main(), imported by a statement (visible to the import rules) once
# jitlab._extras.require has checked the extra its module needs.
def _report_main():
    from ..bench import report

    return report.main


def _export_main():
    from ..telemetry import chrome

    return chrome.main


def _replay_main():
    from ..telemetry import replay

    return replay.main


#: Subcommands that are another module's main(), the extra each needs (module to check) and what they do.
DELEGATED = {
    "report": (_report_main, "lab", "pandas", "a markdown summary of a jitlab trace file"),
    "export": (_export_main, "trace", "opentelemetry.sdk",
               "a trace file as Chrome trace-event JSON (Perfetto), optionally merged with a torch profile"),
    "replay": (_replay_main, "trace", "requests", "send trace files to an OTLP collector"),
}


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        raise CliError(f"{self.prog}: {message} (see {self.prog} --help)")


def parser() -> Parser:
    from . import run

    p = Parser(prog="jitlab", description="jitlab: cheap Triton kernel launches, safe by default, traced.",
               epilog="Old entry points stay: jitlab-export, jitlab-replay, python -m jitlab.bench.report.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    run.add_parser(sub)
    for name, (_, extra, _, what) in DELEGATED.items():
        sub.add_parser(name, help=f"{what} (needs jitlab[{extra}]; `jitlab {name} --help` for its options)",
                       add_help=False)
    sub.add_parser("doctor", help="what jitlab sees here: versions, GPU, native parts, extras, JITLAB_*/OTEL_* settings")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code, out = _dispatch(argv)
    except (CliError, SettingError, MissingExtra) as e:
        print(f"jitlab: {e}" if not str(e).startswith("jitlab") else str(e), file=sys.stderr)
        return 2
    if out:
        print(out)
    return code


def export_command() -> None:
    """`jitlab-export`, the old name of `jitlab export`: the same checks (a missing [trace] is one line, exit 2,
    `--help` included)."""
    raise SystemExit(main(["export", *sys.argv[1:]]))


def replay_command() -> None:
    """`jitlab-replay`, the old name of `jitlab replay` (same checks)."""
    raise SystemExit(main(["replay", *sys.argv[1:]]))


def _dispatch(argv: list[str]) -> tuple[int, str]:
    """(exit status, what to print on stdout) of one command line."""
    if argv and argv[0] in DELEGATED:
        load_main, extra, probe, _ = DELEGATED[argv[0]]
        require(extra, probe)
        sys.argv[0] = f"jitlab {argv[0]}"
        return _exit_code(_call(load_main(), argv[1:], f"jitlab {argv[0]}")), ""
    args = parser().parse_args(argv)
    if args.command is None:
        return 2, parser().format_help()
    if args.command == "doctor":
        from . import doctor

        return 0, doctor.report()
    from . import run

    return run.run(args), ""


def _call(main, argv: list[str], prog: str):
    """A delegated main(); its argparse errors (SystemExit 2 after a usage block) stay its own."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def _exit_code(code) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1
