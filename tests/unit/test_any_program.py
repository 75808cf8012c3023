"""experiments/any_program.py and jitlab.bench.{programs,outputs,kernel_table,any_program}, on CPU.

The manifest check (a modified or missing file is refused, one line), the output rule, the per-kernel
table (synthetic trace and a trace made here under TRITON_INTERPRET=1), the whole pipeline with a
stand-in for `jitlab run` (the process tracing of a decorated program), and one real `jitlab run`
end to end (skipped, saying why, in a checkout without it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from jitlab.bench import any_program, kernel_table, programs
from jitlab.bench.outputs import MASKED, Rule, compare

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "experiments" / "programs" / "triton_tutorials.toml"

KERNEL_SRC = """
import torch, triton, triton.language as tl
{decorator}
@triton.jit
def add_kernel(x, y, o, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    tl.store(o + offs, tl.load(x + offs, mask=m) + tl.load(y + offs, mask=m), mask=m)

torch.manual_seed(0)
x, y = torch.rand(100), torch.rand(100)
o = torch.empty_like(x)
for _ in range(3):
    add_kernel[(2,)](x, y, o, 100, BLOCK=64)
print("sum", [round(v, 4) for v in o[:4].tolist()])
print("max diff", (o - (x + y)).abs().max().item())
"""


def tiny_program(tmp_path: Path, decorated: bool) -> Path:
    p = tmp_path / ("tiny_decorated.py" if decorated else "tiny.py")
    p.write_text(("from jitlab import jitcache\n" if decorated else "")
                 + KERNEL_SRC.format(decorator="@jitcache" if decorated else ""))
    return p


# -- the manifest ----------------------------------------------------------------------------------------
def write_manifest(tmp_path: Path, files: dict[str, bytes], record: dict[str, bytes] | None = None) -> Path:
    """A manifest over `record` (default: `files`), with `files` written to its folder."""
    folder = tmp_path / "progs"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    record = files if record is None else record
    import hashlib

    body = ['folder = "progs"', 'repository = "https://example.org/r"', 'tag = "v1"',
            'obtain = "git clone https://example.org/r && cp r/*.py progs/"',
            "[compare]", "stop_at = '^bench:$'"]
    for name, data in record.items():
        body += ["[[program]]", f'name = "{Path(name).stem}"', f'file = "{name}"',
                 f'sha256 = "{hashlib.sha256(data).hexdigest()}"', f"size = {len(data)}"]
    path = tmp_path / "m.toml"
    path.write_text("\n".join(body) + "\n")
    return path


def test_manifest_accepts_the_recorded_files(tmp_path):
    m = programs.load(write_manifest(tmp_path, {"a.py": b"print(1)\n", "b.py": b"print(2)\n"}))
    assert [p.name for p in programs.verify(m)] == ["a", "b"]
    assert m.programs[0].argv() == [str(tmp_path / "progs" / "a.py")]


def test_manifest_refuses_a_modified_file_naming_it(tmp_path):
    path = write_manifest(tmp_path, {"a.py": b"print(1)\n", "b.py": b"print(3)\n"},
                          record={"a.py": b"print(1)\n", "b.py": b"print(2)\n"})
    with pytest.raises(programs.ManifestError) as e:
        programs.verify(programs.load(path))
    msg = str(e.value)
    assert "b.py" in msg and "differs" in msg and "\n" not in msg


def test_manifest_refuses_a_same_size_edit(tmp_path):
    """Same size, one byte changed: the hash catches it, not the size."""
    path = write_manifest(tmp_path, {"a.py": b"print(9)\n"}, record={"a.py": b"print(1)\n"})
    with pytest.raises(programs.ManifestError, match="a.py: differs"):
        programs.verify(programs.load(path))


def test_manifest_refuses_when_a_required_module_is_missing(tmp_path):
    path = write_manifest(tmp_path, {"a.py": b"x\n"})
    path.write_text('requires = ["json", "no_such_module_jitlab"]\n' + path.read_text())
    with pytest.raises(programs.ManifestError, match="need no_such_module_jitlab .*pip install"):
        programs.verify(programs.load(path))


def test_manifest_missing_file_and_no_files(tmp_path):
    path = write_manifest(tmp_path, {"a.py": b"x\n"}, record={"a.py": b"x\n", "b.py": b"y\n"})
    with pytest.raises(programs.ManifestError, match="b.py: missing"):
        programs.verify(programs.load(path))
    (tmp_path / "progs" / "a.py").unlink()
    with pytest.raises(programs.ManifestError) as e:
        programs.verify(programs.load(path))
    assert "no program files" in str(e.value) and "git clone" in str(e.value)


def test_manifest_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("folder = \n")
    with pytest.raises(programs.ManifestError, match="not valid TOML"):
        programs.load(bad)
    bad.write_text('folder = "x"\n')
    with pytest.raises(programs.ManifestError, match="missing key 'program'"):
        programs.load(bad)
    with pytest.raises(programs.ManifestError, match="cannot read"):
        programs.load(tmp_path / "absent.toml")


def test_the_tutorial_manifest_is_complete():
    m = programs.load(MANIFEST)
    names = [p.name for p in m.programs]
    assert names == ["vector-add", "fused-softmax", "matmul", "layer-norm", "fused-attention"]
    assert all(len(p.sha256) == 64 and p.size > 0 and p.commit for p in m.programs)
    assert m.tag == "v3.6.0" and "git clone" in m.obtain
    assert {p.name for p in programs.select(m, None, quick=True)} == {"vector-add", "layer-norm"}
    with pytest.raises(programs.ManifestError, match="unknown program"):
        programs.select(m, "nope", quick=False)


def test_experiment_refuses_a_modified_tutorial_in_one_line(tmp_path):
    path = write_manifest(tmp_path, {"a.py": b"print(1)\n# edited\n"}, record={"a.py": b"print(1)\n"})
    p = subprocess.run([sys.executable, "-m", "experiments.any_program", "--manifest", str(path)], cwd=ROOT,
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "a.py: differs" in p.stderr, p.stderr


def test_experiment_without_tutorials_says_where_to_get_them(tmp_path):
    path = write_manifest(tmp_path, {}, record={"a.py": b"print(1)\n"})
    p = subprocess.run([sys.executable, "-m", "experiments.any_program", "--manifest", str(path)], cwd=ROOT,
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "git clone" in p.stderr, p.stderr


# -- the output rule -------------------------------------------------------------------------------------
RULE = programs.load(MANIFEST).rule
OUT = "tensor([1.0, 2.0])\nThe maximum difference between torch and triton is 0.0\n"
TABLE = "vector-add-performance:\n   size  Triton  Torch\n0  4096.0  {a}  {b}\n"


def test_rule_ignores_benchmark_numbers_but_not_results():
    a = OUT + TABLE.format(a="8.1", b="7.9")
    b = OUT + TABLE.format(a="9.3", b="7.2")
    c = compare(a, b, RULE)
    assert c.identical and c.compared == 2 and c.timing_lines == 3
    changed = a.replace("0.0\n", "1.1920928955078125e-07\n", 1)
    c = compare(a, changed, RULE)
    assert not c.identical and c.difference.startswith("line 2:")


def test_rule_counts_timing_lines_and_exit_status():
    a = OUT + TABLE.format(a="1", b="2")
    assert not compare(a, OUT + "vector-add-performance:\n", RULE).identical
    c = compare(OUT, OUT, RULE, stock_rc=0, jitlab_rc=1)
    assert not c.identical and "exit status" in c.difference
    assert not compare(OUT, OUT + "extra\n", RULE).identical


def test_rule_masks_pytest_timing():
    a, b = ".\n1 passed in 12.34s\n", ".\n1 passed in 3.01s\n"
    assert compare(a, b, RULE).identical
    assert RULE.split(a)[0][1] == "1 passed" + MASKED
    assert not compare(a, ".\n1 failed in 3.01s\n", RULE).identical


def test_rule_without_exclusions_is_bitwise():
    assert compare("a\n", "a\n", Rule()).identical
    assert not compare("a 1.0s\n", "a 2.0s\n", Rule()).identical


# -- the per-kernel table --------------------------------------------------------------------------------
def synthetic(side: str, level: str = "sampled", every: int = 10, cuda: bool = True) -> pd.DataFrame:
    rows = []

    def add(kernel, result, ns, reason=None):
        rows.append({"name": "jitlab.launch", "jitlab.kernel": kernel, "jitlab.cache.result": result,
                     "jitlab.fallback.reason": reason, "jitlab.arg_update.duration_ns": ns // 2,
                     "jitlab.launch.duration_ns": ns - ns // 2, "resource.jitlab.trace.level": level,
                     "resource.jitlab.trace.sample_every": every, "resource.jitlab.cuda.available": cuda})

    if side == "stock":
        for ns in (900_000_000, 20_000, 21_000, 22_000, 20_500):
            add("add_kernel", "passthrough", ns, "observe")
    else:
        add("add_kernel", "miss", 900_000_000)
        for ns in (5_000, 5_000):  # sampled: each stands for `every` hits
            add("add_kernel", "hit", ns)
        add("odd_kernel", "fallback", 30_000, "globals_changed")
    rows.append({"name": "jitlab.run"})
    return pd.DataFrame(rows)


def test_kernel_rows_weight_sampled_hits_and_compute_savings():
    s, j = kernel_table.launch_stats(synthetic("stock")), kernel_table.launch_stats(synthetic("jitlab"))
    rows = {r["kernel"]: r for r in kernel_table.rows("p", s, j, timings=True)}
    add = rows["add_kernel"]
    assert (add["stock_launches"], add["launches"], add["hits"], add["misses"]) == (5, 21, 20, 1)
    assert add["hit_rate"] == pytest.approx(20 / 21)
    assert add["stock_us"] == pytest.approx(21.0) and add["jitlab_us"] == pytest.approx(5.0)
    assert add["saved_ms"] == pytest.approx((21.0 - 5.0) * 21 / 1e3)
    odd = rows["odd_kernel"]
    assert odd["stock_launches"] == 0 and odd["fallbacks"] == 1 and "globals_changed" in odd["reasons"]
    assert odd["saved_ms"] is None  # no stock launches to compare with
    md = kernel_table.markdown(rows.values())
    assert "| p | add_kernel | 5 | 21 | 20 | 95.2% |" in md


def test_kernel_rows_full_level_counts_each_span_once():
    j = kernel_table.launch_stats(synthetic("jitlab", level="full", every=1))
    assert j["add_kernel"].outcomes["hit"] == 2


def test_no_timings_without_cuda():
    df = synthetic("jitlab", cuda=False)
    assert not kernel_table.has_timings(df) and kernel_table.has_timings(synthetic("jitlab"))
    rows = kernel_table.rows("p", {}, kernel_table.launch_stats(df), timings=False)
    assert all(r["jitlab_us"] is None and r["saved_ms"] is None for r in rows)
    assert "n/a" in kernel_table.markdown(rows)


def test_kernel_rows_from_a_cpu_made_trace(tmp_path):
    """A real trace (process tracing of a decorated program under the interpreter): pass-through counts."""
    trace = tmp_path / "t.jsonl"
    env = dict(os.environ, TRITON_INTERPRET="1", JITLAB_TRACE="full", JITLAB_TRACE_FILE=str(trace),
               PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, str(tiny_program(tmp_path, decorated=True))], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    from jitlab.telemetry import load_traces

    df = load_traces(str(trace))
    assert not kernel_table.has_timings(df)
    st = kernel_table.launch_stats(df)["add_kernel"]
    assert st.launches == 3 and st.outcomes.get("hit", 0) == 0
    assert sum(st.reasons.values()) == 3


# -- the pipeline, with a stand-in for `jitlab run` ------------------------------------------------------
def stand_in_argv(policy, trace, trace_file, program_argv):
    """What `jitlab run` would do for a program whose kernel is decorated already: trace the process."""
    code = ("import os, runpy, sys; "
            f"os.environ.update(JITLAB_TRACE={trace!r}, JITLAB_TRACE_FILE={str(trace_file)!r}); "
            "m = sys.argv[1] == '-m'; sys.argv = sys.argv[2:] if m else sys.argv[1:]; "
            "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True) if m else "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    return [sys.executable, "-c", code, *program_argv]


def test_pipeline_with_a_stand_in_for_jitlab_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(any_program, "jitlab_run_argv", stand_in_argv)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    prog = programs.script(tiny_program(tmp_path, decorated=True))
    cfg = any_program.Config((prog,), Rule(), trace="full", out=tmp_path / "traces", cuda=False,
                             label=any_program.CPU_LABEL, run_id="test-run")
    result = any_program.run(cfg)
    (row,) = result["programs"]
    assert row["identical"] and row["stock_same_as_plain"] and row["jitlab_rc"] == 0, row
    assert row["compared_lines"] == 2 and row["launches"] == 3
    (k,) = result["kernels"]
    assert k["kernel"] == "add_kernel" and k["stock_launches"] == 3 and k["jitlab_us"] is None
    printed = capsys.readouterr().out
    assert "add_kernel" in printed and "identical" in printed
    # The run's own trace: provenance and every row on the run span; `jitlab report` renders it.
    run_trace = tmp_path / "traces" / "any_program-test-run.jsonl"
    assert Path(result["trace_file"]) == run_trace
    from jitlab.bench import report
    from jitlab.telemetry import load_traces

    df = load_traces(str(run_trace))
    run_span = df[df["name"] == "jitlab.run"].iloc[0]
    assert json.loads(run_span["jitlab.results"])["kernels"][0]["kernel"] == "add_kernel"
    assert run_span["jitlab.provenance.gpu"] == "none"
    md = report.markdown(str(run_trace))
    assert "CPU demo" in md and "| tiny_decorated | identical |" in md and "add_kernel" in md


def test_a_differing_program_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(any_program, "jitlab_run_argv", stand_in_argv)
    prog_file = tmp_path / "clock.py"
    prog_file.write_text("import time\nprint(time.perf_counter_ns())\n")
    cfg = any_program.Config((programs.script(prog_file),), Rule(), out=tmp_path / "t", cuda=False, run_id="d")
    (row,) = any_program.run(cfg)["programs"]
    assert not row["identical"] and row["difference"].startswith("line 1:")


def test_a_pytest_program_compares_equal_despite_its_timing(tmp_path, monkeypatch):
    """run = "pytest" (how 06-fused-attention.py runs): pytest's "passed in X s" is masked by the rule."""
    monkeypatch.setattr(any_program, "jitlab_run_argv", stand_in_argv)
    test_file = tmp_path / "check_me.py"
    test_file.write_text("import time\n\ndef test_it():\n    time.sleep(0.01)\n    assert 1 + 1 == 2\n")
    prog = programs.Program(name="check_me", file=test_file, run="pytest")
    (row,) = any_program.run(any_program.Config((prog,), RULE, out=tmp_path / "t", cuda=False, run_id="p"))["programs"]
    assert row["identical"] and row["jitlab_rc"] == 0 and row["compared_lines"] >= 2, row


# -- the real `jitlab run`, end to end ----------------------------------------------------------------------
@pytest.mark.skipif(any_program.jitlab_run_missing() is not None,
                    reason=f"{any_program.jitlab_run_missing()}; the coordinator re-runs this after the merge")
def test_end_to_end_under_the_interpreter(tmp_path):
    """A plain (undecorated) program through the experiment's command line: `jitlab run` wraps its
    kernel; under TRITON_INTERPRET=1 every launch passes through, and the output is identical."""
    prog = tiny_program(tmp_path, decorated=False)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "experiments.any_program", "--out", str(tmp_path / "traces"),
                        "--trace", "full", str(prog)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "identical" in p.stdout and "add_kernel" in p.stdout
    (run_trace,) = (tmp_path / "traces").glob("any_program-*.jsonl")
    from jitlab.telemetry import load_traces

    df = load_traces(str(run_trace))
    results = json.loads(df[df["name"] == "jitlab.run"].iloc[0]["jitlab.results"])
    (k,) = [r for r in results["kernels"] if r["kernel"].endswith("add_kernel")]
    assert k["launches"] == 3 and k["stock_launches"] == 3 and k["hits"] == 0 and k["jitlab_us"] is None


def test_provenance_names_the_host_cpu():
    from jitlab.provenance import provenance

    p = provenance()
    assert p["cpu"] not in (None, "", "unknown") and p["cpu_count"] >= 1


def test_extract_from_a_clone_at_the_recorded_commit(tmp_path):
    """--extract-from copies each file out of a clone at its recorded commit (not the clone's HEAD)."""
    import hashlib

    repo = tmp_path / "upstream"
    (repo / "tut").mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "tut" / "a.py").write_bytes(b"print('v1')\n")
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "v1"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (repo / "tut" / "a.py").write_bytes(b"print('v2, later')\n")
    subprocess.run(git + ["commit", "-qam", "v2"], check=True)
    data = b"print('v1')\n"
    manifest = tmp_path / "m.toml"
    manifest.write_text("\n".join([
        'folder = "progs"', 'repository = "r"', 'tag = "t"', 'obtain = "o"', "[[program]]", 'name = "a"',
        'file = "a.py"', 'path = "tut/a.py"', f'commit = "{commit}"',
        f'sha256 = "{hashlib.sha256(data).hexdigest()}"', f"size = {len(data)}"]) + "\n")
    m = programs.load(manifest)
    assert programs.extract(m, repo) == [tmp_path / "progs" / "a.py"]
    assert (tmp_path / "progs" / "a.py").read_bytes() == data
    with pytest.raises(programs.ManifestError, match="cannot extract"):
        programs.extract(m, tmp_path)  # not a clone


def test_tutorial_set_needs_a_gpu_one_line(tmp_path):
    """The tutorials present and verified, but no GPU (forced: TRITON_INTERPRET=1): one line, exit 2."""
    path = write_manifest(tmp_path, {"a.py": b"print(1)\n"})
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRITON_INTERPRET="1")
    p = subprocess.run([sys.executable, "-m", "experiments.any_program", "--manifest", str(path)], cwd=ROOT,
                       capture_output=True, text=True, env=env)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "CUDA GPU" in p.stderr, p.stderr
