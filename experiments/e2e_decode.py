"""End to end: a mini-vLLM decode loop (Llama-3.1-8B shapes, random weights) that turns launch overhead into tokens/s.

    python -m experiments.e2e_decode                 # default sweep (H200: < 8 min)
    python -m experiments.e2e_decode --quick         # B=1 (8 and 32 layers) and B=16 at context 1024 (< 1 min)
    python -m experiments.e2e_decode --batches 1,4 --contexts 1024 --layers 32 --no-mixed
    python -m experiments.e2e_decode --estimate      # print the plan and the time estimate, run nothing
    python -m experiments.e2e_decode --attention vllm --vllm-dir .vllm   # KV write + attention: vLLM 0.26's own
    python -m experiments.e2e_decode --quick --torch-profile   # + torch.profiler window, merged Perfetto timeline

Modes: eager_stock, eager_jitlab_safe, eager_jitlab_tuned, piecewise_stock, piecewise_jitlab, full_graph
(also available: piecewise_jitlab_safe). Sweep: batch {1, 4, 16, 64} x context {128, 1024, 8192} x layers
{8, 32}, plus a mixed prefill+decode run. Every mode's logits are checked against eager stock Triton
before timing. The run is recorded as traces/e2e_decode-<run_id>.jsonl (OTLP JSON lines): one trial span
per (config, mode) carrying the metrics, step spans beneath, sampled jitlab launch spans beneath those.
With --torch-profile a few more steps of the first config are profiled (jitlab.bench.decode.profile) and
merged with the trace into traces/e2e_decode-<run_id>.merged.chrome.json (torch's own trace beside it).

Without a CUDA GPU it runs a clearly labelled CPU demonstration (tiny fp32 model, Triton's interpreter,
jitlab in pass-through, graph modes skipped) so the whole flow is visible; it reports no GPU numbers.
"""

from __future__ import annotations

import argparse

ATTENTION = "jitlab"  # or "vllm": each layer's KV write + attention through vLLM's unified_attention() etc.
VLLM_DIR = ".vllm"  # vLLM's kernel files when vLLM is not installed (experiments/vllm_carry.sh)


def _ints(s: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {s!r}")
    return out


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few configs (< 1 min on the H200)")
    p.add_argument("--batches", type=_ints, help="comma-separated batch sizes (default 1,4,16,64)")
    p.add_argument("--contexts", type=_ints, help="comma-separated context lengths (default 128,1024,8192)")
    p.add_argument("--layers", type=_ints, help="comma-separated layer counts (default 8,32)")
    p.add_argument("--modes", help="comma-separated modes (default: all but piecewise_jitlab_safe)")
    mx = p.add_mutually_exclusive_group()
    mx.add_argument("--mixed", dest="mixed", action="store_true", default=None, help="include the mixed run")
    mx.add_argument("--no-mixed", dest="mixed", action="store_false", help="skip the mixed run")
    p.add_argument("--mixed-only", action="store_true", help="only the mixed run")
    p.add_argument("--mixed-layers", type=int, help="layers of the mixed run (default 32; --quick 8)")
    p.add_argument("--warmup", type=int, help="warmup steps per trial")
    p.add_argument("--steps", type=int, help="measured steps per decode trial")
    p.add_argument("--gpu-steps", type=int, help="steps with the GPU held busy (device time) per trial")
    p.add_argument("--trace", default=None, choices=("off", "summary", "sampled", "full"),
                   help="trace level of the run (default: JITLAB_TRACE, else sampled)")
    p.add_argument("--sample-every", type=int, default=None, help="record every Nth jitlab hit (default 100)")
    p.add_argument("--trace-file", default=None,
                   help="default: JITLAB_TRACE_FILE, else traces/e2e_decode-<run_id>.jsonl")
    p.add_argument("--no-sanity", action="store_true", help="skip the eager-vs-pure-torch check on a small config")
    p.add_argument("--torch-profile", action="store_true",
                   help="also profile a few steps of eager_stock and eager_jitlab_safe (first config) with "
                        "torch.profiler: <trace stem>.torch_profile.json and, merged with the trace, "
                        "<trace stem>.merged.chrome.json (ui.perfetto.dev)")
    p.add_argument("--cpu", action="store_true", help="run the CPU demonstration even if a GPU is present")
    p.add_argument("--estimate", action="store_true", help="print the plan and time estimate, then exit")
    p.add_argument("--attention", choices=("jitlab", "vllm"), default=ATTENTION,
                   help="KV write + attention: jitlab's kernels, or vLLM's wrappers and kernels (jitlab modes "
                        "wrap them through the jitlab.vllm plugin)")
    p.add_argument("--vllm-dir", default=VLLM_DIR, help="vLLM's kernel files, when vLLM is not installed")
    a = p.parse_args(argv)
    from jitlab.bench.runner import trace_flags

    a.trace, a.trace_file = trace_flags(a.trace, a.trace_file)
    if a.torch_profile and a.trace == "off":
        p.error("--torch-profile merges the profile with the run's trace: it needs tracing on (not --trace off)")
    return a


def sweep_from_args(a: argparse.Namespace):
    from jitlab.bench import decode
    from jitlab.bench.timing import cuda_available

    cuda = not a.cpu and cuda_available()
    build = decode.gpu_sweep if cuda else decode.cpu_sweep
    over: dict = {}
    explicit = a.batches or a.contexts or a.layers
    base = build(quick=a.quick)
    if explicit:
        over.update(batches=a.batches or base.batches, contexts=a.contexts or base.contexts,
                    layers=a.layers or base.layers, product=True, extra=())
        if a.quick:  # --quick with explicit lists: the product of the given lists, quick step counts
            over.update(batches=a.batches or (1, 16), contexts=a.contexts or (1024,), layers=a.layers or (32,))
    if a.mixed is not None:
        over["mixed"] = a.mixed
    if a.mixed_only:
        over.update(mixed=True, product=False, extra=())
    if a.mixed_layers:
        over["mixed_layers"] = a.mixed_layers
    if a.modes:
        names = tuple(m.strip() for m in a.modes.split(",") if m.strip())
        bad = [m for m in names if m not in decode.MODES]
        if bad:
            raise SystemExit(f"unknown mode(s) {bad}; choose from {sorted(decode.MODES)}")
        over["modes"] = names
    for k in ("warmup", "steps", "gpu_steps", "trace", "sample_every", "trace_file"):
        v = getattr(a, k)
        if v is not None:
            over[k] = v
    if a.no_sanity:
        over["sanity"] = False
    over.update(attention=a.attention, vllm_dir=a.vllm_dir)
    if a.torch_profile:
        over["torch_profile"] = True
    return build(quick=a.quick, **over)


def main(argv=None) -> None:
    a = parse(argv)
    from jitlab.bench import decode

    sweep = sweep_from_args(a)
    if a.estimate:
        est = decode.estimate(sweep)
        for c in sweep.configs():
            print(c.name)
        print(f"modes: {', '.join(sweep.mode_names())}; attention: {sweep.attention}")
        print(f"estimated {est['total_s'] / 60:.1f} min{est['note']}")
        return
    decode.run_experiment(sweep)


if __name__ == "__main__":
    from jitlab._extras import one_line

    with one_line("e2e_decode"):  # without the [lab] extra: one line naming it, no traceback
        from jitlab.bench.runner import cli
    cli(main, "e2e_decode")
