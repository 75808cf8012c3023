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
# Attributes of Triton's objects (CompiledKernel, JITFunction, its launcher): read only in jitlab/_triton.
TRITON_ATTRIBUTES = ("function", "packed_metadata", "launch_metadata", "launch_enter_hook", "launch_exit_hook",
                     "device_caches", "cache_key", "kernel_cache", "arg_names", "specialization_data", "asm",
                     "n_regs", "n_spills")
# jitlab modules each room may import (prefix match); everything else under jitlab is off limits to it.
# "core" in a list: the core's modules (jitlab/*.py; their names, e.g. `from jitlab import jitcache`).
MAY_IMPORT = {
    "core": ("core", "jitlab._triton", "jitlab.telemetry.recorder"),
    # jitlab.record_layout (issue 22 item 1, branch "telemetry"): the launch record's one definition, which the
    # native dispatcher's build and the span builder both read
    "_triton": ("jitlab._triton", "jitlab._cbuild", "jitlab.record_layout"),
    "telemetry": ("jitlab.telemetry", "jitlab.settings", "jitlab.provenance", "jitlab._cbuild", "jitlab._extras",
                  "jitlab.record_layout"),
    "kernels": ("jitlab.kernels",),
    # the vLLM plugin: the core only (its [vllm] extra brings no lab or tracing package)
    "vllm": ("core", "jitlab._triton", "jitlab.vllm"),
    "bench": ("core", "jitlab._triton", "jitlab.telemetry", "jitlab.kernels", "jitlab.vllm", "jitlab.bench"),
    # thin scripts over bench; Triton internals only through bench
    "experiments": ("core", "jitlab.bench", "jitlab.kernels", "jitlab.telemetry", "jitlab.vllm"),
    # the `jitlab` command and `jitlab run`'s bootstrap: the core, probes, its subcommands, the process
    # session's summary; a subcommand of an extra (report, export, replay) by name after jitlab._extras.require
    "cli": ("core", "jitlab._triton", "jitlab.cli", "jitlab.telemetry", "jitlab.bench.report"),
    # views over trace files; the workload registry's names (data: no kernel module, no Triton)
    "notebooks": ("jitlab.telemetry", "jitlab.kernels.WORKLOADS", "jitlab.kernels.launch_sweep",
                  "jitlab.kernels.decode_workloads"),
}
DIRS = ("jitlab", "experiments", "notebooks")
#: Third-party programs the experiments run unmodified (Triton's tutorials, kept out of git): not jitlab's
#: code, so not held to its rooms.
THIRD_PARTY = ("experiments/programs/",)

# Known violations, (file, rule), each to be removed, never added to (issue 22 emptied it, circles included).
KNOWN: set[tuple[str, str]] = set()


CLI = ("jitlab/__main__.py", "jitlab/cli/", "jitlab/_autorun/")  # the command line and `jitlab run`'s bootstrap


def room(rel: str) -> str | None:
    if rel.startswith(CLI):
        return "cli"
    if rel == RECORDER or (rel.startswith("jitlab/") and rel.count("/") == 1):
        return "core"
    for name in ("_triton", "telemetry", "kernels", "bench", "vllm"):
        if rel.startswith(f"jitlab/{name}/"):
            return name
    for name in ("experiments", "notebooks"):
        if rel.startswith(f"{name}/"):
            return name
    return None


def sources() -> dict[str, str]:
    """rel path -> source of every Python file of the rooms."""
    files = (p for d in DIRS for p in sorted((ROOT / d).rglob("*.py")))
    return {rel: p.read_text() for p in files if not (rel := str(p.relative_to(ROOT))).startswith(THIRD_PARTY)}


