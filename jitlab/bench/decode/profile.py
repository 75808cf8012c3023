"""`--torch-profile`: a short torch.profiler window inside the e2e run, merged with the run's jitlab
trace into one Chrome/Perfetto timeline.

After all modes of the first configuration are measured (the timed trials are never profiled), a
`torch_profile` trial runs a few more steps of the profiled modes (eager_stock and eager_jitlab_safe
when the sweep has them, else its first eager mode) under one `torch.profiler.profile` (CPU
activity, plus CUDA on a GPU). Each mode is warmed up first, outside the profiler; inside it every
step is a jitlab step span (`jitlab.e2e.phase` = profile) with a `record_function` of the same name
inside it, and at level sampled every hit of the window is recorded, so each launch of the window
has a span. torch's Chrome trace goes next to the run's trace file as `<trace stem>.torch_profile.json`;
when the run has ended (its trace file complete) `jitlab.telemetry.chrome.export_chrome` merges both
into `<trace stem>.merged.chrome.json` and reports its alignment checks (`merge`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .config import MODES

log = logging.getLogger(__name__)

PROFILE_MODES = ("eager_stock", "eager_jitlab_safe")
WARM_STEPS = 2
STEP = "step"  # the jitlab step span's name, and its record_function's (chrome's annotation check pairs them)
PROFILE_MODE = "torch_profile"  # jitlab.e2e.mode of the profile trial (no jitlab.e2e.config: no result row)


def paths(trace_file: str | Path) -> tuple[Path, Path]:
    """(torch profile, merged Chrome trace) next to `trace_file`: `<stem>.torch_profile.json`,
    `<stem>.merged.chrome.json`."""
    t = Path(trace_file)
    stem = t.name[: -len(".jsonl")] if t.name.endswith(".jsonl") else t.stem
    return t.with_name(stem + ".torch_profile.json"), t.with_name(stem + ".merged.chrome.json")


def profile_modes(mode_names: Sequence[str]) -> list[str]:
    """The modes profiled: eager_stock and eager_jitlab_safe where the sweep has them, else its first
    eager mode (graph modes replay kernels no launcher call shows); [] when it has no eager mode."""
    eager = [m for m in mode_names if MODES[m].kind == "eager"]
    return [m for m in PROFILE_MODES if m in eager] or eager[:1]


def window(trials: Sequence[Any], trial_span: Any, recorder: Any, cuda: bool, steps: int, out: Path,
           make_ops: Callable[[Any], Any], scope_of: Callable[[Any], Any]) -> dict:
    """Profile `steps` steps of each `_Trial` in `trials` (warmed up first, outside the profiler) under
    one torch.profiler; write its Chrome trace to `out`. Returns what was profiled."""
    from torch.profiler import ProfilerActivity, profile, record_function

    def run(t: Any, i0: int, n: int, profiled: bool) -> None:
        ops = make_ops(t.ks)
        with scope_of(t.ks):
            for i in range(i0, i0 + n):
                if not profiled:
                    t.step(ops, i)
                    continue
                with trial_span.step(STEP, {"jitlab.e2e.step": i - i0, "jitlab.e2e.phase": "profile",
                                            "jitlab.e2e.mode": t.mode.name}):
                    with record_function(STEP):
                        t.step(ops, i)

    for t in trials:  # misses, compiles and first-call costs stay out of the window
        t.sched.reset()
        run(t, 0, WARM_STEPS, profiled=False)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    keep = recorder.keeping_every_hit() if recorder is not None else contextlib.nullcontext()
    with keep, profile(activities=acts) as prof:
        for t in trials:
            t.sched.reset()
            run(t, 0, steps, profiled=True)
        if cuda:
            torch.cuda.synchronize()
    out.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(out))
    info = {"torch_profile": str(out), "modes": [t.mode.name for t in trials], "steps": steps,
            "activities": "CPU+CUDA" if cuda else "CPU", "bytes": out.stat().st_size}
    log.info("torch profile of %s: %s (%d bytes)", info["modes"], out, info["bytes"])
    return info


def merge(trace_file: str | Path, profile: dict) -> dict:
    """Merge the finished run's trace with its torch profile (`profile` as `window` returned it) into
    `<stem>.merged.chrome.json`; returns `profile` updated with the merged path and the alignment checks
    of `export_chrome` (or `merge_error`)."""
    from ...telemetry import chrome

    prof_path, merged = paths(trace_file)
    out = dict(profile, merged=str(merged))
    try:
        out.update(chrome.export_chrome(str(trace_file), str(merged), str(prof_path)))
    except (chrome.ExportError, OSError) as e:
        out["merge_error"] = (str(e).splitlines() or [type(e).__name__])[0]
        log.warning("e2e --torch-profile: cannot merge %s with %s: %s", trace_file, prof_path, out["merge_error"])
    return out
