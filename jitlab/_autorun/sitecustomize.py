"""`jitlab run`'s bootstrap, the way OpenTelemetry's zero-code instrumentation starts: `jitlab run` puts
this directory first on PYTHONPATH, so every Python process of the program (the program itself, and
the children it starts with subprocess or multiprocessing spawn; fork children inherit the patch)
runs this file at startup, before the program's first import.

It first runs the sitecustomize this file shadows (the next one on sys.path), then hands over to
`jitlab.cli.autorun.bootstrap()`, which reads JITLAB_AUTO* and installs jitlab when Triton is
imported (never importing Triton itself). It never stops the program over jitlab: a problem is one
line on stderr, and the program runs as without jitlab. Not a module of the jitlab package.
"""


def _chain_next_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None or os.path.abspath(spec.origin or "") == os.path.abspath(__file__):
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def _jitlab() -> None:
    import sys

    try:
        from jitlab.cli.autorun import bootstrap
    except ImportError as e:  # jitlab not importable in this interpreter: the program runs without it
        sys.stderr.write(f"jitlab run: jitlab is not importable here ({e}); running without it\n")
        return
    bootstrap()


_chain_next_sitecustomize()
_jitlab()
