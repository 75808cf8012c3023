"""The core install is lean: `pip install jitlab` brings only what `import jitlab; jitlab.jitcache` needs,
and everything else is an extra ([trace], [lab], [notebooks], [vllm]; [dev] = all of them + test tools)."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from .conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# What the jitcache core may import outside the standard library: Triton, and torch from the user's setup.
CORE_THIRD_PARTY = {"triton", "torch"}
# Modules of the extras, never imported on the way to a jitcache launch.
EXTRA_MODULES = ("opentelemetry", "google.protobuf", "pandas", "grpc", "rich", "requests", "matplotlib",
                 "jupytext", "nbclient")


def names(reqs: list[str]) -> set[str]:
    return {Requirement(r).name for r in reqs}


def test_core_dependencies_are_only_what_the_decorator_needs():
    assert names(PROJECT["dependencies"]) == {"triton"}


def test_extras_hold_the_rest_and_dev_holds_them_all():
    extras = PROJECT["optional-dependencies"]
    assert {"opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-grpc", "protobuf", "grpcio",
            "requests"} <= names(extras["trace"])
    assert {"jitlab", "rich", "pandas", "numpy"} <= names(extras["lab"])
    assert Requirement(next(r for r in extras["lab"] if r.startswith("jitlab"))).extras == {"trace"}
    assert {"jupyterlab", "jupytext", "matplotlib", "nbclient", "ipykernel"} <= names(extras["notebooks"])
    assert "vllm" in names(extras["vllm"])
    dev = {Requirement(r).name: Requirement(r) for r in extras["dev"]}
    # all but [vllm], which would install vLLM itself (its CPU tests use its wheel's kernel files)
    assert dev["jitlab"].extras == {"trace", "lab", "notebooks"} and "vllm" not in dev
    assert str(dev["torch"].specifier) == "==2.13.0" and str(dev["triton"].specifier) == "==3.6.0"
    assert {"pytest", "rotel"} <= set(dev)


def _module_file(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for p in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if p.exists():
            return p
    return None


def _imports(path: Path, module: str, module_level_only: bool = False) -> set[str]:
    """Every module `path` imports, anywhere in it (lazy imports in functions too), as absolute names;
    `module_level_only`: only what importing it runs (not the bodies of its functions and classes)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if not module_level_only else (
        n for stmt in tree.body if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        for n in ast.walk(stmt))
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")}
    return out


def _import_walk(roots: list[str], follow) -> set[str]:
    """The jitlab modules reachable by import from `roots` (lazy imports in functions too); `follow(module,
    imp)` sees every import and says whether to walk into it. jitlab.telemetry (the package) runs when the
    core imports its recorder: what it imports at module level counts; the process session it registers
    with the recorder is started (its function body runs) only after the recorder checked the [trace]
    extra, so that is telemetry's own import."""
    seen, todo = set(), list(roots)
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        for imp in _imports(path, module, module_level_only=module == "jitlab.telemetry"):
            if follow(module, imp):
                todo.append(imp)
    return seen


def test_the_core_imports_only_triton_and_torch():
    """Everything reachable by import from the decorator and the cache (lazy imports included) uses
    the standard library, jitlab, Triton and torch: nothing an extra brings."""
    third_party: dict[str, list[str]] = {}

    def follow(module: str, imp: str) -> bool:
        top = imp.split(".")[0]
        if top != "jitlab" and top not in sys.stdlib_module_names:
            third_party.setdefault(top, []).append(module)
        return top == "jitlab"

    seen = _import_walk(["jitlab", "jitlab.decorator", "jitlab.cache"], follow)
    assert "jitlab.telemetry.recorder" in seen and "jitlab._triton.adapter" in seen  # the walk got there
    extra = {k: v for k, v in third_party.items() if k not in CORE_THIRD_PARTY}
    assert not extra, f"the core imports modules of the extras: {extra}"


def test_import_and_decorate_with_the_extras_missing(tmp_path):
    """A fresh interpreter in which every module of the extras fails to import: jitlab imports, and
    jitcache decorates and launches a kernel (in pass-through under the interpreter, CPU tensors)."""
    code = textwrap.dedent(f"""
        import sys
        from importlib.abc import MetaPathFinder

        BLOCKED, tried = {EXTRA_MODULES!r}, []

        class Block(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    tried.append(name)
                    raise ImportError(f"blocked for the test: {{name}}")
                return None

        sys.meta_path.insert(0, Block())
        import torch, triton, triton.language as tl
        import jitlab, jitlab.decorator, jitlab.cache
        from jitlab import jitcache

        @jitcache
        @triton.jit
        def add_one(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
            offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) + 1, mask=offs < n)

        x = torch.arange(8, dtype=torch.float32)
        out = torch.zeros_like(x)
        add_one[(1,)](x, out, 8, BLOCK=8)
        assert torch.equal(out, x + 1), out
        assert not tried, f"tried to import {{tried}}"
        print("ok", type(add_one).__name__)
    """)
    env = subprocess_env(TRITON_INTERPRET="1")
    env.pop("JITLAB_TRACE", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout + r.stderr


def _closure(extra: str) -> set[str]:
    """The distributions an extra of jitlab asks for, jitlab[...] self-references followed (the core's
    dependencies included), without the dependencies of those distributions."""
    extras, seen, out, todo = PROJECT["optional-dependencies"], set(), names(PROJECT["dependencies"]), [extra]
    while todo:
        e = todo.pop()
        if e in seen:
            continue
        seen.add(e)
        for r in map(Requirement, extras[e]):
            if r.name == "jitlab":
                todo += sorted(r.extras)
            else:
                out.add(r.name)
    return out


def test_the_vllm_extra_needs_only_the_core():
    """`pip install -e ".[vllm]"` brings vLLM and the core: no OpenTelemetry, pandas or rich (the plugin
    reads its TOML policies with jitlab.policy), and its modules import nothing of the lab or telemetry."""
    assert _closure("vllm") == {"triton", "vllm"}
    assert {"opentelemetry-sdk", "pandas", "rich"} <= _closure("lab")  # the walk sees what [lab] brings
    outside: list[str] = []

    def follow(module: str, imp: str) -> bool:
        if imp.startswith(("jitlab.bench", "jitlab.kernels", "jitlab.telemetry.")) \
                and not imp.startswith("jitlab.telemetry.recorder"):
            outside.append(f"{module} imports {imp}")
            return False
        return imp.split(".")[0] == "jitlab"

    seen = _import_walk(["jitlab.vllm", "jitlab.vllm.plugin", "jitlab.vllm.policies", "jitlab.vllm.probe"], follow)
    assert "jitlab.policy" in seen
    assert not outside, outside
