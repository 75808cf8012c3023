"""Configurations of the end-to-end decode experiment: model shapes, sweeps, trials, capture sizes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

EXPERIMENT = "e2e_decode"
DEFAULT_MODES = ("eager_stock", "eager_jitlab_safe", "eager_jitlab_tuned", "piecewise_stock", "piecewise_jitlab",
                 "full_graph")
REFERENCE_MODE = "eager_stock"
GRAPH_MODE = "full_graph"
CPU_LABEL = "CPU DEMO (tiny fp32 model, Triton interpreter, jitlab pass-through; no GPU numbers)"


@dataclass(frozen=True)
class Mode:
    name: str
    kind: str  # "eager" | "piecewise" | "full_graph"
    kernels: str  # key of make_kernel_sets()
    description: str
    decode_only: bool = False

    @property
    def needs_cuda(self) -> bool:
        return self.kind != "eager"

    @property
    def exact(self) -> bool:
        """Logits must equal eager stock bitwise (jitlab launches the binaries Triton compiled)."""
        return self.kind == "eager"


MODES = {m.name: m for m in (
    Mode("eager_stock", "eager", "stock", "every launch through Triton's JITFunction (vLLM --enforce-eager)"),
    Mode("eager_jitlab_safe", "eager", "jitlab_safe", "every Triton kernel under jitlab.jitcache (default safe policy)"),
    Mode("eager_jitlab_tuned", "eager", "jitlab_tuned",
         "jitcache with the tuned per-kernel policies (tuned_policies()), under jitlab.scope(model)"),
    Mode("piecewise_stock", "piecewise", "stock",
         "CUDA graphs of the non-attention pieces per padded size; KV write + attention eager, stock Triton"),
    Mode("piecewise_jitlab", "piecewise", "jitlab_tuned",
         "piecewise graphs; the eager KV write + attention through jitlab (tuned policies)"),
    Mode("piecewise_jitlab_safe", "piecewise", "jitlab_safe",
         "piecewise graphs; the eager KV write + attention through jitlab (safe policy)"),
    Mode("full_graph", "full_graph", "stock", "the whole model forward in one CUDA graph (upper bound)",
         decode_only=True),
)}


# ==================================================================================== configuration


@dataclass(frozen=True)
class ModelConfig:
    name: str = "llama-3.1-8b-shaped"
    hidden: int = 4096
    num_q_heads: int = 32
    num_kv_heads: int = 8
    head_size: int = 128
    intermediate: int = 14336
    vocab: int = 32000
    num_layers: int = 32
    eps: float = 1e-5
    rope_theta: float = 500000.0
    block_size: int = 16
    dtype: str = "bfloat16"
    seed: int = 0

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def q_size(self) -> int:
        return self.num_q_heads * self.head_size

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_size

    @property
    def qkv_size(self) -> int:
        return self.q_size + 2 * self.kv_size

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.torch_dtype).element_size()

    @property
    def block_bytes(self) -> int:
        """Bytes of one KV block of one layer (key + value)."""
        return 2 * self.block_size * self.kv_size * self.itemsize

    def layer_weight_bytes(self) -> int:
        h, i = self.hidden, self.intermediate
        return (h * self.qkv_size + self.q_size * h + h * 2 * i + i * h + 2 * h) * self.itemsize

    def weight_bytes(self, layers: int | None = None) -> int:
        n = self.num_layers if layers is None else layers
        return n * self.layer_weight_bytes() + 2 * self.vocab * self.hidden * self.itemsize


LLAMA_8B = ModelConfig()
TINY = ModelConfig(name="tiny-cpu", hidden=64, num_q_heads=4, num_kv_heads=2, head_size=16,
                   intermediate=128, vocab=128, num_layers=2, dtype="float32")

# vLLM's CUDA-graph capture sizes: [1, 2, 4] + range(8, 256, 8) + range(256, 513, 16)
CAPTURE_SIZES = (1, 2, 4) + tuple(range(8, 256, 8)) + tuple(range(256, 513, 16))


def pad_to_capture_size(t: int) -> int:
    for s in CAPTURE_SIZES:
        if s >= t:
            return s
    raise ValueError(f"{t} tokens exceed the largest capture size {CAPTURE_SIZES[-1]}")


# Mixed (continuous-batching) run: one cycle of step shapes. ("decode", k): the first k decode
# sequences, one token each; ("mixed", k): one prefill chunk plus k decodes; ("prefill", 0): a chunk
# alone. For Llama-8B (8 KV heads) 3D attention is chosen for decode-only steps with <= 16 seqs, so
# the cycle flips 2D/3D and covers num_seqs == 1, multiples of 16 and others in both modes:
#   decode 1 (3D, ==1), decode 16 (3D, %16), decode 7 (3D, other), mixed 15 (2D, 16 seqs),
#   prefill (2D, ==1, max_seqlen_q 64), decode 32 (2D, %16), mixed 4 (2D, 5 seqs), decode 20 (2D, other)
MIXED_PATTERN = (("decode", 1), ("decode", 16), ("decode", 7), ("mixed", 15), ("prefill", 0),
                 ("decode", 32), ("mixed", 4), ("decode", 20))
MIXED_DECODE_SEQS = 32
MIXED_CHUNK = 64
TINY_MIXED_PATTERN = (("decode", 1), ("mixed", 2), ("prefill", 0), ("decode", 3))
TINY_MIXED_DECODE_SEQS = 3
TINY_MIXED_CHUNK = 8


@dataclass(frozen=True)
class TrialConfig:
    """One point of the sweep: a decode batch (`kind="decode"`) or the mixed run (`kind="mixed"`)."""

    kind: str  # "decode" | "mixed"
    batch: int  # decode: sequences per step; mixed: decode sequences in the pool
    context: int  # tokens already in the KV cache per sequence at the start
    layers: int

    @property
    def name(self) -> str:
        if self.kind == "mixed":
            return f"mixed ctx={self.context} L={self.layers}"
        return f"B={self.batch} ctx={self.context} L={self.layers}"


@dataclass
class SweepConfig:
    model: ModelConfig = LLAMA_8B
    batches: tuple[int, ...] = (1, 4, 16, 64)
    contexts: tuple[int, ...] = (128, 1024, 8192)
    layers: tuple[int, ...] = (8, 32)
    extra: tuple[TrialConfig, ...] = ()  # configs outside the product (e.g. --quick's)
    product: bool = True  # include batches x contexts x layers
    mixed: bool = True
    mixed_layers: int = 32
    mixed_context: int = 1024
    modes: tuple[str, ...] = ()  # default: DEFAULT_MODES
    check_steps: int = 2  # decode steps compared with eager stock (mixed: one whole cycle)
    warmup: int = 5
    steps: int = 50  # measured decode steps
    gpu_steps: int = 5  # steps with the GPU held busy (pure device time; mixed: one cycle)
    mixed_warmup_cycles: int = 2
    mixed_cycles: int = 6  # measured cycles of the mixed run (8 steps each)
    trace: str = "sampled"
    sample_every: int = 100  # ~100 sampled launch spans per eager jitlab trial (50 steps x ~190 launches)
    trace_file: str | None = None
    cuda: bool = True
    sanity: bool = True  # eager stock vs a pure-torch reference on a small config first
    torch_profile: bool = False  # profile a few extra steps of the first config (decode.profile)
    profile_steps: int = 5  # steps per profiled mode
    label: str = ""
    quick: bool = False
    seed: int = 0
    attention: str = "jitlab"  # "vllm": KV write + attention through vLLM's own wrappers and kernels
    vllm_dir: str = ".vllm"  # vLLM's kernel files when vLLM is not installed (experiments/vllm_carry.sh)

    def configs(self) -> list[TrialConfig]:
        out: list[TrialConfig] = list(self.extra)
        if self.product:
            for layers in self.layers:
                for context in self.contexts:
                    for b in self.batches:
                        c = TrialConfig("decode", b, context, layers)
                        if c not in out:
                            out.append(c)
        if self.mixed:
            n = TINY_MIXED_DECODE_SEQS if self.model is TINY or not self.cuda else MIXED_DECODE_SEQS
            out.append(TrialConfig("mixed", n, self.mixed_context, self.mixed_layers))
        return out

    def mode_names(self) -> tuple[str, ...]:
        return self.modes or DEFAULT_MODES

    def steps_per_trial(self) -> int:
        return self.check_steps + self.warmup + self.steps + self.gpu_steps + 2


def gpu_sweep(quick: bool = False, **overrides: Any) -> SweepConfig:
    if quick:
        cfg = SweepConfig(extra=(TrialConfig("decode", 1, 1024, 8), TrialConfig("decode", 1, 1024, 32),
                                 TrialConfig("decode", 16, 1024, 32)),
                          product=False, mixed=False, mixed_layers=8, warmup=3, steps=20, gpu_steps=3,
                          mixed_warmup_cycles=1, mixed_cycles=2, quick=True)
    else:
        cfg = SweepConfig()
    return replace(cfg, **overrides)


def cpu_sweep(quick: bool = False, **overrides: Any) -> SweepConfig:
    """The CPU demonstration: tiny fp32 model under Triton's interpreter. Its 3D attention launch
    interprets 16 segments per program, so the configs stay small (~10 s for --quick)."""
    if quick:
        cfg = SweepConfig(model=TINY, extra=(TrialConfig("decode", 2, 20, 1),), product=False, mixed=False,
                          mixed_layers=1, mixed_context=20, check_steps=1, warmup=1, steps=2, gpu_steps=0,
                          mixed_warmup_cycles=1, mixed_cycles=1, cuda=False, label=CPU_LABEL, quick=True,
                          profile_steps=2)
    else:
        cfg = SweepConfig(model=TINY, batches=(1, 2), contexts=(20,), layers=(1, 2), mixed=True,
                          mixed_layers=1, mixed_context=20, check_steps=1, warmup=1, steps=3, gpu_steps=0,
                          mixed_warmup_cycles=1, mixed_cycles=1, cuda=False, label=CPU_LABEL, profile_steps=2)
    # demo records stay out of traces/, which holds real runs only (as in the launch-overhead demo)
    cfg = replace(cfg, trace_file="traces/cpu-demo/{experiment}-{run_id}.jsonl")
    return replace(cfg, **{k: v for k, v in overrides.items() if not (k == "trace_file" and v is None)})

