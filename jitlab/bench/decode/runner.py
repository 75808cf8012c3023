"""Modes and the runner: checks, timing, step spans and per-trial metrics."""

from __future__ import annotations

import contextlib
import gc
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .config import (EXPERIMENT, MIXED_CHUNK, MIXED_PATTERN, MODES, REFERENCE_MODE, TINY, TINY_MIXED_CHUNK,
                     TINY_MIXED_PATTERN, Mode, ModelConfig, SweepConfig, TrialConfig, pad_to_capture_size)
from .engine import Engine, Views, reference_logits
from .model import DecodeSchedule, MixedSchedule, Model
from .ops import CountingOps, Ops, TUNED_POLICY_NAME, make_kernel_sets
from .vllm_attention import PLUGIN_POLICY
from .results import (_attrs, _one_line, attention_label, derive, escape, estimate, host_stability, print_profile,
                      print_table, summarize)

_now = time.perf_counter_ns


# ========================================================================================= the runner


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _compare(ref: list[torch.Tensor], got: list[torch.Tensor], ref_ids: list, got_ids: list, exact: bool,
             rtol: float = 0.05) -> dict:
    """Bitwise equality, or the max |difference| over the steps whose inputs matched (a step's inputs
    are the previous steps' sampled tokens)."""
    bitwise = len(ref) == len(got) and all(torch.equal(a, b) for a, b in zip(ref, got))
    max_diff, scale, compared = 0.0, 0.0, 0
    for j, (a, b) in enumerate(zip(ref, got)):
        if j > 0 and not all(np.array_equal(x, y) for x, y in zip(ref_ids[:j], got_ids[:j])):
            break
        max_diff = max(max_diff, float((a.float() - b.float()).abs().max()))
        scale = max(scale, float(a.float().abs().max()))
        compared += 1
    finite = all(bool(torch.isfinite(b).all()) for b in got)
    tol = rtol * max(scale, 1e-6)
    ok = finite and (bitwise or (not exact and max_diff <= tol))
    verdict = "bitwise" if bitwise else (f"close |Δ|≤{max_diff:.2g}" if ok else f"MISMATCH |Δ|={max_diff:.3g}")
    if not finite:
        verdict = "NON-FINITE"
    return {"check": verdict, "check_ok": ok, "bitwise": bitwise, "max_abs_diff": max_diff, "logit_scale": scale,
            "steps_compared": compared, "tolerance": 0.0 if exact else tol}


