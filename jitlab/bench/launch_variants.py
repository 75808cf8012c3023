"""The variants of the launch-overhead experiment: baselines, jitcache policies, floors, CUDA graph.

Every run includes the baselines (Python no-op, stock Triton, the stored compiled kernel called
directly, the cuda-python and C floors, CUDA-graph replay) next to each jitcache policy of the
sweep. On a machine without a CUDA GPU the workloads run under Triton's interpreter and jitlab
passes through: a demonstration of the flow, labelled as such, with no GPU numbers.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from .. import kernels
from ..policy import policy_of
from .runner import Config, Variant


def cpu_demo_config(cfg: Config) -> Config:
    cfg.launches, cfg.repeats, cfg.warmup = 3, 3, 1
    cfg.label = "CPU DEMO (Triton interpreter, jitlab pass-through; real numbers need a CUDA GPU)"
    if cfg.trace_file is None:  # demo records stay out of traces/, which holds real runs only
        cfg.trace_file = "traces/cpu-demo/{experiment}-{run_id}.jsonl"
    return cfg


def workloads(names: Iterable[str], cuda: bool) -> list[tuple[str, Callable[[], Any]]]:
    """(name, build) per workload of `jitlab.kernels.WORKLOADS`; on CPU the kernels are interpreted."""
    if cuda:
        return [(name, lambda name=name: kernels.make_case(name, cuda=True)) for name in names]
    return [(name, lambda name=name: _interpreted_case(kernels.make_case(name, cuda=False))) for name in names]


def _interpreted_case(case: Any) -> Any:
    from .._triton.interpreter import interpreted

    case.kernel = interpreted(case.kernel)
    if "reduce" in case.extra:
        case.extra["reduce"].kernel = interpreted(case.extra["reduce"].kernel)
    return case


def variants(case: Any, sweep: list[dict], cuda: bool, trace_levels: Iterable[str] = (),
             graph_launches: int = 64, parts_of: str | None = "safe") -> list[Variant]:
    """Every variant of one workload; `parts_of`: the sweep policy whose hit is also timed part by part
    (jitlab.bench.launch_parts; GPU only), None for none."""
    from .. import jitcache
    from .._triton import native

    k, g, a, kw = case.kernel, case.grid, case.args, case.kwargs
    no_gpu = None if cuda else "needs a CUDA GPU"
    call = _python_call(case)
    # The dispatcher is built once in the background; jitcache variants are timed with it in place.
    dispatch, why = native.DISPATCH.get(wait=True)
    out = [Variant("python_nop", "baseline", lambda: None, check=False),
           Variant("python_call", "baseline", lambda: call[g](*a, **kw), check=False)]
    if dispatch is not None:  # a C no-op called like the kernel: with the C floor, the ideal of a launch
        c_call = _CCall(dispatch.noop)
        out.append(Variant("c_call", "baseline", lambda: c_call[g](*a, **kw), check=False))
    else:
        out.append(Variant("c_call", "baseline", skip=why))
    out.append(Variant("triton", "baseline", lambda: k[g](*a, **kw)))
    out.append(_compiled(case) if cuda else Variant("compiled_run", "baseline", skip=no_gpu))
    for table in sweep:
        policy = policy_of(table, case)
        jk = jitcache(policy=policy)(k)
        out.append(Variant(f"jitcache:{policy.name}", "jitcache", lambda jk=jk: jk[g](*a, **kw), policy=policy,
                           kernel=jk, after_lock=jk.lock if policy.static else None))
    safe = next((v for v in out if v.kind == "jitcache" and v.policy.name == "safe"), None)
    if safe is not None:  # the generated Python hit path alone (JITLAB_LAUNCHER=python): the reference
        py = jitcache(policy=safe.policy)(k)
        if py.passthrough_reason is None:
            py_hit = _CCall(py.python_hit_path())
            out.append(Variant("jitcache:safe python-path", "jitcache", lambda: py_hit[g](*a, **kw),
                               policy=safe.policy, kernel=py))
        else:
            out.append(Variant("jitcache:safe python-path", "jitcache", skip=py.passthrough_reason))
        if callable(g):  # the same launches with the grid evaluated once: what the callable grid costs
            out += _tuple_grid(case, safe.policy)
    parted = next((v for v in out if v.kind == "jitcache" and v.policy.name == parts_of), None)
    if cuda and parted is not None:
        from . import launch_parts

        out += launch_parts.variants(case, parted.policy)
        out += launch_parts.ab_variants(case, parted.policy)
        out.append(launch_parts.loop_variant(case))
    for level in trace_levels if safe is not None else ():
        out.append(Variant(f"jitcache:safe trace={level}", "jitcache", safe.launch, policy=safe.policy,
                           kernel=None, check=False, trace_level=level))
    if cuda:
        from . import floors, floors_hip

        out += (floors_hip if floors_hip.active() else floors).variants(case)  # HIP: hipModuleLaunchKernel floor
        out.append(_graph(case, graph_launches))
        out += _first_launch(case)
    else:
        out += [Variant(n, "floor", skip=no_gpu) for n in ("cuda_python_floor", "c_floor")]
        out.append(Variant("cuda_graph", "graph", skip=no_gpu))
    return out


class _PythonCall:
    """`obj[grid](*args, **kwargs)` into a no-op with the kernel's exact signature: what CPython alone
    charges for this call shape (indexing, binding every keyword), the floor of any Python launcher."""

    def __init__(self, kernel: Any):
        import functools
        import inspect

        from .._triton.introspect import signature

        parts, ns, kw_only = [], {}, False
        for p in signature(kernel).parameters.values():  # Triton kernels: positional-or-keyword, keyword-only
            if p.kind is inspect.Parameter.KEYWORD_ONLY and not kw_only:
                parts.append("*")
                kw_only = True
            if p.default is inspect.Parameter.empty:
                parts.append(p.name)
            else:
                ns[f"_d_{p.name}"] = p.default
                parts.append(f"{p.name}=_d_{p.name}")
        sig = ", ".join(parts + ["**options"])  # launch options (num_warps, ...) as Triton accepts them
        exec(f"def noop(grid, {sig}):\n    return None\n", ns)  # noqa: S102
        self._noop, self._partial = ns["noop"], functools.partial

    def __getitem__(self, grid: Any) -> Any:
        return self._partial(self._noop, grid)


class _CCall:
    """`obj[grid](*args, **kwargs)` -> `fn(grid, *args, **kwargs)`, the call shape of a launch."""

    def __init__(self, fn: Any):
        import functools

        self._fn, self._partial = fn, functools.partial

    def __getitem__(self, grid: Any) -> Any:
        return self._partial(self._fn, grid)


def _python_call(case: Any) -> _PythonCall:
    return _PythonCall(case.kernel)


TUPLE_GRID = "jitcache:safe tuple-grid"
CONST_GRID = "jitcache:safe lambda-grid reading nothing"


def _tuple_grid(case: Any, policy: Any) -> list[Variant]:
    """jitcache:safe launched with the tuple its callable grid returns for these arguments (Triton's dict
    of the bound arguments), and with a lambda returning that tuple, beside the callable-grid row: tuple to
    constant lambda is what calling a grid costs, constant lambda to the workload's grid what its own
    code costs (vLLM's grids call triton.cdiv, a ConstexprFunction in Triton 3.6)."""
    from .. import jitcache
    from .._triton.introspect import signature

    sig = signature(case.kernel)  # launch options (num_warps, ...) are not in Triton's dict
    bound = sig.bind(*case.args, **{k: v for k, v in case.kwargs.items() if k in sig.parameters})
    bound.apply_defaults()
    grid = tuple(case.grid(dict(bound.arguments)))
    a, kw = case.args, case.kwargs
    out = []
    for name, g in ((TUPLE_GRID, grid), (CONST_GRID, lambda meta: grid)):
        jk = jitcache(policy=policy)(case.kernel)
        out.append(Variant(name, "jitcache", lambda jk=jk, g=g: jk[g](*a, **kw), policy=policy, kernel=jk))
    return out


def _first_launch(case: Any) -> list[Variant]:
    """The first launch of a fresh kernel object (in-memory caches cold, Triton's disk cache warm:
    what a new process pays), stock Triton vs jitcache; each timed launch ends with a sync."""
    import time

    import torch
    import triton

    from .. import jitcache

    from .._triton.introspect import python_fn

    raw = python_fn(case.kernel)

    def make_timer(wrap: Callable[[Any], Any]) -> Callable[[int], int]:
        def timer(n: int) -> int:
            k = wrap(triton.jit(raw))  # decoration (source parsing) is not part of the launch
            torch.cuda.synchronize()
            t0 = time.perf_counter_ns()
            k[case.grid](*case.args, **case.kwargs)
            torch.cuda.synchronize()
            return (time.perf_counter_ns() - t0) * n  # the runner divides by n
        return timer

    out = []
    for name, wrap in (("first_launch:triton", lambda k: k), ("first_launch:jitcache", jitcache)):
        timer = make_timer(wrap)
        out.append(Variant(name, "first", lambda timer=timer: timer(1), check=False, timer=timer, hold=False))
    return out


def _compiled(case: Any) -> Variant:
    from .._triton import compiled_launcher

    try:
        return Variant("compiled_run", "baseline", compiled_launcher(case.kernel, case.grid, case.args, case.kwargs))
    except Exception as e:  # noqa: BLE001
        return Variant("compiled_run", "baseline", skip=f"{type(e).__name__}: {e}")


def _graph(case: Any, n: int) -> Variant:
    """Stock Triton launches captured once in a CUDA graph; host µs per launch of a replay."""
    import torch

    def launch_all() -> None:
        for _ in range(n):
            case.launch()

    try:
        case.launch()  # compile outside capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            launch_all()
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        return Variant("cuda_graph", "graph", skip=f"capture failed: {type(e).__name__}: {e}")
    return Variant("cuda_graph", "graph", graph.replay, launches_per_call=n)
