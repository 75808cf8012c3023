"""The import rules of docs/ARCHITECTURE.md, checked by parsing the source (every import, lazy ones in
functions included). A violation is reported as file:line and the rule it breaks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The rooms, by path: the core is every module directly in jitlab/ (decorator, cache, codegen, keys, policy,
# scope, settings, errors, ...) plus the hot path's recorder, the one telemetry module the core imports.
RECORDER = "jitlab/telemetry/recorder.py"
TRITON_INTERNALS = ("triton.runtime", "triton.compiler", "triton._C", "triton.backends", "triton.knobs")
LAB_AND_TRACE = ("opentelemetry", "google.protobuf", "grpc", "requests", "pandas", "rich", "numpy", "matplotlib")
# jitlab modules each room may import (prefix match); everything else under jitlab is off limits to it.
MAY_IMPORT = {
    "core": ("jitlab._triton", "jitlab.telemetry.recorder"),  # and every core module (see violations)
    "_triton": ("jitlab._triton", "jitlab._cbuild", "jitlab.record_layout"),
    "telemetry": ("jitlab.telemetry", "jitlab.settings", "jitlab.provenance", "jitlab._cbuild", "jitlab.record_layout"),
    "kernels": ("jitlab.kernels",),
    "notebooks": ("jitlab.telemetry",),
}

# Known violations, (file, rule), each to be removed, never added to (the core rewrite of issue 15 emptied it).
KNOWN: set[tuple[str, str]] = set()


def room(rel: str) -> str | None:
    if rel == RECORDER or (rel.startswith("jitlab/") and rel.count("/") == 1):
        return "core"
    for name in ("_triton", "telemetry", "kernels", "bench"):
        if rel.startswith(f"jitlab/{name}/"):
            return name
    if rel.startswith("notebooks/"):
        return "notebooks"
    return None


def sources() -> dict[str, str]:
    """rel path -> source of every Python file of the rooms."""
    return {str(p.relative_to(ROOT)): p.read_text() for d in ("jitlab", "notebooks")
            for p in sorted((ROOT / d).rglob("*.py"))}


def imports(src: str, rel: str) -> list[tuple[int, str]]:
    """(line, absolute name) of every import in `src` (file `rel`); `from a import b` yields a.b (a module
    or an attribute of a: either way it lies under a, and importing a package's submodule is not
    counted as importing the package's other modules)."""
    parts = Path(rel).with_suffix("").parts
    package = list(parts if parts[-1] == "__init__" else parts[:-1])
    package = package[:-1] if package and package[-1] == "__init__" else package
    out = []
    for node in ast.walk(ast.parse(src, rel)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _in_core(name: str) -> bool:
    """jitlab.keys, jitlab.scope.current: a module directly in jitlab/, or one of its attributes."""
    parts = name.split(".")
    return len(parts) > 1 and parts[0] == "jitlab" and (ROOT / "jitlab" / f"{parts[1]}.py").exists()


def violations(files: dict[str, str]) -> list[tuple[str, int, str]]:
    """(file, line, rule broken) for every import that breaks a rule."""
    out = []
    for rel, src in files.items():
        r = room(rel)
        for line, mod in imports(src, rel):
            if r != "_triton" and _under(mod, TRITON_INTERNALS):
                out.append((rel, line, f"Triton internals outside jitlab/_triton: {mod}"))
            if r == "core" and _under(mod, ("triton",)):
                out.append((rel, line, f"the core imports Triton directly (use jitlab._triton): {mod}"))
            if r == "core" and _under(mod, LAB_AND_TRACE):
                out.append((rel, line, f"the core imports an extra's module: {mod}"))
            allowed = r not in MAY_IMPORT or _under(mod, MAY_IMPORT[r]) or (r == "core" and _in_core(mod))
            if mod.startswith("jitlab.") and not allowed:
                out.append((rel, line, f"{r} imports {mod}"))
    return sorted(set(out))


def prints(files: dict[str, str]) -> list[tuple[str, int]]:
    """print() calls in jitlab/ outside jitlab/bench/ and outside a CLI's main()."""
    out = []

    def walk(rel: str, node: ast.AST, in_main: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "print" \
                    and not in_main:
                out.append((rel, child.lineno))
            is_main = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and child.name == "main"
            walk(rel, child, in_main or is_main)

    for rel, src in files.items():
        if rel.startswith("jitlab/") and not rel.startswith("jitlab/bench/"):
            walk(rel, ast.parse(src, rel), False)
    return out


def test_import_rules():
    found = violations(sources())
    new = [f"{f}:{line}: {rule}" for f, line, rule in found if (f, rule) not in KNOWN]
    assert not new, "import rules of docs/ARCHITECTURE.md broken:\n" + "\n".join(new)
    stale = KNOWN - {(f, rule) for f, _, rule in found}
    assert not stale, f"no longer broken, remove from KNOWN: {sorted(stale)}"


def test_no_prints_in_the_library():
    found = prints(sources())
    assert not found, "print() in the library (use logging; CLIs print in main()):\n" + "\n".join(
        f"{f}:{line}" for f, line in found)


@pytest.mark.parametrize("rel, src, expected", [
    ("jitlab/codegen.py", "def f():\n    from triton.runtime.jit import JITFunction\n",
     "jitlab/codegen.py:2: Triton internals outside jitlab/_triton: triton.runtime.jit.JITFunction"),
    ("jitlab/bench/x.py", "from triton import knobs\n", "jitlab/bench/x.py:1: Triton internals outside jitlab/_triton: triton.knobs"),
    ("jitlab/cache.py", "import triton\n", "jitlab/cache.py:1: the core imports Triton directly (use jitlab._triton): triton"),
    ("jitlab/cache.py", "import rich.console\n", "jitlab/cache.py:1: the core imports an extra's module: rich.console"),
    ("jitlab/cache.py", "from .bench import runner\n", "jitlab/cache.py:1: core imports jitlab.bench.runner"),
    ("jitlab/_triton/x.py", "\nfrom ..policy import Policy\n", "jitlab/_triton/x.py:2: _triton imports jitlab.policy.Policy"),
    ("jitlab/telemetry/x.py", "from ..cache import JitCache\n", "jitlab/telemetry/x.py:1: telemetry imports jitlab.cache.JitCache"),
    ("jitlab/kernels/x.py", "from jitlab import jitcache\n", "jitlab/kernels/x.py:1: kernels imports jitlab.jitcache"),
    ("notebooks/x.py", "import jitlab.cache\n", "notebooks/x.py:1: notebooks imports jitlab.cache"),
])
def test_each_rule_fires(rel, src, expected):
    assert expected in [f"{f}:{line}: {rule}" for f, line, rule in violations({rel: src})]


def test_print_rule_fires_outside_main_only():
    src = "def main():\n    def progress():\n        print('ok')\n    print('ok')\n\ndef helper():\n    print('no')\n"
    assert prints({"jitlab/telemetry/x.py": src, "jitlab/bench/x.py": src}) == [("jitlab/telemetry/x.py", 7)]
