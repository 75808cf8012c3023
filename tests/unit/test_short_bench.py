"""jitlab.bench.short_bench: an unmodified program's triton.testing benchmarks cut by an argument
(issue 20), and how the any-program manifest applies the cut (`[cut]`, `--full`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jitlab.bench import any_program, programs, short_bench
from jitlab.bench.short_bench import Cut

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "experiments" / "programs" / "triton_tutorials.toml"

# A tutorial-shaped program: a correctness line, then a module-level perf_report over 6 x values
# timed with do_bench (one call passes rep=500, as 05-layer-norm does), then a line after.
BENCH_SRC = """
import sys
import triton
import triton.testing
print("max diff 0.0", sys.argv[1:])
@triton.testing.perf_report([triton.testing.Benchmark(
    x_names=["size"], x_vals=[1, 2, 3, 4, 5, 6], line_arg="provider", line_vals=["a", "b"],
    line_names=["A", "B"], ylabel="ms", plot_name="bench-%d" % n, args={{}}) for n in (1, 2)])
def bench(size, provider):
    {body}
bench.run(print_data=True)
print("done")
"""


def bench_program(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "prog.py"
    p.write_text(BENCH_SRC.format(body=body))
    return p


@pytest.fixture
def fake_do_bench(monkeypatch):
    """do_bench needs a GPU: a recorder stands in for the original that short_bench wraps."""
    import triton.testing as tt

    calls = []

    def do_bench(fn, warmup=25, rep=100, grad_to_none=None, quantiles=None, return_mode="mean"):
        calls.append((warmup, rep))
        return 1.0

    monkeypatch.setattr(tt, "do_bench", do_bench)
    monkeypatch.setattr(tt, "perf_report", tt.perf_report)  # restored after the test
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    return calls


def test_only_the_first_points_run_and_do_bench_is_capped(tmp_path, fake_do_bench, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    prog = bench_program(tmp_path, "import triton.testing as t\n    SEEN.append(size)\n"
                                   "    return t.do_bench(lambda: None) if size % 2 else t.do_bench(lambda: None, rep=500)")
    prog.write_text("SEEN = []\n" + prog.read_text() + "print('seen', SEEN)\n")
    short_bench.run_program(Cut(points=2, rep_ms=10, warmup_ms=5), str(prog), ["--x", "1"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "max diff 0.0 ['--x', '1']"  # the correctness line, with the program's own argv
    assert out[-1] == "seen [1, 1, 2, 2, 1, 1, 2, 2]"  # 2 benchmarks x 2 points x 2 providers
    assert "bench-1:" in out and "bench-2:" in out and "done" in out
    assert fake_do_bench == [(5, 10)] * 8  # defaults lowered, and the explicit rep=500 capped
    assert sys.path[0] == str(tmp_path)


def test_install_undoes(fake_do_bench):
    import triton.testing as tt

    before = (tt.perf_report, tt.do_bench)
    undo = short_bench.install(Cut(1, 1, 1))
    assert tt.do_bench is not before[1] and tt.perf_report is not before[0]
    undo()
    assert (tt.perf_report, tt.do_bench) == before


def test_command_line_under_the_interpreter(tmp_path):
    """The module as the experiment starts it, in a fresh process; the benchmark function times nothing
    (do_bench needs a GPU), so only the cut of x values shows."""
    prog = bench_program(tmp_path, "return float(size)")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    cmd = [sys.executable, *short_bench.MODULE, *Cut(points=3).argv(), str(prog), "a"]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "max diff 0.0 ['a']" and lines[-1] == "done"
    table = lines[lines.index("bench-1:") + 1:lines.index("bench-2:")]
    assert len(table) == 1 + 3, table  # header + the first 3 of 6 x values
    whole = subprocess.run([sys.executable, str(prog), "a"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert whole.returncode == 0 and whole.stdout.count("\n") == p.stdout.count("\n") + 2 * 3, whole.stderr


def test_bad_cut_is_one_line(tmp_path):
    prog = bench_program(tmp_path, "return 1.0")
    p = subprocess.run([sys.executable, *short_bench.MODULE, "--points", "0", str(prog)], cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "points must be >= 1" in p.stderr


# -- the manifest's [cut] ---------------------------------------------------------------------------------
def test_tutorials_run_cut_by_default_and_whole_with_full():
    m = programs.load(MANIFEST)
    assert m.cut == Cut(points=2, rep_ms=10, warmup_ms=5)
    cut = programs.with_cut(m, m.programs, full=False)
    add = cut[0]
    assert add.argv()[:2] == list(short_bench.MODULE) and "--points" in add.argv() and add.argv()[-1] == str(add.file)
    assert "first 2 x values" in add.cut_description()
    # 06's test_op (96 cases at v3.6.0) cut to its one case (1, 2, 1024, 64) causal, fp16 forward+backward
    attention = [p for p in cut if p.run == "pytest"][0]
    one_case = ["-k", "triton-fp16-bwd-False-True-64-1024-2-1"]
    assert attention.argv()[:2] == ["-m", "pytest"] and attention.argv()[-3:] == [str(attention.file), *one_case]
    assert attention.cut_description() == "extra arguments -k triton-fp16-bwd-False-True-64-1024-2-1"
    whole = programs.with_cut(m, m.programs, full=True)
    assert all(p.argv()[-1 - len(p.args)] == str(p.file) and p.cut_description() == "" for p in whole)
    assert all("short_bench" not in " ".join(p.argv()) for p in whole)


# Collection only: 06 asks Triton's active driver for the device at import and the test's parametrization
# reads the compute capability; this stands in for a CUDA device of capability FAKE_CC (no kernel runs).
FAKE_GPU = """
import os, torch, triton
from triton.backends.compiler import GPUTarget
major, minor = (int(x) for x in os.environ["FAKE_CC"].split(","))
class FakeDriver:
    def get_active_torch_device(self):
        return torch.device("cpu")
    def get_current_target(self):
        return GPUTarget("cuda", major * 10 + minor, 32)
