"""Launch overhead: host µs per launch of real workload kernels, stock Triton vs jitlab policies vs the floors.

    python -m experiments.launch_overhead            # default run (H200: < 5 min)
    python -m experiments.launch_overhead --quick    # < 1 min
    python -m experiments.launch_overhead --policies experiments/launch_overhead.toml
    python -m experiments.launch_overhead --misses   # first launches, cold and warm, a process per trial

Without a CUDA GPU it runs a clearly labelled CPU demonstration (Triton's interpreter, jitlab in
pass-through) so the whole flow is visible: progress, summary table, trace file. Real numbers need
a CUDA GPU. The run is recorded as traces/launch_overhead-<run_id>.jsonl (OTLP JSON lines).

`--misses` measures instead the first launch of each workload's kernel in a new process, stock Triton vs
jitcache, cold (an empty Triton cache: the compile) and warm (Triton's disk cache filled by an earlier
process), each trial a fresh process (jitlab.bench.first_launch); recorded as
traces/launch_overhead_misses-<run_id>.jsonl.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from jitlab.kernels import WORKLOADS, launch_sweep

# Defaults (a --quick run overrides launches/repeats/workloads; the workloads are jitlab.kernels'
# registry: launch_sweep()).
LAUNCHES = 400  # per repeat; stays under the GPU's launch-queue depth while the GPU is held busy
REPEATS = 15  # repeats per trial (median, p10, p90 over repeats; interleaved across variants)
WARMUP = 100
TRACE_LEVELS = ("summary", "sampled", "full")  # tracing-overhead variants (jitcache:safe at each level)
GRAPH_LAUNCHES = 64  # stock launches captured per CUDA graph
POLICIES = "experiments/launch_overhead.toml"
MISS_TRIALS = 3  # --misses: trials (processes) per workload, kind and mode (--quick: 2)


@dataclass
class Args:
    quick: bool
    misses: bool
    policies: str
    workloads: tuple[str, ...]
    trace: str
    trace_file: str | None


def parse() -> Args:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer workloads and launches (< 1 min on the H200)")
    p.add_argument("--misses", action="store_true",
                   help="time first launches instead, cold and warm, in a new process per trial")
    p.add_argument("--policies", default=POLICIES, help="TOML file of [[policy]] tables (the sweep)")
    p.add_argument("--workloads", default=None,
                   help=f"comma-separated, of {','.join(WORKLOADS)} (default: {','.join(launch_sweep())})")
    p.add_argument("--trace", default=None, choices=("off", "summary", "sampled", "full"),
                   help="level of the run's own trace (default: JITLAB_TRACE, else sampled; timed loops always "
                        "run with recording off, except the trace=<level> variants)")
    p.add_argument("--trace-file", default=None,
                   help="default: JITLAB_TRACE_FILE, else traces/launch_overhead-<run_id>.jsonl")
    a = p.parse_args()
    names = tuple(a.workloads.split(",")) if a.workloads else launch_sweep(a.quick)
    bad = [n for n in names if n not in WORKLOADS]
    if bad:
        p.error(f"unknown workload(s) {bad}; choose from {sorted(WORKLOADS)}")
    from jitlab.bench.runner import trace_flags

    return Args(a.quick, a.misses, a.policies, names, *trace_flags(a.trace, a.trace_file))


def main() -> None:
    args = parse()
    from jitlab.bench import launch_variants, runner
    from jitlab.bench.timing import cuda_available
    from jitlab.policy import sweep_tables

    cuda = cuda_available()
    if args.misses:
        return misses(args, cuda)
    cfg = runner.Config(launches=LAUNCHES // (2 if args.quick else 1), repeats=5 if args.quick else REPEATS,
                        warmup=WARMUP, trace=args.trace, trace_file=args.trace_file, cuda=cuda)
    if not cuda:
        cfg = launch_variants.cpu_demo_config(cfg)
    sweep = sweep_tables(args.policies)
    runner.run_sweep(
        "launch_overhead",
        launch_variants.workloads(args.workloads, cuda),
        lambda case: launch_variants.variants(case, sweep, cuda, trace_levels=TRACE_LEVELS,
                                              graph_launches=GRAPH_LAUNCHES),
        cfg,
        attributes={"jitlab.quick": args.quick, "jitlab.policies_file": args.policies},
    )


def misses(args: Args, cuda: bool) -> None:
    from jitlab.bench import first_launch, launch_variants, runner

    cfg = runner.Config(launches=1, repeats=2 if args.quick else MISS_TRIALS, warmup=0, trace=args.trace,
                        trace_file=args.trace_file, cuda=cuda)
    if not cuda:
        cfg = launch_variants.cpu_demo_config(cfg)
    runner.run_sweep(
        "launch_overhead_misses",
        [(name, lambda name=name: name) for name in args.workloads],  # each trial builds its case in its process
        lambda name: first_launch.variants(name, cuda),
        cfg,
        attributes={"jitlab.quick": args.quick, "jitlab.trials": cfg.repeats},
    )


if __name__ == "__main__":
    from jitlab._extras import one_line

    with one_line("launch_overhead"):  # without the [lab] extra: one line naming it, no traceback
        from jitlab.bench.runner import cli
    cli(main, "launch_overhead")
