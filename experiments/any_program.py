"""Any Triton program, stock vs jitlab: run it twice, check its output is identical, tabulate its kernels.

    python -m experiments.any_program                       # Triton's tutorials (experiments/programs/)
    python -m experiments.any_program --quick               # two of them
    python -m experiments.any_program --full                # benchmarks whole, not cut ([cut] in the manifest)
    python -m experiments.any_program app.py --n 3          # any program: python app.py --n 3
    python -m experiments.any_program --extract-from ~/triton   # get the tutorials from a Triton clone
    python -m experiments.any_program --hashes              # print the tutorials' sha256/size lines

Each program runs as `jitlab run --policy observe` (stock Triton launches, traced by the same recorder)
and then `jitlab run --policy safe`. Output rule and table: docs/ANY_PROGRAM.md. Without a CUDA GPU
it runs under TRITON_INTERPRET=1 (everything passes through: counts, no timings).
"""

from __future__ import annotations

import argparse
import os
import sys

# Defaults.
MANIFEST = "experiments/programs/triton_tutorials.toml"
TRACE = "sampled"  # every 100th hit (JITLAB_TRACE_SAMPLE) and every other launch become spans
TIMEOUT_S = 3600  # per run of a program


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("script", nargs="?", help="a program to run (default: the manifest's programs)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the program's arguments")
    p.add_argument("--manifest", default=MANIFEST, help="TOML list of unmodified program files (default %(default)s)")
    p.add_argument("--programs", default=None, help="comma-separated names from the manifest")
    p.add_argument("--quick", action="store_true", help="the manifest's quick programs only")
    p.add_argument("--full", action="store_true",
                   help="run the manifest's benchmarks whole (default: cut as its [cut] table says)")
    p.add_argument("--trace", default=TRACE, choices=("summary", "sampled", "full"), help="trace level of each run")
    p.add_argument("--out", default=None, help="folder for the traces (default traces/, CPU: traces/cpu-demo/)")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per run of a program")
    p.add_argument("--stop-at", default=None, help="ad-hoc program: regex of the first line of its timing block")
    p.add_argument("--mask", action="append", default=[], help="ad-hoc program: regex masked on every line")
    p.add_argument("--hashes", action="store_true", help="print the manifest's files' sha256/size lines and exit")
    p.add_argument("--extract-from", metavar="CLONE", default=None,
                   help="copy the manifest's files out of this git clone (each at its recorded commit), verify, exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    from jitlab.bench import any_program, programs
    from jitlab.bench.outputs import Rule
    from jitlab.bench.timing import cuda_available

    try:
        manifest = programs.load(a.manifest) if (a.script is None or a.hashes or a.extract_from) else None
        if a.extract_from:
            for f in programs.extract(manifest, a.extract_from):
                print(f"{f}: extracted, sha256 as in {a.manifest}")
            return 0
        if a.hashes:
            print(programs.manifest_lines(manifest))
            return 0
        if a.script is None:
            chosen = programs.with_cut(manifest, programs.verify(
                manifest, programs.select(manifest, a.programs, a.quick)), a.full)
            rule = manifest.rule
        else:
            chosen, rule = (programs.script(a.script, a.args),), Rule(stop_at=a.stop_at, mask=tuple(a.mask))
    except (programs.ManifestError, ValueError) as e:
        print(f"any_program: {e}", file=sys.stderr)
        return 2
    missing = any_program.jitlab_run_missing()
    if missing:
        print(f"any_program: {missing}", file=sys.stderr)
        return 2
    cuda = cuda_available() and os.environ.get("TRITON_INTERPRET") != "1"
    if a.script is None and not cuda:
        print("any_program: Triton's tutorials need a CUDA GPU (under TRITON_INTERPRET=1 Triton finds no driver); "
              "on CPU give a program of your own: python -m experiments.any_program app.py", file=sys.stderr)
        return 2
    if not cuda:
        os.environ["TRITON_INTERPRET"] = "1"  # the programs inherit it
    cfg = any_program.Config(chosen, rule, trace=a.trace, out=a.out, timeout_s=a.timeout, cuda=cuda,
                             label="" if cuda else any_program.CPU_LABEL,
                             attributes={"jitlab.quick": a.quick, "jitlab.any_program.full": a.full,
                                         "jitlab.any_program.manifest": a.manifest if a.script is None else ""})
    result = any_program.run(cfg)
    return 0 if all(r["identical"] and r["jitlab_rc"] == 0 for r in result["programs"]) else 1


if __name__ == "__main__":
    from jitlab.bench.runner import cli

    cli(lambda: sys.exit(main()), "any_program")
