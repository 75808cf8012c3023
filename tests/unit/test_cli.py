"""The `jitlab` command (issue 20, items 2 and 3): run, doctor, the delegated subcommands, bad input.

Failures are checked in process (the command stops before it would exec the program). One child
program, under `jitlab run` with Triton's interpreter, covers the program, a subprocess, a
multiprocessing spawn child and a fork child at once (each Python start costs seconds).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from jitlab import auto, cli
from jitlab.cli import autorun
from jitlab.telemetry import recorder as R
from jitlab.telemetry.summary import KernelStats, format_table

from .conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]


def one_line_error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def clean_env(monkeypatch):
    for v in ("JITLAB_AUTO", "JITLAB_AUTO_INCLUDE", "JITLAB_AUTO_EXCLUDE", "JITLAB_TRACE", "JITLAB_TRACE_FILE",
              "JITLAB_RUN_PID", "JITLAB_DISABLE"):
        monkeypatch.delenv(v, raising=False)
    from jitlab import settings

    settings.reload()
    yield
    settings.reload()


def test_run_without_a_program(capsys, clean_env):
    assert "no program given" in one_line_error(capsys, ["run"])
    assert "no program given" in one_line_error(capsys, ["run", "--policy", "safe", "--"])


def test_run_a_program_that_is_not_found(capsys, clean_env):
    assert "'no-such-program-xyz' not found" in one_line_error(capsys, ["run", "--", "no-such-program-xyz"])


@pytest.mark.parametrize("policy, says", [
    ("fast", "--policy 'fast' is not valid; valid: off|safe|observe|<file.toml>:<name>"),
    ("{tmp}/missing.toml:p", "No such file or directory"),
    ("{tmp}/bad.toml:p", "a readable policy file"),
    ("{tmp}/good.toml:nope", "'nope' is not in"),
])
def test_run_with_a_bad_policy(capsys, clean_env, tmp_path, monkeypatch, policy, says):
    (tmp_path / "bad.toml").write_text("[[policy]\nname=")
    (tmp_path / "good.toml").write_text('[[policy]]\nname = "p"\n')
    installs = []
    monkeypatch.setattr(auto, "install", lambda *a, **k: installs.append(a))
    err = one_line_error(capsys, ["run", "--policy", policy.format(tmp=tmp_path), "--", sys.executable, "-c", "1"])
    assert says in err and installs == []


def test_a_bad_jitlab_variable_is_one_line(capsys, clean_env, monkeypatch):
    monkeypatch.setenv("JITLAB_TRACE_SAMPLE", "often")
    err = one_line_error(capsys, ["run", "--", sys.executable, "-c", "1"])
    assert "JITLAB_TRACE_SAMPLE='often' is not valid" in err


def test_a_bad_variable_is_named_as_the_variable_not_a_flag(capsys, clean_env, monkeypatch):
    monkeypatch.setenv("JITLAB_TRACE", "verbose")
    err = one_line_error(capsys, ["run", "--", sys.executable, "-c", "1"])
    assert err.startswith("jitlab run: JITLAB_TRACE='verbose' is not valid; valid: off|summary|sampled|full")


def test_jitlab_auto_from_the_environment_is_the_default_policy(capsys, clean_env, monkeypatch):
    monkeypatch.setenv("JITLAB_AUTO", "fast")
    err = one_line_error(capsys, ["run", "--", sys.executable, "-c", "1"])
    assert err.startswith("jitlab run: JITLAB_AUTO='fast' is not valid")
    from argparse import Namespace

    from jitlab.cli import run as run_cli

    no_flags = Namespace(policy=None, include=[], exclude=[], trace=None, trace_file=None)
    env = run_cli.environment(no_flags, {"JITLAB_AUTO": "observe", "JITLAB_AUTO_INCLUDE": "mod.*"})
    assert env["JITLAB_AUTO"] == "observe" and env["JITLAB_AUTO_INCLUDE"] == "mod.*"
    flags = Namespace(policy="safe", include=["other.*"], exclude=[], trace=None, trace_file=None)
    env = run_cli.environment(flags, {"JITLAB_AUTO": "observe", "JITLAB_AUTO_INCLUDE": "mod.*"})
    assert env["JITLAB_AUTO"] == "safe" and env["JITLAB_AUTO_INCLUDE"] == "other.*"
    assert run_cli.environment(no_flags, {})["JITLAB_AUTO"] == "safe"


def test_unknown_option_is_one_line(capsys, clean_env):
    assert "unrecognized arguments" in one_line_error(capsys, ["run", "--fast", "--", sys.executable])
    assert "invalid choice" in one_line_error(capsys, ["frobnicate"])


def test_run_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--policy", "--trace", "--trace-file", "--include", "--exclude", "observe", "-- python app.py"):
        assert flag in out


def test_doctor(capsys, monkeypatch):
    monkeypatch.setenv("JITLAB_VERIFY", "3")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "doctor-test")
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    for part in ("triton ", "torch ", "GPU: ", "driver: ", "native dispatcher: ", "C launcher: ", "[trace] ",
                 "[lab] ", "JITLAB_VERIFY=3", "OTEL_SERVICE_NAME=doctor-test", "verify=3"):
        assert part in out, part


def test_a_subcommand_names_its_missing_extra(capsys, monkeypatch):
    from jitlab import _extras

    def missing(extra, module):
        raise _extras.MissingExtra(f"{module} is not installed: it comes with jitlab's [{extra}] extra")

    monkeypatch.setattr(cli, "require", missing)
    assert "jitlab's [lab] extra" in one_line_error(capsys, ["report", "x.jsonl"])
    assert "jitlab's [trace] extra" in one_line_error(capsys, ["replay", "x.jsonl"])


def test_entry_points_new_and_old():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["jitlab"] == "jitlab.cli:main"
    assert scripts["jitlab-export"] == "jitlab.cli:export_command"  # aliases: the same one-line errors
    assert scripts["jitlab-replay"] == "jitlab.cli:replay_command"
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["jitlab"]
    assert "_autorun/sitecustomize.py" in data


def test_exit_table_counts_and_times(fake_adapter, monkeypatch):
    """The table's counts come from the caches (exact), its host µs from the drained records."""
    from triton.runtime.jit import JITFunction

    from . import kernels_for_tests as K
    import jitlab
    import torch

    rec = R.Recorder("full")
    prev = R.activate(rec)
    jitlab.install()
    try:
        k = JITFunction(K.add_one.fn)
        x = torch.empty(64)
        for _ in range(5):
            k[(1,)](x, x, 64)
    finally:
        jitlab.uninstall()
        R.activate(prev)
    stats = KernelStats()
    stats.add(rec.drain_raw(), rec.string)
    rows = [r for r in autorun.kernel_rows() if r["kernel"] == "tests.unit.kernels_for_tests.add_one"]
    assert len(rows) == 1 and (rows[0]["hit"], rows[0]["miss"], rows[0]["fallback"]) >= (4, 1, 0)
    text = format_table(rows, stats, "full", "title")
    line = next(ln for ln in text.splitlines() if ln.startswith("tests.unit.kernels_for_tests.add_one"))
    cells = line.split()
    assert cells[1:5] == [str(rows[0]["launches"]), str(rows[0]["hit"]), str(rows[0]["miss"]), "0"]
    assert re.fullmatch(r"\d+\.\d", cells[5]) and cells[6] == "-"  # hits timed, no Triton launch


