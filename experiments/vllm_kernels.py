"""vLLM's own Triton attention kernels through vLLM's own wrappers: each jitlab policy bitwise against
unwrapped vLLM over a batch matrix, then host and GPU µs per launch.

    experiments/vllm_carry.sh                    # once: vLLM 0.26.0's kernel files into .vllm/ (no vLLM install)
    python -m experiments.vllm_kernels --estimate            # the batches and the H200 time estimate, run nothing
    python -m experiments.vllm_kernels --kinds decode        # the default matrix in two runs of < 8 min each
    python -m experiments.vllm_kernels --kinds prefill,mixed #   (the whole default matrix: ~11 min on the H200)
    python -m experiments.vllm_kernels --quick   # 8 batches, 5 repeats (~1.5 min)
    python -m experiments.vllm_kernels --policies my.toml --policy-names safe,mine

Without a CUDA GPU it runs a clearly labelled CPU demonstration (Triton's interpreter, jitlab in
pass-through, a small layer shape) so the flow is visible; real numbers need a CUDA GPU. The run is
recorded as traces/vllm_kernels-<run_id>.jsonl (the matrix check in the run span's attributes).
"""

from __future__ import annotations

import argparse

# Defaults (a --quick run overrides num_seqs/kinds/launches/repeats).
NUM_SEQS = (1, 2, 7, 16, 17, 64)  # ==1, small, odd, the 3D threshold of 8 KV heads (128 // 8), past it, many
QUICK_NUM_SEQS = (1, 16, 17)
KINDS = ("decode", "prefill", "mixed")
QUICK_KINDS = ("decode", "mixed")
MODES = ("2d", "3d")
POLICY_NAMES = ("safe", "tuned", "uniform-layers")  # from the policy file
LAUNCHES, REPEATS, WARMUP = 400, 15, 100
GRAPH_LAUNCHES = 64
CPU_DEMO_SPECS = (("mixed", 3, "2d"), ("decode", 2, "3d"))  # the interpreter takes ~0.1 s per launch
VLLM_DIR = ".vllm"  # where experiments/vllm_carry.sh puts vLLM's kernel files


def parse() -> argparse.Namespace:
    from jitlab.vllm.policies import SHIPPED

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer batches and repeats (< 2 min on the H200)")
    p.add_argument("--kinds", help=f"comma-separated batch kinds of {KINDS} (default: all; --quick: decode,mixed)")
    p.add_argument("--num-seqs", help=f"comma-separated num_seqs (default {','.join(map(str, NUM_SEQS))})")
    p.add_argument("--modes", help=f"comma-separated of {MODES} (default both)")
    p.add_argument("--estimate", action="store_true", help="print the batches and the H200 time estimate, then exit")
    p.add_argument("--policies", default=str(SHIPPED), help="TOML file of [[policy]] tables (default: the plugin's)")
    p.add_argument("--policy-names", default=",".join(POLICY_NAMES), help="comma-separated policies of that file")
    p.add_argument("--vllm-dir", default=VLLM_DIR, help="vLLM's kernel files, when vLLM is not installed")
    p.add_argument("--trace", default="sampled", choices=("off", "summary", "sampled", "full"))
    p.add_argument("--trace-file", default=None, help="default traces/vllm_kernels-<run_id>.jsonl")
    return p.parse_args()


def _pick(value, default: tuple, allowed: tuple | None = None, cast=str) -> tuple:
    if not value:
        return default
    out = tuple(cast(x.strip()) for x in value.split(",") if x.strip())
    bad = [x for x in out if allowed is not None and x not in allowed]
    if bad or not out:
        raise SystemExit(f"vllm_kernels: {value!r}: choose from {allowed}")
    return out


def main() -> None:
    a = parse()
    from jitlab.bench import launch_variants, runner, vllm_batches, vllm_kernels
    from jitlab.bench.timing import cuda_available

    cuda = cuda_available() or a.estimate  # the estimate is the H200's
    shape = vllm_batches.Shape() if cuda else vllm_batches.CPU_SHAPE
    num_seqs = _pick(a.num_seqs, QUICK_NUM_SEQS if a.quick else NUM_SEQS, cast=int)
    kinds = _pick(a.kinds, QUICK_KINDS if a.quick else KINDS, KINDS)
    specs = vllm_batches.matrix(num_seqs, kinds, _pick(a.modes, MODES, MODES), shape) if cuda else \
        [vllm_batches.Spec(n, kind, mode) for kind, n, mode in CPU_DEMO_SPECS]
    cfg = runner.Config(launches=LAUNCHES // (2 if a.quick else 1), repeats=5 if a.quick else REPEATS,
                        warmup=WARMUP, trace=a.trace, trace_file=a.trace_file, cuda=cuda)
    if a.estimate:
        print("\n".join(s.name for s in specs))
        est = vllm_kernels.estimate(specs, shape, cfg, len(a.policy_names.split(",")))
        print(f"{len(specs)} batches; estimated {est / 60:.1f} min on the H200 (+ Triton compiles on a cold cache)")
        return
    if not cuda:
        vllm_kernels.interpret_env()
    source = vllm_kernels.load_vllm(a.vllm_dir)
    if not cuda:
        cfg = launch_variants.cpu_demo_config(cfg)
    with (vllm_kernels.cpu_demo_patches() if not cuda else vllm_kernels.contextlib.nullcontext()):
        vllm_kernels.run(specs, shape, a.policies, a.policy_names.split(","), cfg, cuda, GRAPH_LAUNCHES, source,
                         attributes={"jitlab.quick": a.quick, "jitlab.policies_file": a.policies})


if __name__ == "__main__":
    from jitlab._extras import one_line

    with one_line("vllm_kernels"):  # without the [lab] extra: one line naming it, no traceback
        from jitlab.bench.runner import cli
    cli(main, "vllm_kernels")