def module_name(rel: str) -> str:
    parts = list(Path(rel).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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
    """jitlab.keys, jitlab.scope.current, jitlab.jitcache: a module directly in jitlab/, one of its
    attributes, or a name of the package itself (jitlab/__init__.py: the public API), not a subpackage."""
    parts = name.split(".")
    return len(parts) > 1 and parts[0] == "jitlab" and ((ROOT / "jitlab" / f"{parts[1]}.py").exists()
                                                        or not (ROOT / "jitlab" / parts[1]).is_dir())


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
            if r == "cli" and _under(mod, LAB_AND_TRACE):  # a subcommand's extra: jitlab._extras.require, by name
                out.append((rel, line, f"the command line imports an extra's module: {mod}"))
            may = MAY_IMPORT.get(r, ())
            allowed = r is None or _under(mod, may) or ("core" in may and _in_core(mod))
            if mod.startswith("jitlab.") and not allowed:
                out.append((rel, line, f"{r} imports {mod}"))
        if r is None:
            out.append((rel, 0, "in no room (add it to room() and to docs/ARCHITECTURE.md)"))
        if r != "_triton":
            out += [(rel, line, f"Triton attribute outside jitlab/_triton: .{attr} (ask jitlab._triton)")
                    for line, attr in triton_attributes(src, rel)]
        out += [(rel, line, f"string import of a jitlab module, invisible to these rules: {what}")
                for line, what in string_imports(src, rel)]
    return sorted(set(out))


def triton_attributes(src: str, rel: str) -> list[tuple[int, str]]:
    return [(n.lineno, n.attr) for n in ast.walk(ast.parse(src, rel))
            if isinstance(n, ast.Attribute) and n.attr in TRITON_ATTRIBUTES]


_IMPORT_CALLS = ("import_module", "__import__")


def string_imports(src: str, rel: str) -> list[tuple[int, str]]:
    """(line, call) of every importlib.import_module / __import__ of a jitlab module by name: a string
    constant, a module-level constant holding one, an f-string starting with "jitlab", a relative name.
    One form is allowed: a package's __init__ loading its own submodules lazily (PEP 562), with
    `import_module(f"{__name__}.<name>")` (same room as its submodules)."""
    tree = ast.parse(src, rel)
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                 for t in n.targets if isinstance(t, ast.Name)}
    is_init = rel.endswith("__init__.py")
    # jitlab module names held in module-level data (a table of modules to import by name)
    named = any(isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value.startswith("jitlab.")
                for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value is not None
                for c in ast.walk(n.value))
    out = []
    for n in ast.walk(tree):
        if not (isinstance(n, ast.Call) and n.args and
                getattr(n.func, "attr", getattr(n.func, "id", None)) in _IMPORT_CALLS):
            continue
        arg, what = n.args[0], ast.unparse(n)
        if isinstance(arg, ast.Name):
            arg = ast.Constant(constants[arg.id]) if arg.id in constants else arg
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            flagged = arg.value.startswith(("jitlab", "."))
        elif isinstance(arg, ast.JoinedStr) and arg.values:
            head = arg.values[0]
            own = (is_init and isinstance(head, ast.FormattedValue) and isinstance(head.value, ast.Name)
                   and head.value.id == "__name__")
            flagged = not own and (any(isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name)
                                       and v.value.id in ("__name__", "__package__") for v in arg.values)
                                   or (isinstance(head, ast.Constant) and str(head.value).startswith(("jitlab", "."))))
        else:  # a name bound at run time: a jitlab module when the file keeps jitlab module names as data
            flagged = named
        if flagged or any(k.arg == "package" for k in n.keywords):
            out.append((n.lineno, what))
    return out


def import_graph(files: dict[str, str]) -> dict[str, dict[str, int]]:
    """module -> {module it imports: line}, over the files' own modules (`from a import b` counts as an
    import of a.b when that is a module, else of a; a package's __init__ is a module)."""
    mods = {module_name(rel): rel for rel in files}

    def target(name: str) -> str | None:
        parts = name.split(".")
        return next((m for m in (".".join(parts[:i]) for i in range(len(parts), 0, -1)) if m in mods), None)

    graph: dict[str, dict[str, int]] = {m: {} for m in mods}
    for rel, src in files.items():
        m = module_name(rel)
        for line, name in imports(src, rel):
            t = target(name)
            if t is not None and t != m:
                graph[m].setdefault(t, line)
    return graph


