"""vLLM's own Triton attention kernels, launched by vLLM's own wrappers: correctness per policy over a
batch matrix, then host and GPU µs per launch (experiments/vllm_kernels.py).

1. Matrix check: for each policy, the plugin is installed with verify=1 and every batch of the matrix
   runs twice through vLLM's `triton_reshape_and_cache_flash()` + `unified_attention()` (the second
   pass hits entries other batches prepared, and each hit re-derives Triton's full key); the KV cache
   and output are compared bit for bit with unwrapped vLLM.
2. Timing (jitlab.bench.runner, as the launch-overhead experiment): per batch, each kernel launch
   exactly as vLLM's wrapper issued it (grid, keywords, launch options, captured from the wrapper)
   is a workload: stock Triton, the stored compiled kernel called directly, each policy, the floors,
   CUDA-graph replay, and `gpu_time` (GPU µs per launch from CUDA events around graph replays); and
   one `step` workload per batch: vLLM's two wrappers with stock vs jitlab kernels (host µs per layer).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from ..kernels.case import Case
from . import vllm_batches as vb
from .runner import Config, ExperimentError, Variant

KERNEL_MODULES = {"kernel_unified_attention": vb.UNIFIED, "reduce_segments": vb.UNIFIED,
                  "reshape_and_cache_kernel_flash": vb.CACHE}


class VllmNotFound(ExperimentError):
    """Neither an installed vLLM nor vLLM's kernel files in the given folder (experiments report it in one line)."""


def load_vllm(vllm_dir: str) -> str:
    """Make vLLM's kernel modules importable: an installed vLLM, else the files in `vllm_dir`
    (jitlab.vllm.kernel_files). Returns where they come from; VllmNotFound when there are none."""
    from ..vllm import kernel_files

    if importlib.util.find_spec("vllm") is None or kernel_files.is_built(vllm_dir):
        if not kernel_files.is_built(vllm_dir):
            raise VllmNotFound(f"vLLM's kernel files not found: vLLM is not installed and --vllm-dir {vllm_dir} "
                               f"has no vllm/ (run experiments/vllm_carry.sh to write .vllm/, or pass --vllm-dir DIR)")
        kernel_files.activate(vllm_dir)
    import vllm

    standin = getattr(vllm, "JITLAB_STANDIN", False)
    return f"vllm {vllm.__version__} " + (f"kernel files from its wheel ({vllm_dir})" if standin else "installed")


@contextlib.contextmanager
def cpu_demo_patches():
    """Without a GPU: vLLM's kernels run in Triton's interpreter, and vLLM's cache write (which asks the
    CUDA device for its capability) is told sm_90. Only for the labelled CPU demo and tests."""
    import torch

    from .._triton.interpreter import nested_jit_calls_interpreted

    saved = torch.cuda.get_device_capability
    torch.cuda.get_device_capability = lambda device=None: (9, 0)
    try:
        with nested_jit_calls_interpreted():
            yield
    finally:
        torch.cuda.get_device_capability = saved


# -- 1. the matrix check -------------------------------------------------------------------------------

def check_matrix(policy_file: str, policy_names: list[str], specs: list[vb.Spec], shape: vb.Shape, device: str,
                 passes: int = 2) -> list[dict]:
    """One row per policy of `policy_file`: bitwise equal to unwrapped vLLM on every batch of every pass,
    and the AssumptionViolated/error if one was raised (verify=1)."""
    from .. import vllm as plugin

    batches = [vb.Batch(s, shape, device, seed=i) for i, s in enumerate(specs)]
    initial = [b.kv_cache.clone() for b in batches]
    stock = []
    for b, kv in zip(batches, initial):
        _reset(b, kv)
        vb.step(b)
        stock.append([vb.bits(t).clone() for t in b.outputs()])
    rows = []
    for name in policy_names:
        row = {"policy": name, "batches": len(specs), "passes": passes, "bitwise_equal": True, "mismatches": []}
        state = plugin.install(f"{policy_file}:{name}", scope=f"matrix:{name}", verify=1)
        try:
            for _ in range(passes):
                for b, kv, want in zip(batches, initial, stock):
                    _reset(b, kv)
                    vb.step(b)
                    if not all(_same(vb.bits(t), w) for t, w in zip(b.outputs(), want)):
                        row["bitwise_equal"] = False
                        row["mismatches"].append(b.spec.name)
            _sync(device)
        except Exception as e:  # noqa: BLE001 - a violated assumption is this check's finding
            row["bitwise_equal"], row["error"] = False, f"{type(e).__name__}: {e}"
        finally:
            row["counters"] = {n: w.counters() for n, w in state.wrappers().items()} if state else {}
            plugin.uninstall()
        rows.append(row)
    return rows


def _reset(b: vb.Batch, kv: Any) -> None:
    b.kv_cache.copy_(kv)
    b.out.fill_(float("nan"))


