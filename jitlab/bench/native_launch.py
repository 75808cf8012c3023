"""Host µs per launch of one loaded kernel: Triton's launcher vs jitlab's native launcher (CUDA only).

    python -m jitlab.bench.native_launch

Two workloads of `jitlab.kernels`: `many_args` (13 pointers + 13 i32, the 26-argument case of the
launch-overhead notes) and `tiny` (3 arguments). Each is compiled and loaded once through Triton, then launched by
`compiled_run` (Triton's `CompiledKernel.run`, stream and hooks read per launch, as the launch-overhead
experiment's baseline of that name) and by the native launcher (`jitlab._triton.native`) given tensors,
given int addresses, and with every argument frozen into its parameter template (about the
`cuLaunchKernel` floor). Timing is the bench's (`timing.time_host`: GPU held busy, median over repeats).
This is a measurement, not a test: the bitwise checks of the native launcher are tests/gpu/test_native_gpu.py.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from ..kernels.case import Case


def launchers(case: Case) -> dict[str, Callable[[], None]]:
    """name -> a no-argument launch of `case`'s kernel (each launching the same loaded binary)."""
    import torch

    from .._triton import compiled_launcher, native
    from .floors import loaded

    compiled, vals, (g0, g1, g2) = loaded(case)
    as_ints = tuple(v.data_ptr() if isinstance(v, torch.Tensor) else v for v in vals)
    device = torch.cuda.current_device()
    stream = torch.cuda.current_stream().cuda_stream
    out: dict[str, Callable[[], None]] = {"compiled_run": compiled_launcher(case.kernel, case.grid, case.args,
                                                                             case.kwargs)}
    for name, frozen in (("native (tensors)", {}), ("native (all frozen, ~cuLaunchKernel floor)",
                                                    dict(enumerate(as_ints)))):
        launch, why = native.make_launch(compiled, frozen, device=device)
        if launch is None:
            raise RuntimeError(why)
        out[name] = lambda launch=launch: launch(g0, g1, g2, stream, vals)
        if not frozen:
            out["native (int addresses)"] = lambda launch=launch: launch(g0, g1, g2, stream, as_ints)
    return out


def run(launches: int = 400, repeats: int = 15, warmup: int = 100) -> list[dict[str, Any]]:
    """Check each launcher's output once, then time it; one row per (kernel, launcher)."""
    from .. import kernels
    from .timing import Device, cuda_available, time_host

    if not cuda_available():
        raise SystemExit("jitlab.bench.native_launch needs a CUDA GPU")
    device = Device(True)
    rows = []
    for case in (kernels.make_case("many_args", cuda=True), kernels.make_case("tiny", cuda=True)):
        for name, launch in launchers(case).items():
            case.poison()
            launch()
            device.sync()
            case.check()
            t = time_host(launch, device, launches=launches, repeats=repeats, warmup=warmup)
            rows.append({"kernel": case.name, "launcher": name, **t.stats()})
    return rows


def main(argv: list[str] | None = None) -> None:
    from .fmt import num

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=15, help="repeats per launcher (median, p10, p90 over them)")
    a = p.parse_args(argv)
    for r in run(repeats=a.repeats):
        print(f"{r['kernel']:10} {r['launcher']:44} {num(r['median_us'])} µs/launch "
              f"(p10 {num(r['p10_us'])}, p90 {num(r['p90_us'])})")


if __name__ == "__main__":
    main()
