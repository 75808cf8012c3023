"""The notebooks (notebooks/*.py, jupytext py:percent): executed headless, linted, kept out of git.

* On the committed traces: each notebook is converted to ipynb (jupytext) in a temporary folder and
  executed by nbclient (kernel python3, cwd = the repository root) with its trace parameters set to
  the newest committed `traces/<experiment>-*.jsonl`. A notebook whose trace is not committed is
  skipped, saying which file is missing.
* On SYNTHETIC traces written by tests/unit/notebook_traces.py through the experiments' own span
  code (labelled as synthetic; never committed): every code path, whether or not real traces exist.
* Lint: no notebook (nor _common.py) imports Triton, torch or the jitcache core; at the end of each
  execution the kernel has not loaded them either.
* No .ipynb is tracked by git (outputs never go into git); .gitignore keeps it so.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NB_DIR = REPO / "notebooks"
TRACES = REPO / "traces"
# notebook -> {parameter: experiment whose trace it reads}
NOTEBOOKS = {
    "launch_overhead": {"trace": "launch_overhead"},
    "e2e_throughput": {"trace": "e2e_decode"},
    "launch_vs_throughput": {"launch_trace": "launch_overhead", "e2e_trace": "e2e_decode"},
    "vllm_kernels": {"trace": "vllm_kernels"},
}
FORBIDDEN = ("triton", "torch", "jitlab.cache", "jitlab.bench", "jitlab._triton", "jitlab.decorator",
             "jitlab.kernels")
# what must not be loaded in the kernel after a run (`import jitlab.telemetry.load` runs jitlab/__init__,
# which loads the Triton-free decorator module, so that one is allowed at run time)
NOT_LOADED = ("triton", "torch", "jitlab.cache", "jitlab.bench", "jitlab._triton", "jitlab.kernels")
# The workload registry (jitlab.kernels' names and functions: data, no Triton, no torch) may be read;
# no kernel module is loaded for it.
REGISTRY = ("jitlab.kernels.WORKLOADS", "jitlab.kernels.launch_sweep", "jitlab.kernels.decode_workloads")
REGISTRY_MODULES = ("jitlab.kernels", "jitlab.kernels.case")
ALLOWED_JITLAB = ("jitlab.telemetry", "jitlab.telemetry.load") + REGISTRY

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")


def _committed(experiment: str) -> Path | None:
    """Newest traces/<experiment>-*.jsonl that git tracks (any such file when not in a git checkout)."""
    pattern = f"{experiment}-*.jsonl"
    try:
        out = subprocess.run(["git", "ls-files", "--", f"traces/{pattern}"], cwd=REPO, capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()
        files = [REPO / f for f in out if (REPO / f).parent == TRACES and (REPO / f).is_file()]
    except (OSError, subprocess.SubprocessError):
        files = list(TRACES.glob(pattern))
    return max(files, key=lambda p: p.name) if files else None


def _execute(name: str, params: dict, out_dir: Path):
    """notebooks/<name>.py -> ipynb (in out_dir), parameters injected after the parameters cell (as
    papermill does), executed by nbclient with cwd = repository root. Returns the executed notebook."""
    nb = jupytext.read(NB_DIR / f"{name}.py")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    idx = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(idx) == 1, f"{name}: expected one cell tagged 'parameters', found {len(idx)}"
    src = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(idx[0] + 1, nbformat.v4.new_code_cell(src, metadata={"tags": ["injected-parameters"]}))
    nb.cells.append(nbformat.v4.new_code_cell(
        "import sys as _sys\n"
        f"_bad = sorted(m for m in _sys.modules if m not in {REGISTRY_MODULES!r} and "
        f"any(m == f or m.startswith(f + '.') for f in {NOT_LOADED!r}))\n"
        "assert not _bad, f'the notebook loaded {_bad}'"))
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, out_dir / f"{name}.ipynb")  # left in the tmp folder for a look after a failure
    return nb


def _images(nb) -> int:
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if "image/png" in o.get("data", {}))


def _text(nb) -> str:
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else ():
            d = o.get("data", {})
            parts.append(d.get("text/markdown", "") + d.get("text/plain", "") + o.get("text", ""))
    return "\n".join(parts)


# ------------------------------------------------------------------------------ committed traces


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_runs_on_committed_traces(name, tmp_path):
    params, missing = {}, []
    for param, experiment in NOTEBOOKS[name].items():
        p = _committed(experiment)
        if p is None:
            missing.append(f"traces/{experiment}-*.jsonl")
        else:
            params[param] = str(p.relative_to(REPO))
    if missing:
        pytest.skip(f"{name}: no committed {', '.join(missing)} (run the experiment on a GPU machine and commit "
                    f"its trace)")
    nb = _execute(name, params, tmp_path)
    assert _images(nb) >= 2, f"{name} rendered {_images(nb)} figures"


# ------------------------------------------------------------------------------ synthetic traces


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from . import notebook_traces

    d = tmp_path_factory.mktemp("synthetic-traces")
    return {"launch_overhead": notebook_traces.launch_overhead_trace(d / "launch_overhead-20990101T000000Z-000000.jsonl"),
            "e2e_decode": notebook_traces.e2e_trace(d / "e2e_decode-20990101T000000Z-000000.jsonl"),
            "vllm_kernels": notebook_traces.vllm_kernels_trace(d / "vllm_kernels-20990101T000000Z-000000.jsonl"),
            "label": notebook_traces.LABEL}


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_runs_on_synthetic_traces(name, synthetic, tmp_path):
    params = {param: str(synthetic[exp]) for param, exp in NOTEBOOKS[name].items()}
    png = tmp_path / "img" / "key.png"
    if name == "launch_overhead":
        params.update(save_figure=True, figure_path=str(png))
    nb = _execute(name, params, tmp_path)
    text = _text(nb)
    assert "SYNTHETIC TEST DATA" in text, "the notebook does not show the run's label"
    assert _images(nb) >= 3, f"{name} rendered {_images(nb)} figures"
    if name == "launch_overhead":
        assert png.is_file() and png.stat().st_size > 10_000, "save_figure=True wrote no key figure"
        for what in ("What it risks", "check_specialization", "LockedMiss", "What it buys", "Tracing cost",
                     "First launch", "hits / misses / locked misses"):
            assert what in text, what
    if name == "e2e_throughput":
        assert "closes" in text and "crossover per (layers, context)" in text
    if name == "launch_vs_throughput":
        assert "It matters" in text and "It does not" in text and "In short" in text
    if name == "vllm_kernels":
        assert "Matrix check: PASSED" in text and "all 2 policies bitwise equal" in text
        for what in ("stock Triton", "compiled_run", "C floor", "GPU µs/launch", "reduce_segments",
                     "reshape_and_cache_kernel_flash", "decode n=17 2d", "Per layer"):
            assert what in text, what


# ----------------------------------------------------------------------------------------- lint


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "__import__", "import_module"):
            out.append((node.lineno, "<dynamic import>"))
    return out


def _nb_sources() -> list[Path]:
    return sorted(NB_DIR.glob("*.py"))


def test_notebooks_exist():
    names = {p.stem for p in _nb_sources()}
    assert set(NOTEBOOKS) <= names, f"missing notebooks: {set(NOTEBOOKS) - names}"


@pytest.mark.parametrize("path", _nb_sources(), ids=lambda p: p.name)
def test_notebooks_never_import_gpu_code(path):
    bad = []
    for line, mod in _imports(path):
        if mod == "<dynamic import>":
            bad.append((line, mod))
        elif mod == "jitlab.kernels" or mod in REGISTRY:  # `from jitlab.kernels import <registry name>`
            continue
        elif any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN):
            bad.append((line, mod))
        elif (mod == "jitlab" or mod.startswith("jitlab.")) and not any(
                mod == a or mod.startswith(a + ".") for a in ALLOWED_JITLAB):
            bad.append((line, mod))
    assert not bad, f"{path.name} imports {bad}: notebooks read traces only (jitlab.telemetry.load, pandas, " \
                    f"numpy, matplotlib)"


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_structure(name):
    nb = jupytext.read(NB_DIR / f"{name}.py")
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "What it shows" in first.source and "Reads" in first.source
    assert "traces/" in first.source
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for param, experiment in NOTEBOOKS[name].items():
        assert f'{param} = C.newest_trace("{experiment}")' in params[0].source
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_newest_trace_ignores_subfolders(tmp_path):
    sys.path.insert(0, str(NB_DIR))
    import _common

    (tmp_path / "_dev").mkdir()
    (tmp_path / "_dev" / "launch_overhead-20991231T000000Z-ffffff.jsonl").write_text("")
    (tmp_path / "launch_overhead-20261129T095418Z-b5d1f9.jsonl").write_text("")
    (tmp_path / "launch_overhead-20261130T000000Z-000001.jsonl").write_text("")
    assert Path(_common.newest_trace("launch_overhead", tmp_path)).name == "launch_overhead-20261130T000000Z-000001.jsonl"
    assert _common.newest_trace("e2e_decode", tmp_path) is None
    with pytest.raises(FileNotFoundError, match="e2e_decode"):
        _common.require(None, "e2e_decode")


# ---------------------------------------------------------------------------------------- git


def test_no_notebook_outputs_in_git():
    assert "*.ipynb" in (REPO / ".gitignore").read_text().split(), ".gitignore must keep *.ipynb out of git"
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "--", "*.ipynb"], cwd=REPO, capture_output=True, text=True,
                             timeout=30).stdout.split()
    assert not tracked, f".ipynb files are tracked (outputs must not go into git; keep the jupytext .py): {tracked}"


def test_launch_overhead_notebook_on_a_trace_of_a_users_own_program(tmp_path):
    """A user's own trace (launch spans, no trials) ends the notebook with one clear note pointing to the
    tools for it, exit status 0, no traceback (it crashed in matplotlib: 'Number of columns must be a
    positive integer, not 0')."""
    from jitlab import telemetry

    trace = tmp_path / "mine.jsonl"
    with telemetry.Run("my_program", level="full", trace_file=trace, otlp=False) as run:
        run.recorder.record("my_kernel", "global", "safe", 1, 0, 1_000, 2_000, 3_000, compile_ns=500)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("JITLAB_")}
    r = subprocess.run([sys.executable, str(NB_DIR / "launch_overhead.py"), f"trace={trace}"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "holds no timed launch-overhead trials" in r.stdout and "jitlab.bench.report" in r.stdout
    assert "Traceback" not in r.stderr


def test_a_labelled_run_without_pairs_does_not_claim_to_predate_them(synthetic, tmp_path):
    nb = _execute("launch_overhead", {"trace": str(synthetic["launch_overhead"])}, tmp_path)
    text = _text(nb)
    assert "predates" not in text