def _same(a: Any, b: Any) -> bool:
    import torch

    return bool(torch.equal(a, b))


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# -- 2. timing workloads -----------------------------------------------------------------------------------

class _Capture:
    """Stands in for a kernel global while vLLM's wrapper runs once: records (grid, args, kwargs), launches."""

    def __init__(self, kernel: Any):
        self.kernel, self.calls = kernel, []

    def __getitem__(self, grid: Any) -> Callable:
        def launch(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((grid, args, kwargs))
            return self.kernel[grid](*args, **kwargs)
        return launch


def stock_kernels() -> dict[str, Any]:
    """vLLM's kernel globals as they are now (take this before anything replaces them)."""
    return {n: getattr(importlib.import_module(m), n) for n, m in KERNEL_MODULES.items()}


def set_kernels(kernels: dict[str, Any]) -> None:
    for n, k in kernels.items():
        setattr(importlib.import_module(KERNEL_MODULES[n]), n, k)


def captured_launches(batch: vb.Batch, stock: dict[str, Any]) -> dict[str, tuple]:
    """{kernel name: (kernel, grid, args, kwargs)} of one vLLM step on `batch` with the `stock` kernels."""
    captures = {n: _Capture(k) for n, k in stock.items()}
    try:
        set_kernels(captures)
        vb.step(batch)
    finally:
        set_kernels(stock)
    return {n: (stock[n], *c.calls[0]) for n, c in captures.items() if c.calls}


class BitwiseCase(Case):
    """A Case whose reference is the stock launch's output, compared bit for bit."""

    def check(self) -> None:
        for i, (got, want) in enumerate(zip(self.outputs, self.reference())):
            if not _same(vb.bits(got), want):
                raise AssertionError(f"{self.name} output {i}: not bitwise equal to stock vLLM")


def kernel_case(spec: vb.Spec, shape: vb.Shape, device: str, kernel: str, stock: dict[str, Any]) -> BitwiseCase:
    """One kernel launch exactly as vLLM's wrapper issued it on this batch (grid, keywords, options)."""
    b = vb.Batch(spec, shape, device)
    k, grid, args, kwargs = captured_launches(b, stock)[kernel]
    outputs = {"kernel_unified_attention": list(b.segm) if spec.is_3d(shape) else [b.out],
               "reduce_segments": [b.out], "reshape_and_cache_kernel_flash": [b.kv_cache]}[kernel]
    case = BitwiseCase(f"{kernel} {spec.name}", k, grid, args, kwargs, outputs, reference=lambda: [])
    case.poison()
    case.launch()
    _sync(device)
    want = [vb.bits(t).clone() for t in outputs]
    case.reference = lambda: want
    case.extra["batch"] = b  # keeps the batch's tensors alive
    return case


class StepCase:
    """One layer's vLLM step (cache write + unified_attention()) with a given set of kernel globals."""

    def __init__(self, spec: vb.Spec, shape: vb.Shape, device: str, stock: dict[str, Any]):
        self.name, self.extra = f"step {spec.name}", {}
        self.batch = vb.Batch(spec, shape, device)
        self.kv0 = self.batch.kv_cache.clone()
        self.kernels = stock
        set_kernels(stock)
        self.poison()
        vb.step(self.batch)
        _sync(device)
        self.want = [vb.bits(t).clone() for t in self.batch.outputs()]

    def launcher(self, kernels: dict[str, Any]) -> Callable[[], None]:
        mods = {n: importlib.import_module(m).__dict__ for n, m in KERNEL_MODULES.items()}
        batch, attention, cache_write = self.batch, *vb.wrappers()
        cw_args, attn_kwargs = batch.cache_write_args(), batch.attention_kwargs()

        def launch() -> None:
            for n, k in kernels.items():  # the globals vLLM's wrappers read: this variant's kernels
                mods[n][n] = k
            cache_write(*cw_args)
            attention(**attn_kwargs)
        return launch

    def poison(self) -> None:
        _reset(self.batch, self.kv0)

    def check(self) -> None:
        for got, want in zip(self.batch.outputs(), self.want):
            if not _same(vb.bits(got), want):
                raise AssertionError(f"{self.name}: not bitwise equal to stock vLLM")


def step_variants(case: StepCase, tables: list[tuple[str, dict]], groups: dict) -> list[Variant]:
    from .. import jitcache
    from ..vllm import policies

    out = [Variant("stock", "baseline", case.launcher(case.kernels))]
    for name, table in tables:
        wrapped = {n: jitcache(policy=policies.for_kernel(table, groups, n))(k) for n, k in case.kernels.items()}
        out.append(Variant(f"jitcache:{name}", "jitcache", case.launcher(wrapped),
                           policy=wrapped["kernel_unified_attention"].policy))
    return out


def kernel_variants(case: Any, kernel: str, tables: list[tuple[str, dict]], groups: dict, cuda: bool,
                    graph_launches: int) -> list[Variant]:
    from ..vllm import policies
    from .launch_variants import variants

    sweep = [policies.for_kernel(t, groups, kernel).to_dict() for _, t in tables]
    out = variants(case, sweep, cuda, graph_launches=graph_launches)
    out.append(gpu_time_variant(case, graph_launches) if cuda else Variant("gpu_time", "graph", skip="needs a CUDA GPU"))
    return out


def gpu_time_variant(case: Any, n: int) -> Variant:
    """GPU µs per launch: `n` stock launches captured in a CUDA graph, replays timed with CUDA events."""
    import torch

    try:
        case.launch()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(n):
                case.launch()
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        return Variant("gpu_time", "graph", skip=f"capture failed: {type(e).__name__}: {e}")

    def timer(launches: int) -> int:
        replays = max(1, launches // n)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        return int(start.elapsed_time(end) * 1e6 * launches / (replays * n))  # ms -> ns, per `launches`

    return Variant("gpu_time", "graph", graph.replay, check=False, timer=timer, hold=False, keep=graph)


def run(specs: list[vb.Spec], shape: vb.Shape, policy_file: str, policy_names: list[str], cfg: Config,
        cuda: bool, graph_launches: int, source: str, attributes: dict) -> list[dict]:
    """The whole experiment: the matrix check, then the timing sweep (one trace file)."""
    from ..vllm import policies
    from . import runner

    device = "cuda" if cuda else "cpu"
    loaded = [policies.table(Path(policy_file), n) for n in policy_names]
    tables, groups = [(n, t) for n, (t, _) in zip(policy_names, loaded)], loaded[0][1]
    stock = stock_kernels()
    matrix = check_matrix(policy_file, policy_names, specs, shape, device)
    workloads = []
    for s in specs:
        for kernel in KERNEL_MODULES:
            if kernel == "reduce_segments" and not s.is_3d(shape):
                continue
            workloads.append((f"{kernel} {s.name}", lambda s=s, k=kernel: kernel_case(s, shape, device, k, stock)))
        workloads.append((f"step {s.name}", lambda s=s: StepCase(s, shape, device, stock)))

    def make_variants(case: Any) -> list[Variant]:
        if isinstance(case, StepCase):
            return step_variants(case, tables, groups)
        kernel = case.name.split(" ")[0]
        return kernel_variants(case, kernel, tables, groups, cuda, graph_launches)

    attrs = {**attributes, "jitlab.vllm.source": source, "jitlab.vllm.shape": json.dumps(shape.__dict__),
             "jitlab.vllm.matrix": json.dumps(matrix), "jitlab.vllm.policies": json.dumps(policy_names),
             "jitlab.vllm.batches": json.dumps([s.name for s in specs])}
    try:
        results = runner.run_sweep("vllm_kernels", workloads, make_variants, cfg, attributes=attrs)
    finally:
        set_kernels(stock)  # step variants leave their kernels in vLLM's globals
    print_matrix(matrix, cfg.label)
    return results


# Measured on the H200 (traces/vllm_kernels-20261130T054639Z-b129a8.jsonl, --quick: 8 batches, 26 workloads,
# 3 policies, 200 launches x 5 repeats after 100 warm-up launches): 52 s in the run span, ~48 s after setup.
_S_PER_WORKLOAD_QUICK = 48.0 / 26
_QUICK_LAUNCHES = 200 * 5 + 100  # per variant: warm-up before the first repeat only


def estimate(specs: list[vb.Spec], shape: vb.Shape, cfg: Config, policies: int) -> float:
    """Rough H200 wall seconds of run(): setup, then per workload (each kernel launch of a batch, and its
    step) the quick run's time scaled by launches x repeats + warm-up and by the number of policies."""
    workloads = sum(3 + s.is_3d(shape) for s in specs)  # unified attention, cache write, step (+ reduce)
    scale = (cfg.launches * cfg.repeats + cfg.warmup) / _QUICK_LAUNCHES * (12 + policies) / (12 + 3)
    return 30.0 + workloads * _S_PER_WORKLOAD_QUICK * scale


def print_matrix(matrix: list[dict], label: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"policies vs unwrapped vLLM over the batch matrix (verify=1, two passes) {label}".strip())
    for col in ("policy", "batches", "bitwise equal", "hits", "verified hits", "entries", "error"):
        table.add_column(col)
    for r in matrix:
        c = r.get("counters", {}).get("kernel_unified_attention", {})
        table.add_row(r["policy"], str(r["batches"]), str(r["bitwise_equal"]), str(c.get("hit", "")),
                      str(c.get("verify", "")), str(c.get("entries", "")), (r.get("error") or "")[:80])
    Console().print(table)


def interpret_env() -> None:
    """CPU demo: vLLM's kernels must be decorated under the interpreter (set before they are imported)."""
    os.environ["TRITON_INTERPRET"] = "1"