def circles(files: dict[str, str]) -> list[list[str]]:
    """The import circles (strongly connected components of more than one module; Tarjan), each sorted."""
    graph = import_graph(files)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []
    for root in graph:  # iterative Tarjan: the graph is a few hundred modules, no recursion limits to mind
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    work.append((w, iter(graph[w])))
                elif w in stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def circle_report(files: dict[str, str]) -> list[str]:
    graph, mods = import_graph(files), {module_name(rel): rel for rel in files}
    return [" -> ".join(comp) + ": " + ", ".join(f"{mods[a]}:{graph[a][b]} imports {b}" for a in comp
                                                 for b in graph[a] if b in comp)
            for comp in circles(files)]


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


def test_every_file_has_a_room():
    assert {room(rel) for rel in sources()} >= {"core", "_triton", "telemetry", "kernels", "vllm", "bench",
                                                "experiments", "notebooks"}
    homeless = [rel for rel in sources() if room(rel) is None]
    assert not homeless, homeless


def test_no_import_circles():
    found = circle_report(sources())
    assert not found, "import circles (break them: pass in, register, or move the shared part down):\n" + \
        "\n".join(found)


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
    ("notebooks/x.py", "from jitlab.kernels import paged_attention\n",
     "notebooks/x.py:1: notebooks imports jitlab.kernels.paged_attention"),
    ("jitlab/vllm/x.py", "from ..bench.policies import policy_for\n",
     "jitlab/vllm/x.py:1: vllm imports jitlab.bench.policies.policy_for"),
    ("jitlab/vllm/x.py", "from jitlab.telemetry import load_traces\n",
     "jitlab/vllm/x.py:1: vllm imports jitlab.telemetry.load_traces"),
    ("jitlab/kernels/x.py", "from jitlab.bench import runner\n", "jitlab/kernels/x.py:1: kernels imports jitlab.bench.runner"),
    ("jitlab/telemetry/x.py", "from ..vllm import policies\n", "jitlab/telemetry/x.py:1: telemetry imports jitlab.vllm.policies"),
    ("experiments/x.py", "from jitlab._triton import native\n",
     "experiments/x.py:1: experiments imports jitlab._triton.native"),
    ("jitlab/bench/x.py", "def f(compiled):\n    return int(compiled.function)\n",
     "jitlab/bench/x.py:2: Triton attribute outside jitlab/_triton: .function (ask jitlab._triton)"),
    ("jitlab/nowhere/x.py", "x = 1\n", "jitlab/nowhere/x.py:0: in no room (add it to room() and to docs/ARCHITECTURE.md)"),
    # string imports: the recorder's old way to reach telemetry.process (issue 22), and its variants
    ("jitlab/telemetry/recorder.py",
     'PROCESS_SESSION = "jitlab.telemetry.process"\ndef f():\n    import importlib\n'
     '    importlib.import_module(PROCESS_SESSION).start()\n',
     "jitlab/telemetry/recorder.py:4: string import of a jitlab module, invisible to these rules: "
     "importlib.import_module(PROCESS_SESSION)"),
    ("jitlab/cache.py", 'import importlib\nimportlib.import_module("jitlab.bench.runner")\n',
     "jitlab/cache.py:2: string import of a jitlab module, invisible to these rules: "
     "importlib.import_module('jitlab.bench.runner')"),
    ("jitlab/cache.py", 'm = __import__("jitlab.telemetry.process")\n',
     "jitlab/cache.py:1: string import of a jitlab module, invisible to these rules: __import__('jitlab.telemetry.process')"),
    ("jitlab/cache.py", 'from importlib import import_module\nimport_module(".process", __package__)\n',
     "jitlab/cache.py:2: string import of a jitlab module, invisible to these rules: "
     "import_module('.process', __package__)"),
    ("jitlab/cli/x.py", 'import importlib\nSUB = {"export": ("jitlab.telemetry.chrome", "trace")}\n'
     'def f(c):\n    module, extra = SUB[c]\n    return importlib.import_module(module)\n',
     "jitlab/cli/x.py:5: string import of a jitlab module, invisible to these rules: importlib.import_module(module)"),
    ("jitlab/kernels/x.py", 'import importlib\ndef f(n):\n    return importlib.import_module(f"jitlab.kernels.{n}")\n',
     "jitlab/kernels/x.py:3: string import of a jitlab module, invisible to these rules: "
     "importlib.import_module(f'jitlab.kernels.{n}')"),
    ("jitlab/cli/x.py", "import pandas\n", "jitlab/cli/x.py:1: the command line imports an extra's module: pandas"),
    ("jitlab/cli/x.py", "from triton.runtime import jit\n",
     "jitlab/cli/x.py:1: Triton internals outside jitlab/_triton: triton.runtime.jit"),
])
def test_each_rule_fires(rel, src, expected):
    assert expected in [f"{f}:{line}: {rule}" for f, line, rule in violations({rel: src})]


