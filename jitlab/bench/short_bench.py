"""Run an unmodified Triton program with its `triton.testing` benchmarks cut short.

    python -m jitlab.bench.short_bench --points 2 --rep-ms 10 --warmup-ms 5 FILE ARGS

Triton's tutorials call `triton.testing.perf_report(Benchmark(x_vals=[...]))(fn).run(...)` at module
level, timing every point with `do_bench` (25 ms warm-up, 100 ms repetitions by default): minutes per
program. Issue 20: such benchmarks "may be cut by an argument, not by edits". This runs FILE exactly as
`python FILE ARGS` would (`runpy.run_path(FILE, run_name="__main__")`, sys.argv = [FILE, *ARGS],
sys.path[0] = FILE's folder) after replacing two names on the `triton.testing` module:

- `perf_report(benchmarks)`: each `Benchmark`'s `x_vals` cut to its first `points` values;
- `do_bench(fn, warmup, rep, ...)`: warm-up and repetition times capped at `warmup_ms` and `rep_ms`,
  whether they come from the defaults or the caller (05-layer-norm passes rep=500).

Both are `triton.testing`'s documented public API, and only public attributes (`Benchmark.x_vals`, the
module's names) are touched, so this lives here and not in `jitlab/_triton/` (which holds what touches
Triton's internals). What the program prints before its benchmarks (its correctness lines) is untouched.
Triton's autotuner times its configurations with `triton.testing.do_bench` too (looked up at call time),
so its timings are capped as well: under TRITON_CACHE_AUTOTUNING=1 the first run's choice is cached and
every later run of the comparison reuses it.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import runpy
import sys
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cut:
    """How a program's benchmarks are cut: the first `points` x values, do_bench times capped (ms)."""
    points: int = 2
    rep_ms: float = 10.0
    warmup_ms: float = 5.0

    def __post_init__(self):
        if self.points < 1 or self.rep_ms <= 0 or self.warmup_ms <= 0:
            raise ValueError(f"cut {self.describe()}: points must be >= 1 and rep_ms, warmup_ms > 0")

    def argv(self) -> list[str]:
        """The short_bench arguments that apply this cut (before FILE)."""
        return ["--points", str(self.points), "--rep-ms", f"{self.rep_ms:g}", "--warmup-ms", f"{self.warmup_ms:g}"]

    def describe(self) -> str:
        return (f"triton.testing benchmarks cut to their first {self.points} x values, "
                f"do_bench rep <= {self.rep_ms:g} ms, warmup <= {self.warmup_ms:g} ms")


#: How a cut program is started: `python -m jitlab.bench.short_bench CUT FILE ARGS`.
MODULE = ("-m", __name__)


def cut_perf_report(original: Callable, points: int) -> Callable:
    def perf_report(benchmarks: Any) -> Callable:
        for bench in (benchmarks if isinstance(benchmarks, (list, tuple)) else [benchmarks]):
            bench.x_vals = list(bench.x_vals)[:points]
        return original(benchmarks)

    return functools.wraps(original)(perf_report)


def capped_do_bench(original: Callable, rep_ms: float, warmup_ms: float) -> Callable:
    def do_bench(fn, warmup=None, rep=None, *args, **kwargs):
        warmup = warmup_ms if warmup is None else min(warmup, warmup_ms)
        rep = rep_ms if rep is None else min(rep, rep_ms)
        return original(fn, warmup, rep, *args, **kwargs)

    return functools.wraps(original)(do_bench)


def install(cut: Cut) -> Callable[[], None]:
    """Replace `triton.testing.perf_report` and `do_bench` with cut ones; returns the undo."""
    import triton.testing as tt

    saved = (tt.perf_report, tt.do_bench)
    tt.perf_report = cut_perf_report(saved[0], cut.points)
    tt.do_bench = capped_do_bench(saved[1], cut.rep_ms, cut.warmup_ms)

    def undo() -> None:
        tt.perf_report, tt.do_bench = saved

    return undo


def run_program(cut: Cut, file: str, args: list[str]) -> None:
    """Run `file` as `python file args` would, with `cut` installed."""
    install(cut)
    path = os.path.abspath(file)
    sys.argv = [file, *args]
    sys.path[0] = os.path.dirname(path)  # as `python FILE` sets it (here: the cwd, from -m)
    runpy.run_path(path, run_name="__main__")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jitlab.bench.short_bench", description=__doc__.split("\n")[0])
    p.add_argument("--points", type=int, default=Cut.points, help="x values kept per Benchmark (default %(default)s)")
    p.add_argument("--rep-ms", type=float, default=Cut.rep_ms, help="do_bench repetition cap (default %(default)s)")
    p.add_argument("--warmup-ms", type=float, default=Cut.warmup_ms, help="do_bench warm-up cap (default %(default)s)")
    p.add_argument("file", help="the program (run unmodified, as its own __main__)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    a = p.parse_args(argv)
    try:
        cut = Cut(a.points, a.rep_ms, a.warmup_ms)
    except ValueError as e:
        p.exit(2, f"short_bench: {e}\n")
    if not os.path.isfile(a.file):
        p.exit(2, f"short_bench: {a.file}: no such program file\n")
    log.info("%s: %s", a.file, cut.describe())
    run_program(cut, a.file, a.args)


if __name__ == "__main__":
    main()