class _Trial:
    """Runs one (config, mode): setup, check, warmup, measurement. Produces a result row."""

    def __init__(self, runner: "Runner", ctx: "_ConfigCtx", mode: Mode, trial: Any, progress: Callable[[str], None]):
        self.r, self.ctx, self.mode, self.trial, self.progress = runner, ctx, mode, trial, progress
        self.engine = runner.engine
        self.sched = ctx.schedule
        self.ks = runner.kernel_sets[mode.kernels]
        self.graphs: Any = None
        self.pad = pad_to_capture_size if mode.kind == "piecewise" else None
        self.vllm_counters: dict = {}  # --attention vllm, jitlab modes: the plugin's counters after the check

    # the step function of this mode
    def _forward(self, ops: Ops, v: Views, max_k: int) -> None:
        e = self.engine
        if self.mode.kind == "eager":
            e.forward_eager(ops, v, max_k)
        elif self.mode.kind == "piecewise":
            gs = self.graphs[v.T_pad]
            for i in range(e.nl):
                ops.replay(gs[i])
                e.attention(ops, i, v, max_k)
            ops.replay(gs[e.nl])
        else:
            ops.replay(self.graphs[v.key])

    def step(self, ops: Ops, i: int, ev: tuple | None = None) -> tuple[int, int, int, int, Views]:
        e, plan = self.engine, self.sched.plan(i)
        t0 = _now()
        if ev is not None:
            ev[0].record()
        v = e.stage(ops, plan, self.pad)
        tp = _now()
        self._forward(ops, v, e.max_k)
        e.tail(ops, v)
        if ev is not None:
            ev[1].record()
        t1 = _now()
        e.sync()
        t2 = _now()
        self.sched.commit(plan, e.n_next)
        return t0, tp, t1, t2, v

    def setup(self) -> dict:
        e, mode = self.engine, self.mode
        t0 = time.perf_counter()
        if mode.kind == "piecewise":
            shapes = [e.views(pad_to_capture_size(p.T), p.T, p.n, p.max_q) for p in self.sched.shapes()]
            self.progress("capture")
            # The pieces are captured with the stock kernels in every piecewise mode: a replay runs the
            # same binaries whoever launched them at capture, and in vLLM the pieces are Inductor's;
            # the mode's kernels (stock or jitlab) launch the eager KV write + attention.
            self.graphs = e.capture_piecewise(self.r.kernel_sets["stock"], shapes)
        elif mode.kind == "full_graph":
            self.progress("capture")
            self.sched.reset()
            plan = self.sched.plan(0)
            v = e.stage(Ops(self.ks), plan)
            e.sync()
            self.graphs = e.capture_full(self.ks, v, e.max_k)
        return {"capture_s": round(time.perf_counter() - t0, 3),
                "graphs": sum(len(g) if isinstance(g, list) else 1 for g in (self.graphs or {}).values())}

    def check(self, n_steps: int) -> tuple[list, list, dict]:
        """The first steps after reset, with counting ops (and for eager tuned: verify=1 kernels)."""
        ks = self.ks
        if self.mode.kind == "eager" and ks.name == "jitlab_tuned":
            ks = self.r.kernel_sets["jitlab_tuned_verify"]
        ops = CountingOps(ks, self.engine.graph_kernels)
        self.sched.reset()
        logits, ids = [], []
        with ks.active():
            for i in range(n_steps):
                _, _, _, _, v = self.step(ops, i)
                logits.append(v.logits.detach().clone())
                ids.append(self.engine.n_next[:v.n].copy())
            self.vllm_counters = {n: w.counters(ks.scope or "global") for n, w in ks.vllm_wrappers.items()}
        c = ops.counts
        per = {k: c[k] / n_steps for k in c}
        launches = {
            "launches_per_step": (c["triton"] + c["torch"] + c["copy"] + c["graph"]) / n_steps,
            "triton_launches_per_step": per["triton"],
            "torch_launches_per_step": per["torch"],
            "copies_per_step": per["copy"],
            "graph_replays_per_step": per["graph"],
            "device_kernels_per_step": (c["triton"] + c["torch"] + c["in_graph"]) / n_steps,
            "triton_by_kernel": {k.split(".", 1)[1]: v / n_steps for k, v in c.items() if k.startswith("triton.")},
        }
        return logits, ids, launches

    def measure(self, n_steps: int) -> dict:
        e, run = self.engine, self.r.run
        cuda = e.cuda
        ops = Ops(self.ks)
        rec = run.recorder
        rec_i0, rec_flushes = (rec.buffered, rec.flushes) if rec is not None else (0, 0)
        c0 = self.ks.counters() if self.ks.jit() else None
        evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n_steps)] if cuda else [None] * n_steps
        base = self.ctx.step_index
        handles, times = [], []
        gc_on = gc.isenabled()
        gc.disable()
        try:
            t_start = _now()
            for i in range(n_steps):
                with self.trial.step("step", {"jitlab.e2e.step": i, "jitlab.e2e.phase": "measure"}) as st:
                    times.append(self.step(ops, base + i, evs[i]))
                handles.append(st)
            t_end = _now()
        finally:
            if gc_on:
                gc.enable()
        self.ctx.step_index += n_steps
        tokens = sum(t[4].T for t in times)
        wall = [(t[3] - t[0]) / 1e6 for t in times]
        host = [(t[2] - t[0]) / 1e6 for t in times]
        prep = [(t[1] - t[0]) / 1e6 for t in times]
        gpu = [a.elapsed_time(b) for a, b in evs] if cuda else []
        for j, st in enumerate(handles):
            v = times[j][4]
            st.set({"jitlab.e2e.wall_ms": wall[j], "jitlab.e2e.host_ms": host[j], "jitlab.e2e.prep_ms": prep[j],
                    "jitlab.e2e.tokens": v.T, "jitlab.e2e.num_seqs": v.n, "jitlab.e2e.is_3d": v.is_3d,
                    "jitlab.e2e.gpu_span_ms": gpu[j] if gpu else None})
        out = {
            "steps": n_steps, "tokens": tokens, "wall_s": (t_end - t_start) / 1e9,
            "tokens_per_s": tokens / ((t_end - t_start) / 1e9),
            "step_ms": _median(wall), "host_ms": _median(host), "prep_ms": _median(prep),
            "gpu_span_ms": _median(gpu), "step_ms_mean": sum(wall) / len(wall),
            "host_ms_p90": sorted(host)[int(0.9 * (len(host) - 1))],
            **host_stability(host),  # host_ms_p10, host_shift, host_spread, host_unstable: were the steps flat?
        }
        if c0 is not None:
            c1 = self.ks.counters()
            d = {k: c1.get(k, 0) - c0.get(k, 0) for k in c1}
            out["jitlab_counters"] = d
            out["jitlab_launches_per_step"] = (d.get("hit", 0) + d.get("miss", 0) + d.get("fallback", 0)) / n_steps
            out["jitlab_misses_measured"] = d.get("miss", 0) + d.get("locked_miss", 0)
        if rec is not None:
            out.update(self._records(rec, rec_i0, rec_flushes, t_start, t_end))
        return out

    @staticmethod
    def _records(rec: Any, i0: int, flushes: int, t_start: int, t_end: int) -> dict:
        from ...telemetry import recorder as _rec

        if rec.flushes != flushes:
            return {"per_launch_note": "recorder flushed during the trial; per-launch times not computed"}
        from ... import record_layout as _layout

        kernel, outcome, t_enter, t_args, t_exit = (_layout.INDEX[n] for n in
                                                    ("kernel", "outcome", "t_enter", "t_args", "t_exit"))
        recs = [r for r in rec.peek(i0) if r[outcome] == _rec.HIT and t_start <= r[t_enter] <= t_end]
        if not recs:
            return {}
        by: dict[str, list] = {}
        for r in recs:
            by.setdefault(rec.string(r[kernel]), []).append(r)
        per_kernel = {k: {"n": len(rs), "arg_update_ns": statistics.median(r[t_args] - r[t_enter] for r in rs),
                          "launch_ns": statistics.median(r[t_exit] - r[t_args] for r in rs)} for k, rs in by.items()}
        return {"per_launch_samples": len(recs),
                "arg_update_ns": statistics.median(r[t_args] - r[t_enter] for r in recs),
                "launch_call_ns": statistics.median(r[t_exit] - r[t_args] for r in recs),
                "per_launch_us": statistics.median((r[t_exit] - r[t_enter]) / 1e3 for r in recs),
                "per_launch_by_kernel": per_kernel}

    def gpu_busy(self, n_steps: int, host_ms: float | None) -> dict:
        """Steps launched while the GPU is held by a sleep kernel: the CUDA events then bracket pure
        device work (no gaps from a slow host), i.e. the GPU time per step."""
        e = self.engine
        if not e.cuda or n_steps <= 0:
            return {}
        from ..timing import Device

        dev = Device(True)
        ops = Ops(self.ks)
        base = self.ctx.step_index
        res = []
        for i in range(n_steps):
            ev = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            with self.trial.step("step", {"jitlab.e2e.step": i, "jitlab.e2e.phase": "gpu_busy"}) as st:
                dev.hold(1.5 * 1000 * (host_ms or 10.0) + 500)
                self.step(ops, base + i, ev)
            ms = ev[0].elapsed_time(ev[1])
            st.set({"jitlab.e2e.gpu_busy_ms": ms})
            res.append(ms)
        self.ctx.step_index += n_steps
        return {"gpu_busy_ms": _median(res), "gpu_busy_steps": len(res)}