def test_an_include_that_matched_nothing_warns_also_with_tracing_off(fake_adapter, clean_env, monkeypatch):
    from triton.runtime.jit import JITFunction

    from jitlab import settings
    from . import kernels_for_tests as K
    import jitlab

    monkeypatch.setenv("JITLAB_TRACE", "off")
    settings.reload()
    jitlab.install(include=["nothing.*", "*.add_one"])
    try:
        JITFunction(K.add_one.fn)[(1,)]  # the launcher: the kernel counts as launched
        assert autorun.table() == "jitlab: warning: include pattern 'nothing.*' matched no kernel"
    finally:
        jitlab.uninstall()


PROGRAM = '''
import builtins, multiprocessing as mp, os, subprocess, sys
assert "triton" not in sys.modules, "jitlab run imported Triton before the program did"
import torch, triton, triton.language as tl

@triton.jit
def add_one(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) + 1, mask=offs < n)

def launch(times=2):
    assert getattr(builtins, "chained_sitecustomize", False), "the program's own sitecustomize did not run"
    x = torch.arange(8, dtype=torch.float32); out = torch.zeros(8)
    for _ in range(times):
        add_one[(1,)](x, out, 8, BLOCK=8)
    assert torch.equal(out, x + 1)

if __name__ == "__main__":
    launch(3)
    if "child" in sys.argv:
        sys.exit(0)
    subprocess.run([sys.executable, __file__, "child"], check=True)
    for method in ("spawn", "fork"):
        p = mp.get_context(method).Process(target=launch)
        p.start(); p.join(); assert p.exitcode == 0, method
    sys.exit(5)
'''


@pytest.mark.timeout(300)
def test_run_covers_children_and_passes_the_exit_code(tmp_path):
    """One program: its own launches, a subprocess, a spawn and a fork child, each with its table and
    its own trace file; the program's sitecustomize still runs; exit status 5 comes back unchanged."""
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent(PROGRAM))
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import builtins\nbuiltins.chained_sitecustomize = True\n")
    env = subprocess_env(TRITON_INTERPRET="1")
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{site}"
    for v in ("JITLAB_AUTO", "JITLAB_TRACE", "JITLAB_TRACE_FILE", "JITLAB_RUN_PID", "JITLAB_DISABLE"):
        env.pop(v, None)
    trace = tmp_path / "out" / "run.jsonl"
    r = subprocess.run([sys.executable, "-m", "jitlab", "run", "--trace", "sampled", "--trace-file", str(trace),
                        "--include", "*add_one", "--include", "nothing.*", "--", sys.executable, str(prog)],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=280)
    assert r.returncode == 5, r.stderr[-3000:]
    tables = re.findall(r"^jitlab: kernels of pid (\d+) .*\n.*\n(\S+add_one)\s+(\d+)\s+0\s+0\s+(\d+)\s", r.stderr, re.M)
    assert len(tables) == 4, r.stderr[-3000:]
    pids = {int(p) for p, *_ in tables}
    assert sorted(int(n) for *_, n, _ in tables) == [2, 2, 3, 3]  # fork child: its own 2, not the parent's 3 too
    assert all(n == f for *_, n, f in tables)  # every launch a pass-through (interpreter)
    assert "pass-through: interpreted kernel (TRITON_INTERPRET=1)" in r.stderr
    assert r.stderr.count("include pattern 'nothing.*' matched no kernel") == 4
    files = sorted(p.name for p in trace.parent.iterdir())
    assert len(files) == 4 and "run.jsonl" in files
    assert {int(f[len("run.pid"):-len(".jsonl")]) for f in files if f != "run.jsonl"} < pids
