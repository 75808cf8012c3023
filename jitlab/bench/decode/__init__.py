"""End-to-end decode: a mini-vLLM decode loop that turns launch overhead into tokens/s.

A Llama-3.1-8B-shaped decoder (hidden 4096, 32 query / 8 KV heads, head 128, intermediate 14336,
vocab 32000, bf16 random weights made on the GPU) runs vLLM's launch pattern per layer:

    RMSNorm (Triton, fused residual add) -> QKV GEMM (torch) -> RoPE (Triton) -> KV-cache write
    (Triton) -> unified paged attention (Triton, 2D, or 3D + reduce_segments, chosen as vLLM
    does) -> O-proj (torch) -> RMSNorm (Triton, fused residual) -> gate_up GEMM (torch) ->
    SiLU-and-mul (Triton) -> down GEMM (torch)

then a final norm, the logits of each sequence's last token (LM head) and a greedy argmax that is
read back to the host each step (the scheduler needs the tokens; vLLM syncs there too).

Inputs flow as in vLLM's model runner: block table, sequence lengths, query start offsets, slot
mapping, positions and token ids are computed on the host (numpy, vectorised) into pinned staging
buffers and copied into *persistent* device buffers (same addresses every step, so CUDA graphs and
jitlab's frozen arguments see stable pointers). Context is simulated: the paged KV cache
`[num_blocks, 2, 16, 8, 128]` per layer is filled with random values, sequences start with
`seq_len = context`, and each decode step appends one token per sequence through a trivial block
allocator. Activations live in static buffers sliced to the step's token count, in every mode, so
all modes run the same kernels in the same order (their logits can be compared bitwise).

Modes (`MODES`): eager with stock Triton, eager with jitlab (safe policy, and a tuned policy per
kernel whose relaxations hold in this loop: `jitlab/bench/decode/tuned_policies.toml`), piecewise CUDA graphs
(everything but the KV write and attention captured per padded token count; those two launched
eagerly between replays, as vLLM's PIECEWISE mode), and a full CUDA graph of the model forward
(upper bound; decode only).

Measurement per trial (config x mode): correctness first (the mode's logits for the first steps
against eager stock Triton; bitwise where the same kernels run), then warmup, then measured steps
(wall, host time until the last launch returns, CUDA-event span), then a few steps with the GPU
held busy so the CUDA events give the pure device time per step. Launches are counted per step
(host-issued kernels, copies and graph replays, plus kernels inside graphs), and jitlab's records
(sampled) give per-launch argument-update and launcher-call times. Everything goes into the trial
spans of a `jitlab.telemetry.Run`; `experiments/e2e_decode.py` is the thin script over this module.

Without a CUDA GPU everything runs as a labelled CPU demonstration: a tiny fp32 model, kernels under
Triton's interpreter (`jitlab._triton.interpreter`), jitlab in pass-through, graph modes skipped.
"""

from __future__ import annotations

# The experiment in modules: config (shapes, sweeps, modes), model (weights, KV bookkeeping, schedules),
# ops (kernel sets and policies per mode), engine (buffers, forward, graphs), runner (trials), results
# (derived metrics, tables), profile (--torch-profile: a torch.profiler window merged with the trace).
# The package exports what experiments/e2e_decode.py uses; tests and notebooks import the modules.
from .config import MODES, cpu_sweep, gpu_sweep
from .results import estimate
from .runner import run_experiment

__all__ = ["MODES", "cpu_sweep", "estimate", "gpu_sweep", "run_experiment"]
