"""The README as a newcomer follows it: its CPU demo runs, its links resolve, and what a command says
with the core install alone (no extras) is one line naming the extra (issue 22, item 5)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# A fresh interpreter in which the extras' modules cannot be imported: the core install, simulated.
CORE_ONLY = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder
    BLOCKED = ("opentelemetry", "google.protobuf", "grpc", "requests", "pandas", "rich", "matplotlib")
    class Block(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, Block())
""")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITLAB_", "OTEL_", "TRITON_INTERPRET"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def _demo_source() -> str:
    m = re.search(r"<!-- cpu-demo[^>]*-->\s*```python\n(.*?)```", README, re.S)
    assert m, "README: the CPU demo block (after <!-- cpu-demo -->) is missing"
    return m.group(1)


def test_the_readme_cpu_demo_runs_as_written(tmp_path):
    """The demo's commands: TRITON_INTERPRET=1 with tracing at full, then the report of its trace.
    JITLAB_TRACE_SAMPLE holds a bad value, which `full` does not use: not an error."""
    assert "TRITON_INTERPRET=1 JITLAB_TRACE=full JITLAB_TRACE_FILE=demo.jsonl python demo.py" in README
    (tmp_path / "demo.py").write_text(_demo_source())
    r = subprocess.run([sys.executable, "demo.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=_env(TRITON_INTERPRET="1", JITLAB_TRACE="full", JITLAB_TRACE_FILE="demo.jsonl",
                                JITLAB_TRACE_SAMPLE="not-a-number"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok ") and "'fallback.passthrough': 3" in r.stdout, r.stdout
    assert "pass-through" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "jitlab.bench.report", "demo.jsonl"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| add_one | global | safe | 3 |" in r.stdout, r.stdout


def test_the_readme_links_resolve():
    prose = re.sub(r"`[^`]*`", "", re.sub(r"```.*?```", "", README, flags=re.S))  # code: `k[grid](args)`
    links = re.findall(r"\[[^\]]+\]\(([^)#\s]+)(?:#[^)]*)?\)", prose)
    assert "docs/RESULTS.md" in links and "docs/TRACING.md" in links and "docs/VLLM.md" in links
    missing = [l for l in links if not l.startswith("http") and not (ROOT / l).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_install_hints_work_from_a_checkout():
    """jitlab is not on the package index: every hint is `pip install -e ".[extra]"`."""
    from jitlab._extras import MissingExtra, require

    with pytest.raises(MissingExtra) as e:
        require("trace", "jitlab_no_such_module")
    assert 'pip install -e ".[trace]"' in str(e.value) and "\n" not in str(e.value)
    docs = [README] + [p.read_text() for p in (ROOT / "docs").glob("*.md")] + [(ROOT / "notebooks" / "README.md").read_text()]
    for text in docs:
        assert not re.search(r"pip install ['\"]?jitlab\[", text), "a hint that cannot work (jitlab is not on PyPI)"


def test_one_jaeger_image_everywhere():
    from jitlab.telemetry.replay import JAEGER_IMAGE

    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for image in re.findall(r"jaegertracing/jaeger:\S+?(?=[\s`)])", path.read_text()):
            assert image == JAEGER_IMAGE, f"{path.name}: {image}, jitlab-replay says {JAEGER_IMAGE}"


@pytest.mark.parametrize("call, prog, extra", [
    ("from jitlab.cli import export_command; sys.argv = ['jitlab-export', '--help']; export_command()",
     "jitlab", "trace"),
    ("from jitlab.cli import replay_command; sys.argv = ['jitlab-replay', 'x.jsonl']; replay_command()",
     "jitlab", "trace"),
    ("sys.argv = ['launch_overhead', '--quick']; import runpy; "
     "runpy.run_module('experiments.launch_overhead', run_name='__main__')", "launch_overhead", "lab"),
])
def test_with_the_core_install_a_command_ends_in_one_line_naming_the_extra(call, prog, extra):
    r = subprocess.run([sys.executable, "-c", CORE_ONLY + call], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=_env())
    lines = [line for line in r.stderr.splitlines() if line.strip() and "Warning" not in line and
             not line.startswith("  ")]
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: ") and f'pip install -e ".[{extra}]"' in lines[0], \
        r.stderr[-3000:]
    assert "Traceback" not in r.stderr


def test_with_the_core_install_load_traces_names_the_extra():
    r = subprocess.run([sys.executable, "-c", CORE_ONLY +
                        "try:\n    from jitlab.telemetry import load_traces\n    load_traces('x.jsonl')\nexcept ImportError as e:\n    print(type(e).__name__, e)\n"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=_env())
    assert r.stdout.startswith("MissingExtra ") and 'pip install -e ".[trace]"' in r.stdout, r.stdout + r.stderr


def test_the_readme_any_program_line_runs_as_written(tmp_path):
    """"Use on any program": the demo without @jitcache, under `jitlab run` as the README writes it: the
    program's output unchanged, and the exit table naming its kernel with 3 launches passed through."""
    m = re.search(r"<!-- any-program[^>]*-->\s*```bash\n([^\n]*)", README)
    assert m, "README: the any-program block (after <!-- any-program -->) is missing"
    line = m.group(1).split("#")[0].strip()
    assert line == "TRITON_INTERPRET=1 jitlab run -- python app.py", line
    (tmp_path / "app.py").write_text(_demo_source().replace("@jitcache                      # goes above @triton.jit\n", "")
                                     .replace("from jitlab import jitcache\n", "")
                                     .replace('print("ok", add_one.counters())', 'print("ok")'))
    assert "jitlab" not in (tmp_path / "app.py").read_text(), "app.py should be a plain Triton program"
    r = subprocess.run([sys.executable, "-m", "jitlab", "run", "--", sys.executable, "app.py"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=_env(TRITON_INTERPRET="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "ok", r.stdout
    row = [ln for ln in r.stderr.splitlines() if ln.startswith("__main__.add_one")]
    assert row and row[0].split()[1] == "3" and "pass-through" in row[0], r.stderr[-2000:]