def test_string_imports_of_a_package_s_own_submodules_are_allowed_in_its_init_only():
    src = 'import importlib\ndef __getattr__(n):\n    return importlib.import_module(f"{__name__}.{n}")\n'
    assert string_imports(src, "jitlab/kernels/__init__.py") == []
    assert string_imports(src, "jitlab/kernels/x.py") != []
    assert string_imports('import importlib\nimportlib.import_module("rich")\n', "jitlab/bench/x.py") == []


def test_the_circle_check_finds_a_circle_and_names_its_lines():
    files = {"jitlab/bench/a.py": "from .b import X\n", "jitlab/bench/b.py": "\n\ndef f():\n    from . import a\n",
             "jitlab/bench/c.py": "from . import a\n"}
    assert circles(files) == [["jitlab.bench.a", "jitlab.bench.b"]]
    assert circle_report(files) == ["jitlab.bench.a -> jitlab.bench.b: jitlab/bench/a.py:1 imports jitlab.bench.b, "
                                    "jitlab/bench/b.py:4 imports jitlab.bench.a"]
    assert circles({k: v for k, v in files.items() if not k.endswith("b.py")}) == []


def experiments_paths(files: dict[str, str]) -> list[tuple[str, int]]:
    """(file, line) of every string in jitlab/ naming a path under experiments/ ("experiments", or
    "experiments/..."): the installed package has no experiments/ to read (pass the file in, or make it
    package data)."""
    return [(rel, n.lineno) for rel, src in files.items() if rel.startswith("jitlab/")
            for n in ast.walk(ast.parse(src, rel)) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and (n.value == "experiments" or n.value.startswith("experiments/"))]


def test_the_package_reads_nothing_from_experiments():
    found = experiments_paths(sources())
    assert not found, "jitlab/ refers to files of experiments/:\n" + "\n".join(f"{f}:{line}" for f, line in found)
    # the rule fires on what jitlab/bench/decode/ops.py did before issue 22
    assert experiments_paths({"jitlab/bench/x.py": 'P = ROOT / "experiments" / "e2e_decode.toml"\n'}) == \
        [("jitlab/bench/x.py", 1)]


# Modules that parse TOML other than policy files (what each reads).
OTHER_TOML = {"jitlab/bench/programs.py": "the any-program manifest (experiments/programs)"}


def test_one_reader_of_policy_files():
    """jitlab.policy reads every policy file (TOML); no other module parses TOML but those of OTHER_TOML."""
    readers = sorted({rel for rel, src in sources().items() for _, mod in imports(src, rel)
                      if _under(mod, ("tomllib", "tomli", "toml"))} - set(OTHER_TOML))
    assert readers == ["jitlab/policy.py"], readers


def test_print_rule_fires_outside_main_only():
    src = "def main():\n    def progress():\n        print('ok')\n    print('ok')\n\ndef helper():\n    print('no')\n"
    assert prints({"jitlab/telemetry/x.py": src, "jitlab/bench/x.py": src}) == [("jitlab/telemetry/x.py", 7)]