@dataclass
class _ConfigCtx:
    config: TrialConfig
    schedule: Any
    num_blocks: int
    step_index: int = 0
    ref: dict | None = None  # reference logits (eager stock)
    rows: dict = field(default_factory=dict)  # mode -> result row
    trials: dict = field(default_factory=dict)  # mode -> trial handle


class Runner:
    """The experiment: model, engine, kernel sets, the Run; `run()` does the sweep."""

    def __init__(self, sweep: SweepConfig, console: Any = None):
        from .vllm_attention import load

        self.sweep = sweep
        self.cuda = sweep.cuda
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.console = console
        self.results: list[dict] = []
        self.run = None
        self.meta: dict = {}
        # --attention vllm: vLLM's wrappers and kernels (VllmNotFound, naming --vllm-dir, when absent)
        self.vllm = load(sweep.attention, sweep.vllm_dir, self.cuda)

    # -- sizing -----------------------------------------------------------------------------------------
    def _mixed_sched_args(self) -> dict:
        tiny = not self.cuda or self.sweep.model is TINY
        return dict(pattern=TINY_MIXED_PATTERN if tiny else MIXED_PATTERN,
                    chunk=TINY_MIXED_CHUNK if tiny else MIXED_CHUNK)

    def _trial_steps(self, c: TrialConfig, cycle: int = 1) -> int:
        s = self.sweep
        if c.kind == "mixed":
            return cycle * (1 + s.mixed_warmup_cycles + s.mixed_cycles + (1 if s.gpu_steps else 0)) + 2
        return s.steps_per_trial()

    def sizes(self, configs: list[TrialConfig]) -> tuple[int, int, int]:
        """(max tokens per step, max seqs, max model len) over the sweep (the engine's buffers)."""
        max_t, max_s, max_len = 32, 16, 160  # at least the sanity check's shapes
        for c in configs:
            if c.kind == "decode":
                max_t, max_s = max(max_t, pad_to_capture_size(c.batch)), max(max_s, c.batch)
                max_len = max(max_len, c.context + self._trial_steps(c) + 16)
            else:
                a = self._mixed_sched_args()
                tmax = max(k + (a["chunk"] if kind != "decode" else 0) for kind, k in a["pattern"])
                max_t, max_s = max(max_t, pad_to_capture_size(tmax)), max(max_s, c.batch + 1)
                max_len = max(max_len, c.context + 64 + self._trial_steps(c, len(a["pattern"])) + 16,
                              a["chunk"] * len(a["pattern"]))
        return max_t, max_s, max_len

    # -- the sweep --------------------------------------------------------------------------------------
    def run_all(self) -> list[dict]:
        with self.vllm.environment() if self.vllm is not None else contextlib.nullcontext():
            return self._run_all()

    def _run_all(self) -> list[dict]:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from ... import telemetry
        from ...provenance import provenance
        from ...settings import SETTINGS

        s = self.sweep
        console = self.console or Console(stderr=True)
        configs = s.configs()
        modes = [MODES[m] for m in s.mode_names()]
        est = estimate(s)
        self.meta = {"provenance": provenance(), "estimate_s": est["total_s"]}
        console.print(f"[bold]{EXPERIMENT}[/]: attention {escape(attention_label(s, self.vllm))}; "
                      f"{len(configs)} configs x {len(modes)} modes; "
                      f"estimated {est['total_s'] / 60:.1f} min{est['note']}")
        model_layers = max(c.layers for c in configs)
        max_t, max_s, max_len = self.sizes(configs)
        run_attrs = {
            "jitlab.experiment.label": s.label, "jitlab.e2e.quick": s.quick,
            "jitlab.e2e.model": json.dumps({k: getattr(s.model, k) for k in s.model.__dataclass_fields__}),
            "jitlab.e2e.sweep": json.dumps({k: (v if not isinstance(v, ModelConfig) else v.name)
                                            for k, v in s.__dict__.items() if k != "extra"}, default=str),
            "jitlab.e2e.configs": json.dumps([c.__dict__ for c in configs]),
            "jitlab.e2e.modes": json.dumps({m.name: m.description for m in modes}),
            "jitlab.e2e.estimate_s": est["total_s"], "jitlab.e2e.launcher": SETTINGS.launcher,
            "jitlab.e2e.device": str(self.device), "jitlab.e2e.attention": s.attention,
            "jitlab.e2e.attention_source": self.vllm.source if self.vllm is not None else "jitlab.kernels",
        }
        t_build = time.perf_counter()
        console.print(f"building {s.model.name} ({model_layers} layers, {s.model.dtype}) on {self.device} ...")
        self.model = Model(s.model, self.device, num_layers=model_layers, max_position=max_len + 1)
        self.engine = Engine(self.model, max_t, max_s, max_len, kv_layout=s.attention)
        scope_name = s.model.name
        self.scope_name = scope_name
        self.kernel_sets = make_kernel_sets(self.cuda, scope_name, vllm=self.vllm)
        if self.cuda:
            torch.cuda.synchronize()
        run_attrs["jitlab.e2e.build_s"] = round(time.perf_counter() - t_build, 2)
        run_attrs["jitlab.e2e.policies"] = json.dumps({n: {k: p.to_dict() for k, p in ks.policies.items()}
                                                       for n, ks in self.kernel_sets.items() if ks.policies})
        with telemetry.Run(EXPERIMENT, level=s.trace, sample_every=s.sample_every, trace_file=s.trace_file,
                           attributes=run_attrs) as run:
            self.run = run
            try:
                if s.sanity:
                    self._sanity(console)
                with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=console, transient=False) as progress:
                    task = progress.add_task("e2e_decode", total=len(configs) * len(modes))
                    for c in configs:
                        self._config(c, modes, progress, task)
            finally:
                self.engine.release_config()
                run.set({"jitlab.results": json.dumps(self.results, default=str)})
                run.set({"jitlab.e2e.summary": json.dumps(summarize(self.results), default=str)})
        self.meta["trace_file"] = run.summary.get("trace_file") if run.summary else None
        return self.results

    def _config(self, c: TrialConfig, modes: list[Mode], progress: Any, task: Any) -> None:
        e = self.engine
        label = c.name
        progress.update(task, description=f"{label}: allocating KV cache")
        try:
            ctx = self._prepare(c)
        except Exception as ex:  # noqa: BLE001 - e.g. not enough memory: the config is reported as skipped
            reason = f"{type(ex).__name__}: {ex}"
            for m in modes:
                with self.run.trial(f"{label}/{m.name}", self._trial_attrs(c, m)) as tr:
                    tr.set({"jitlab.skip": reason})
                self.results.append({**self._row0(c, m), "skip": reason})
                progress.advance(task)
            e.release_config()
            return
        for m in modes:
            progress.update(task, description=f"{label}: {m.name}")
            with self.run.trial(f"{label}/{m.name}", self._trial_attrs(c, m)) as tr:
                ctx.trials[m.name] = tr
                row = self._mode(ctx, m, tr, lambda phase, m=m: progress.update(
                    task, description=f"{label}: {m.name} ({phase})"))
                tr.set(_attrs(row))
            ctx.rows[m.name] = row
            self.results.append(row)
            progress.console.print(_one_line(row))
            progress.advance(task)
        # cross-mode metrics (speedups, gap closed), written into each trial span of the config
        derive(list(ctx.rows.values()))
        for name, row in ctx.rows.items():
            ctx.trials[name].set(_attrs({k: row.get(k) for k in ("speedup_vs_stock", "gap_closed", "x_full_graph",
                                                                  "device_kernels_match")}))
            if row.get("device_kernels_match") is False:
                progress.console.print(f"  [bold red]{name}: device kernels per step differ from eager_stock[/] "
                                       f"({row.get('device_kernels_per_step')})")
        if self.sweep.torch_profile and "torch_profile" not in self.meta:
            progress.update(task, description=f"{label}: torch profile")
            self._torch_profile(ctx)
        e.release_config()

    def _torch_profile(self, ctx: _ConfigCtx) -> None:
        """The `--torch-profile` window (decode.profile) on this config, after its timed trials: one
        trial span of its own (`jitlab.e2e.mode` = torch_profile, no result row); a failure is reported
        in that span and the summary, and the sweep goes on."""
        import jitlab

        from . import profile as prof

        names = prof.profile_modes(self.sweep.mode_names())
        c = ctx.config
        attrs = {"jitlab.e2e.mode": prof.PROFILE_MODE, "jitlab.e2e.profile.config": c.name,
                 "jitlab.e2e.profile.modes": ",".join(names), "jitlab.e2e.profile.steps": self.sweep.profile_steps}
        trials: list[_Trial] = []
        with self.run.trial(f"{c.name}/{prof.PROFILE_MODE}", attrs) as tr:
            try:
                if not names:
                    raise ValueError("the sweep has no eager mode to profile")
                if self.run.trace_file is None:
                    raise ValueError("the run writes no trace file to put the profile next to")
                out, _ = prof.paths(self.run.trace_file)
                trials = [_Trial(self, ctx, MODES[m], tr, lambda phase: None) for m in names]
                info = prof.window(trials, tr, self.run.recorder, self.cuda, self.sweep.profile_steps, out, Ops,
                                   lambda ks: jitlab.scope(ks.scope) if ks.scope is not None
                                   else contextlib.nullcontext())
                tr.set({"jitlab.e2e.profile.file": info["torch_profile"], "jitlab.e2e.profile.bytes": info["bytes"]})
            except Exception as ex:  # noqa: BLE001 - the timed results stand without the profile
                info = {"error": f"{type(ex).__name__}: {ex}", "modes": names}
                tr.set({"jitlab.error": info["error"]})
                if self.cuda:
                    with contextlib.suppress(Exception):
                        torch.cuda.synchronize()
            finally:
                for t in trials:
                    if t.ks.scope is not None:
                        with contextlib.suppress(Exception):
                            jitlab.get_scope(t.ks.scope).clear()
        self.meta["torch_profile"] = info

    def _prepare(self, c: TrialConfig) -> _ConfigCtx:
        s, e = self.sweep, self.engine
        steps = self._trial_steps(c, len(self._mixed_sched_args()["pattern"]) if c.kind == "mixed" else 1)
        # a scratch schedule on a dry table tells how many blocks the config needs
        if c.kind == "decode":
            need = c.batch * -(-(c.context + steps + 1) // s.model.block_size)
        else:
            a = self._mixed_sched_args()
            need = MixedSchedule.blocks_needed(a["pattern"], c.batch, c.context, a["chunk"], s.model.block_size, steps)
        num_blocks = need + 8
        kv_bytes = e.kv_bytes(c.layers, num_blocks)
        if self.cuda:
            e.release_config()
            free, _total = torch.cuda.mem_get_info()
            if kv_bytes + (2 << 30) > free:
                raise MemoryError(f"KV cache of {kv_bytes / 2**30:.1f} GiB does not fit in {free / 2**30:.1f} GiB free")
        e.prepare_config(c.layers, num_blocks, s.seed)
        if c.kind == "decode":
            sched = DecodeSchedule(e.seqs, c.batch, c.context, s.model.vocab, s.seed)
        else:
            a = self._mixed_sched_args()
            sched = MixedSchedule(e.seqs, a["pattern"], c.batch, c.context, a["chunk"], s.model.vocab, s.seed)
        if self.cuda:
            torch.cuda.synchronize()
        return _ConfigCtx(config=c, schedule=sched, num_blocks=num_blocks)

    def _row0(self, c: TrialConfig, m: Mode) -> dict:
        return {"config": c.name, "kind": c.kind, "batch": c.batch, "context": c.context, "layers": c.layers,
                "mode": m.name, "mode_kind": m.kind, "kernels": m.kernels}

    def _trial_attrs(self, c: TrialConfig, m: Mode) -> dict:
        ks = self.kernel_sets[m.kernels]
        prov = self.meta.get("provenance", {})
        return {"jitlab.e2e.config": c.name, "jitlab.e2e.kind": c.kind, "jitlab.e2e.batch": c.batch,
                "jitlab.e2e.attention": self.sweep.attention,
                "jitlab.e2e.context": c.context, "jitlab.e2e.layers": c.layers, "jitlab.e2e.mode": m.name,
                "jitlab.e2e.mode_kind": m.kind, "jitlab.e2e.kernels": m.kernels,
                "jitlab.policy": (TUNED_POLICY_NAME if m.kernels == "jitlab_tuned" else m.kernels)
                + (f"+vllm:{PLUGIN_POLICY[m.kernels][0]}" if ks.vllm is not None and PLUGIN_POLICY[m.kernels] else ""),
                "jitlab.policy.json": json.dumps({k: p.to_dict() for k, p in ks.policies.items()}) if ks.policies else "",
                "jitlab.scope": ks.scope or ("global" if ks.policies else ""),
                "jitlab.e2e.label": self.sweep.label,
                **{f"jitlab.provenance.{k}": prov.get(k) for k in ("gpu", "torch", "triton", "jitlab_commit", "driver")}}

    def _mode(self, ctx: _ConfigCtx, m: Mode, trial: Any, progress: Callable[[str], None]) -> dict:
        import jitlab

        s, c = self.sweep, ctx.config
        row = self._row0(c, m)
        if m.needs_cuda and not self.cuda:
            row["skip"] = "needs a CUDA GPU (torch.cuda graphs)"
            trial.set({"jitlab.skip": row["skip"]})
            return row
        if m.decode_only and c.kind != "decode":
            row["skip"] = "full graph is decode-only (vLLM FULL_AND_PIECEWISE runs mixed steps piecewise)"
            trial.set({"jitlab.skip": row["skip"]})
            return row
        t = _Trial(self, ctx, m, trial, progress)
        ks = t.ks
        scoped = ks.scope is not None
        cm = jitlab.scope(ks.scope) if scoped else contextlib.nullcontext()
        cycle = t.sched.cycle
        mixed = c.kind == "mixed"
        n_check = cycle if mixed else s.check_steps
        n_warm = cycle * s.mixed_warmup_cycles if mixed else s.warmup
        n_meas = cycle * s.mixed_cycles if mixed else s.steps
        n_busy = (cycle if s.gpu_steps else 0) if mixed else s.gpu_steps
        try:
            with cm as sc:
                if scoped:
                    sc.clear()  # fresh entries: every frozen value is prepared within this trial
                row.update(t.setup())
                progress("check")
                logits, ids, launches = t.check(max(1, n_check))
                row.update(launches)
                if ctx.ref is None:
                    ctx.ref = {"mode": m.name, "logits": logits, "ids": ids}
                    row.update(check="reference" if m.name == REFERENCE_MODE else f"reference ({m.name})",
                               check_ok=True, bitwise=True, max_abs_diff=0.0,
                               logit_scale=max(float(x.float().abs().max()) for x in logits))
                    if not all(bool(torch.isfinite(x).all()) for x in logits):
                        row.update(check="NON-FINITE reference", check_ok=False)
                else:
                    row.update(_compare(ctx.ref["logits"], logits, ctx.ref["ids"], ids, m.exact))
                if t.vllm_counters:
                    row["vllm_check_counters"] = t.vllm_counters
                progress("warmup")
                with ks.active():
                    t.sched.reset()
                    ctx.step_index = 0
                    ops = Ops(ks)
                    for i in range(n_warm):
                        t.step(ops, i)
                    ctx.step_index = n_warm
                    if scoped:
                        sc.lock()  # a miss from here on raises LockedMiss (would mean an unexpected recompile)
                    progress("measure")
                    row.update(t.measure(n_meas))
                    progress("gpu time")
                    row.update(t.gpu_busy(n_busy, row.get("host_ms")))
                if ks.jit() and row.get("jitlab_launches_per_step") is not None:
                    expect = row["triton_launches_per_step"]
                    row["jitlab_counts_agree"] = abs(row["jitlab_launches_per_step"] - expect) < 1e-9
                if scoped:
                    sc.clear()
        except Exception as ex:  # noqa: BLE001 - a failing mode is reported, the sweep goes on
            row["error"] = f"{type(ex).__name__}: {ex}"
            trial.set({"jitlab.error": row["error"]})
            if self.cuda:
                with contextlib.suppress(Exception):
                    torch.cuda.synchronize()
            if scoped:
                with contextlib.suppress(Exception):
                    jitlab.get_scope(ks.scope).clear()
        finally:
            t.graphs = None
            self.engine.drop_graphs()
        return row

    # -- sanity: eager stock vs pure torch on a small config -------------------------------------------
    def _sanity(self, console: Any) -> None:
        """Eager stock Triton against the pure-torch reference on small steps: a B=1 decode step (3D
        attention, the specialization the goal config uses) and, when the sweep has the mixed run, a
        prefill chunk + 15 decodes (2D, 16 seqs). Recorded as its own trial; a failure is reported
        loudly and the sweep goes on (each mode is still compared with eager stock)."""
        e, s = self.engine, self.sweep
        layers = min(2, self.model.num_layers)
        ops = Ops(self.kernel_sets["stock"])
        res: dict[str, Any] = {}
        with self.run.trial("sanity/eager_stock_vs_torch", {"jitlab.e2e.mode": "sanity"}) as tr, \
                self.kernel_sets["stock"].active():
            try:
                e.prepare_config(layers, 160, s.seed)
                res["decode B=1"] = self._sanity_step(DecodeSchedule(e.seqs, 1, 40, s.model.vocab, s.seed), ops)
                if s.mixed:
                    e.prepare_config(layers, 160, s.seed)
                    mixed = MixedSchedule(e.seqs, (("mixed", 15),), 15, 33, 16, s.model.vocab, s.seed)
                    res["prefill 16 + decode 15"] = self._sanity_step(mixed, ops)
            except Exception as ex:  # noqa: BLE001
                res["error"] = f"{type(ex).__name__}: {ex}"
            finally:
                e.release_config()
            ok = "error" not in res and all(r["ok"] for r in res.values())
            tr.set({"jitlab.e2e.sanity": json.dumps(res), "jitlab.e2e.sanity_ok": ok})
        self.meta["sanity"] = res
        self.run.set({"jitlab.e2e.sanity_ok": ok})
        msg = ", ".join(f"{k}: {v}" if k == "error" else f"{k}: max|Δ|={v['max_abs_diff']:.3g} (scale {v['scale']:.3g})"
                        for k, v in res.items())
        console.print(("[green]sanity ok[/] " if ok else "[bold red]SANITY FAILED[/] ") +
                      escape(f"(eager stock Triton vs pure torch, {layers} layers, {s.model.dtype}): {msg}"))

    def _sanity_step(self, sched: Any, ops: Ops) -> dict:
        e = self.engine
        sched.reset()
        plan = sched.plan(0)
        v = e.stage(ops, plan)
        kv_copy = [kv.clone() for kv in e.kv_layers]
        e.forward_eager(ops, v, e.max_k)
        e.tail(ops, v)
        e.sync()
        got = v.logits.float().clone()
        ref = reference_logits(e, kv_copy, v)
        diff = float((got - ref).abs().max())
        scale = float(ref.abs().max())
        ok = bool(torch.isfinite(got).all()) and diff <= 0.05 * max(scale, 1e-6)
        return {"ok": ok, "max_abs_diff": diff, "scale": scale, "is_3d": v.is_3d, "num_seqs": v.n, "tokens": v.T}


def run_experiment(sweep: SweepConfig) -> list[dict]:
    """Run the sweep, print the summary table (stdout), return the result rows."""
    from ..._triton import native

    native.DISPATCH.get(wait=True)  # the jitlab modes are timed with the native dispatcher built (once, ~20 s)
    runner = Runner(sweep)
    results: list[dict] = []
    try:
        results = runner.run_all()
        prof = runner.meta.get("torch_profile")
        if prof and "error" not in prof and runner.meta.get("trace_file"):
            from . import profile

            runner.meta["torch_profile"] = profile.merge(runner.meta["trace_file"], prof)
    finally:
        runner.meta.setdefault("attention", attention_label(sweep, runner.vllm))
        print_table(runner.results, sweep, runner.meta)
        if runner.meta.get("trace_file"):
            print(f"trace: {runner.meta['trace_file']}")
        if sweep.torch_profile:
            print_profile(runner.meta.get("torch_profile"), sweep.cuda)
    return results
