"""Misses: the first launch of a kernel in a new process, stock Triton vs jitcache, cold and warm.

    python -m experiments.launch_overhead --misses [--quick] [--workloads ...]

Each trial is a fresh Python process (`python -m jitlab.bench.first_launch --child <workload> <who>`), so
no in-memory cache of Triton or jitlab helps. In it, torch, CUDA, Triton's driver and (for jitcache) the
native dispatcher are made ready first by launching another kernel (`WARMUP`) the same way; then the
workload's kernel is decorated (not timed: once per kernel, not per key) and its first launch is timed up
to a device synchronize. The parent times nothing itself: the child's number is the trial's.

- **cold**: a fresh, empty TRITON_CACHE_DIR per trial: the first launch compiles (Triton's compile and its
  launcher stub's build included: what a new key costs the first time anywhere).
- **warm**: a TRITON_CACHE_DIR filled once by an earlier process: the first launch loads from Triton's disk
  cache (a new process with a new key that some earlier process compiled).

jitlab's own C builds stay cached (JITLAB_CACHE_DIR is the parent's). The experiment's in-process
`first_launch:*` rows (a fresh kernel object in the running process) stay as they were.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from .runner import Variant

KIND = "first"
MODES = ("cold", "warm")
WHO = ("triton", "jitcache")
WARMUP = "tiny"  # the kernel that readies each child process (many_args when the workload is tiny)
TIMEOUT_S = 600


def variant_name(who: str, mode: str) -> str:
    return f"first_launch:{who} {mode}"


def _child_env(cache_dir: str) -> dict:
    env = dict(os.environ, TRITON_CACHE_DIR=cache_dir, JITLAB_TRACE="off")
    env.pop("JITLAB_TRACE_FILE", None)
    return env


def _spawn(workload: str, who: str, cache_dir: str) -> dict:
    """One child process: its JSON result (the last line of its stdout)."""
    r = subprocess.run([sys.executable, "-m", "jitlab.bench.first_launch", "--child", workload, who],
                       capture_output=True, text=True, env=_child_env(cache_dir), timeout=TIMEOUT_S)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"first-launch child ({workload}, {who}) failed: {tail[0]}")
    return json.loads(lines[-1])


class _Trials:
    """A timer for the runner (`Variant.timer`): each call is one trial in a new process. Warm trials share
    one cache directory, filled once (by a child of each kind) before the first trial."""

    def __init__(self, workload: str, who: str, mode: str):
        self.workload, self.who, self.mode = workload, who, mode
        self._warm_dir: str | None = None

    def __call__(self, n: int) -> int:
        if self.mode == "cold":
            d = tempfile.mkdtemp(prefix="jitlab-triton-cold-")
            try:
                return _spawn(self.workload, self.who, d)["launch_ns"] * n  # the runner divides by n
            finally:
                shutil.rmtree(d, ignore_errors=True)
        if self._warm_dir is None:
            self._warm_dir = tempfile.mkdtemp(prefix="jitlab-triton-warm-")
            for who in WHO:
                _spawn(self.workload, who, self._warm_dir)
        return _spawn(self.workload, self.who, self._warm_dir)["launch_ns"] * n

    def __del__(self) -> None:
        if self._warm_dir is not None:
            shutil.rmtree(self._warm_dir, ignore_errors=True)


def variants(workload: str, cuda: bool) -> list[Variant]:
    """One variant per (who, mode), trials interleaved by the runner's rounds (one trial per round)."""
    out = []
    for mode in MODES:
        for who in WHO:
            name = variant_name(who, mode)
            if not cuda:
                out.append(Variant(name, KIND, skip="needs a CUDA GPU"))
                continue
            timer = _Trials(workload, who, mode)
            out.append(Variant(name, KIND, lambda timer=timer: timer(1), check=False, timer=timer, hold=False))
    return out


def markdown(rows: list[dict]) -> list[str]:
    """Per workload and mode: stock Triton's first launch, jitcache's, and the difference (ms)."""
    med = {(r["workload"], r["variant"]): r.get("median_us") for r in rows if r.get("median_us") is not None}
    names = list(dict.fromkeys(w for (w, v) in med if v.startswith("first_launch:") and " " in v))
    if not names:
        return []
    out = ["The first launch in a new process (ms, median over trials, each a fresh process; cold: an empty "
           "Triton cache, the compile; warm: Triton's disk cache filled by an earlier process):", "",
           "| workload | mode | triton | jitcache | jitcache - triton |", "|---|---|---:|---:|---:|"]
    for w in names:
        for mode in MODES:
            t, j = med.get((w, variant_name("triton", mode))), med.get((w, variant_name("jitcache", mode)))
            if t is None and j is None:
                continue
            cells = [f"{x / 1e3:.2f}" if x is not None else "" for x in (t, j)]
            diff = f"{(j - t) / 1e3:+.3f}" if t is not None and j is not None else ""
            out.append(f"| {w} | {mode} | {cells[0]} | {cells[1]} | {diff} |")
    return out


def child(workload: str, who: str) -> dict[str, Any]:
    """In a fresh process: ready torch, CUDA, Triton (and jitlab's dispatcher) with another kernel, then
    time the first launch of `workload`'s kernel, stock or under jitcache, up to a synchronize."""
    import time

    import torch

    from .. import jitcache, kernels
    from .._triton import native

    warm = kernels.make_case("many_args" if workload == WARMUP else WARMUP, cuda=True)
    case = kernels.make_case(workload, cuda=True)
    if who == "jitcache":
        native.DISPATCH.get(wait=True)  # a running process has its dispatcher
        warm.launch(jitcache(warm.kernel))
    else:
        warm.launch()
    torch.cuda.synchronize()
    t0 = time.perf_counter_ns()
    k = jitcache(case.kernel) if who == "jitcache" else case.kernel
    t1 = time.perf_counter_ns()
    case.launch(k)
    torch.cuda.synchronize()
    t2 = time.perf_counter_ns()
    return {"workload": workload, "who": who, "decorate_ns": t1 - t0, "launch_ns": t2 - t1}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="one first-launch trial (a child of launch_overhead --misses)")
    p.add_argument("--child", nargs=2, metavar=("WORKLOAD", "WHO"), required=True)
    a = p.parse_args(argv)
    workload, who = a.child
    if who not in WHO:
        p.error(f"WHO must be one of {WHO}")
    print(json.dumps(child(workload, who)))


if __name__ == "__main__":
    main()