triton.runtime.driver.set_active(FakeDriver())
torch.cuda.get_device_capability = lambda *a, **k: (major, minor)
"""


@pytest.mark.parametrize("cc, ids", [("9,0", 96), ("10,0", 192)])  # Hopper; Blackwell (x2 warp_specialize)
def test_fused_attention_cut_args_select_one_case_of_the_file(tmp_path, cc, ids):
    """The manifest's cut_args against the unmodified 06-fused-attention.py (git-ignored: skipped when
    absent or not the manifest's file): pytest collects exactly the one intended test_op case, as the
    experiment starts it (its PYTEST_ARGS, in a scratch directory)."""
    m = programs.load(MANIFEST)
    attention = programs.with_cut(m, tuple(p for p in m.programs if p.run == "pytest"), full=False)[0]
    try:
        programs.verify(m, (attention,))
    except programs.ManifestError as e:
        pytest.skip(f"06-fused-attention.py not in place: {e}")
    (tmp_path / "fake_gpu.py").write_text(FAKE_GPU)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), FAKE_CC=cc)
    argv = [sys.executable, *attention.argv()]
    argv[argv.index(str(attention.file)):argv.index(str(attention.file))] = ["--collect-only", "-p", "fake_gpu"]
    p = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    selected = [ln.rsplit("::", 1)[1] for ln in p.stdout.splitlines() if "::test_op[" in ln]
    assert selected == ["test_op[triton-fp16-bwd-False-True-64-1024-2-1]"], p.stdout
    assert f"1/{ids} tests collected ({ids - 1} deselected)" in p.stdout, p.stdout

def test_cut_args_apply_only_when_cut(tmp_path):
    f = tmp_path / "t.py"
    f.write_text("")
    pr = programs.Program(name="t", file=f, run="pytest", args=("-x",), cut_args=("-k", "small"))
    assert pr.argv()[-2:] == [str(f), "-x"]
    cut = programs.Program(name="t", file=f, run="pytest", args=("-x",), cut_args=("-k", "small"), cut=Cut())
    assert cut.argv()[-4:] == [str(f), "-x", "-k", "small"] and cut.cut_description() == "extra arguments -k small"


@pytest.mark.parametrize("table, error", [("points = 0", "points must be >= 1"), ("pointz = 2", "valid: points"),
                                          ("rep_ms = 'x'", "[cut]")])
def test_bad_cut_table_is_one_line(tmp_path, table, error):
    path = tmp_path / "m.toml"
    path.write_text('folder = "p"\nrepository = "r"\ntag = "t"\nobtain = "o"\n[cut]\n' + table +
                    '\n[[program]]\nname = "a"\nfile = "a.py"\nsha256 = "0"\nsize = 1\n')
    with pytest.raises(programs.ManifestError, match=error.replace("[", r"\[")) as e:
        programs.load(path)
    assert "\n" not in str(e.value)


def test_the_cut_reaches_the_table_line():
    rows = [{"program": "a", "cut": Cut().describe()}, {"program": "b", "cut": ""}]
    line = any_program.cuts_line(rows)
    assert line.startswith("a: triton.testing benchmarks cut to their first 2 x values") and "b: run whole." in line
    assert any_program.cuts_line([{"program": "a", "cut": ""}]) == "benchmarks run whole (not cut)."
