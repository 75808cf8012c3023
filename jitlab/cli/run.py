"""`jitlab run`: a program, and every Python process it starts, with jitlab under its Triton kernels.

The mechanism is zero-code instrumentation's: jitlab/_autorun (a sitecustomize.py) goes first on
PYTHONPATH and the settings go into the environment (JITLAB_AUTO, JITLAB_AUTO_INCLUDE,
JITLAB_AUTO_EXCLUDE, JITLAB_TRACE, JITLAB_TRACE_FILE, JITLAB_RUN_PID); then this process becomes
the program (exec: same pid, so the program's exit status is this command's). Children started
with subprocess or multiprocessing spawn run the same sitecustomize; fork children inherit the
install. Each process writes its own trace file: the program JITLAB_TRACE_FILE, a child the same
name with `.pid<N>` before the extension.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from .. import settings

#: The flag that sets each variable (a bad value is named by the flag the user typed).
FLAGS = {"JITLAB_AUTO": "--policy", "JITLAB_AUTO_INCLUDE": "--include", "JITLAB_AUTO_EXCLUDE": "--exclude",
         "JITLAB_TRACE": "--trace", "JITLAB_TRACE_FILE": "--trace-file"}
SITE_DIR = Path(__file__).resolve().parents[1] / "_autorun"

HELP = """Run PROGRAM with jitlab under every Triton kernel it (and any Python process it starts) launches
with kernel[grid](...): no code change. Put `--` before the program:

  jitlab run -- python app.py --its-args
  jitlab run --policy observe --trace full --trace-file traces/stock.jsonl -- python app.py
  TRITON_INTERPRET=1 jitlab run -- python app.py     (CPU: kernels pass through, counted)

At exit each process that launched a kernel prints one table (stderr): launches, hits, misses,
fallbacks and pass-throughs with their reasons, host µs per launch. The program's exit status is
returned unchanged. Environment equivalents: JITLAB_AUTO, JITLAB_AUTO_INCLUDE, JITLAB_AUTO_EXCLUDE,
JITLAB_TRACE, JITLAB_TRACE_FILE (`jitlab doctor` shows them)."""


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a program with jitlab under all its Triton kernels",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=None, metavar="safe|observe|FILE.toml:NAME",
                   help="safe (default: JITLAB_AUTO if set, else safe): Triton's whole key. observe: every kernel wrapped but launched by "
                        "plain Triton, counted and traced (the stock side of a comparison). FILE.toml:NAME: a "
                        "policy of that file (a kernel it does not fit passes through, with the reason)")
    p.add_argument("--trace", choices=settings.TRACE_LEVELS, default=None,
                   help="launch recording level (default: JITLAB_TRACE if set, else sampled). summary and above "
                        "print the exit table; sampled and full also time hits")
    p.add_argument("--trace-file", metavar="F", default=None,
                   help="OTLP JSON-lines trace of the program (children: F with .pid<N> before the extension)")
    p.add_argument("--include", action="append", default=[], metavar="PAT",
                   help="wrap only kernels whose module.qualname matches this shell pattern (repeatable); "
                        "a pattern that matched no kernel is a warning at exit")
    p.add_argument("--exclude", action="append", default=[], metavar="PAT",
                   help="leave kernels whose module.qualname matches this shell pattern to plain Triton (repeatable)")
    p.add_argument("program", nargs=argparse.REMAINDER, help="-- then the program and its arguments")


def environment(args: argparse.Namespace, base: dict[str, str]) -> dict[str, str]:
    """The program's environment: `base` plus jitlab's settings and the bootstrap on PYTHONPATH."""
    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE_DIR), base.get("PYTHONPATH", "")) if p)
    env["JITLAB_AUTO"] = args.policy or base.get("JITLAB_AUTO") or "safe"
    for var, pats in (("JITLAB_AUTO_INCLUDE", args.include), ("JITLAB_AUTO_EXCLUDE", args.exclude)):
        if pats:  # the flags replace the environment's patterns; without them those stand
            env[var] = ",".join(pats)
    env["JITLAB_TRACE"] = args.trace or base.get("JITLAB_TRACE") or "sampled"
    if args.trace_file:
        env["JITLAB_TRACE_FILE"] = os.path.abspath(args.trace_file)  # children may change directory
    env["JITLAB_RUN_PID"] = str(os.getpid())  # exec keeps the pid: the program is this process
    return env


def check(env: dict[str, str]) -> None:
    """Every setting the program's processes will read, validated here: SettingError (one line)
    before anything starts, so nothing is installed half-way."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        s = settings.reload()
        for name in ("disable", "auto", "auto_include", "auto_exclude", "trace", "trace_sample", "trace_file",
                     "trace_flush_s", "recorder_capacity", "launcher", "verify", "max_entries"):
            getattr(s, name)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        settings.reload()


def run(args: argparse.Namespace) -> int:
    from .errors import CliError

    program = list(args.program)
    if program and program[0] == "--":
        program = program[1:]
    if not program:
        raise CliError("jitlab run: no program given; usage: jitlab run [OPTIONS] -- python app.py ARGS")
    exe = shutil.which(program[0])
    if exe is None:
        raise CliError(f"jitlab run: program {program[0]!r} not found (not an executable file, nor on PATH)")
    env = environment(args, dict(os.environ))
    try:
        check(env)
    except settings.SettingError as e:
        flag = FLAGS.get(e.variable)
        if flag is not None and not getattr(args, flag[2:].replace("-", "_")):
            flag = None  # the value came from the environment, not from a flag
        raise CliError(f"jitlab run: {flag + ' ' + repr(e.value) if flag else e.variable + '=' + repr(e.value)} "
                       f"is not valid; valid: {e.valid}") from None
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(exe, program, env)
    except OSError as e:
        raise CliError(f"jitlab run: cannot start {program[0]!r}: {e.strerror or e}") from None
    return 2  # not reached
