"""Trace a plain program: a `@jitcache` kernel in a loop, traced only through environment variables,
profiled by torch.profiler in the same run, both merged into one Perfetto/Chrome timeline.

    python -m experiments.trace_any_program                 # H200: < 1 min; CPU: a labelled demo (interpreter)
    python -m experiments.trace_any_program --steps 50 --out traces/any_program

It runs itself as a child process with `JITLAB_TRACE=full JITLAB_TRACE_FILE=<out>/trace.jsonl`
(the program has no tracing code but one `telemetry.span("step")` around each step), the child
also records a torch.profiler Chrome trace (`<out>/torch_profile.json`), and then
`jitlab-export <out>/trace.jsonl --chrome <out>/merged.chrome.json --torch-profile ...` merges
them. It prints the per-kernel report and the merge's alignment check. Open the merged file in
ui.perfetto.dev; upload trace.jsonl in Jaeger (Search -> JSON File).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def program(steps: int, launches: int, profile: str) -> None:
    """The traced program: nothing jitlab-specific but the decorator and the step spans."""
    import torch
    import triton
    import triton.language as tl
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from jitlab import jitcache, telemetry

    @jitcache
    @triton.jit
    def scale_add(x_ptr, y_ptr, out_ptr, n, alpha, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=m) * alpha + tl.load(y_ptr + offs, mask=m), mask=m)

    cuda = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
    dev = "cuda" if cuda else "cpu"
    n = 1 << 16 if cuda else 1000
    x, y = torch.randn(n, device=dev), torch.randn(n, device=dev)
    out = torch.empty_like(x)
    grid = (triton.cdiv(n, 1024),)
    scale_add[grid](x, y, out, n, 2.0, BLOCK=1024)  # warm-up: the miss (compile) happens before profiling
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=acts) as prof:
        for step in range(steps):
            with telemetry.span("step", step=step):
                for _ in range(launches):
                    scale_add[grid](x, y, out, n, 2.0, BLOCK=1024)
        if cuda:
            torch.cuda.synchronize()
    torch.testing.assert_close(out, x * 2.0 + y)
    prof.export_chrome_trace(profile)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=None, help="output folder (default traces/any_program-<run_id>; "
                                               "CPU: traces/cpu-demo/any_program-<run_id>)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--launches", type=int, default=8, help="launches per step")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--profile", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        program(a.steps, a.launches, a.profile)
        return 0

    import torch

    from jitlab.bench import report
    from jitlab.telemetry import chrome, new_run_id

    cuda = torch.cuda.is_available()
    out = Path(a.out or (f"traces/any_program-{new_run_id()}" if cuda else f"traces/cpu-demo/any_program-{new_run_id()}"))
    out.mkdir(parents=True, exist_ok=True)
    trace, prof, merged = out / "trace.jsonl", out / "torch_profile.json", out / "merged.chrome.json"
    env = dict(os.environ, JITLAB_TRACE="full", JITLAB_TRACE_FILE=str(trace))
    if not cuda:
        env["TRITON_INTERPRET"] = "1"
    cmd = [sys.executable, "-m", "experiments.trace_any_program", "--child", "--steps", str(a.steps),
           "--launches", str(a.launches), "--profile", str(prof)]
    print("$ JITLAB_TRACE=full JITLAB_TRACE_FILE=" + str(trace) + ("" if cuda else " TRITON_INTERPRET=1") + " "
          + " ".join(cmd[1:]), flush=True)
    rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        print(f"trace_any_program: the traced program failed (exit {rc})", file=sys.stderr)
        return rc
    print(report.markdown(str(trace)))
    return chrome.main([str(trace), "--chrome", str(merged), "--torch-profile", str(prof)])


if __name__ == "__main__":
    from jitlab._extras import one_line

    with one_line("trace_any_program"):  # without the [lab]/[trace] extras: one line naming one
        raise SystemExit(main())
