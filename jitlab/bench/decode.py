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
kernel whose relaxations hold in this loop: `tuned_policies`), piecewise CUDA graphs (everything
but the KV write and attention captured per padded token count; those two launched eagerly
between replays, as vLLM's PIECEWISE mode), and a full CUDA graph of the model forward (upper
bound; decode only).

Measurement per trial (config x mode): correctness first (the mode's logits for the first steps
against eager stock Triton; bitwise where the same kernels run), then warmup, then measured steps
(wall, host time until the last launch returns, CUDA-event span), then a few steps with the GPU
held busy so the CUDA events give the pure device time per step. Launches are counted per step
(host-issued kernels, copies and graph replays, plus kernels inside graphs), and jitlab's records
(sampled) give per-launch argument-update and launcher-call times. Everything goes into the trial
spans of a `jitlab.telemetry.Run`; `experiments/e2e_decode.py` is the thin script over this module.

Without a CUDA GPU everything runs as a labelled CPU demonstration: a tiny fp32 model, kernels under
Triton's interpreter (`jitlab.kernels.interpret`), jitlab in pass-through, graph modes skipped.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import triton

from ..kernels import cache_write as _cw
from ..kernels import layers as _layers
from ..kernels import unified_attention as _ua
from ..policy import Policy

_now = time.perf_counter_ns

EXPERIMENT = "e2e_decode"
CPU_LABEL = "CPU DEMO (tiny fp32 model, Triton interpreter, jitlab pass-through; no GPU numbers)"


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
    label: str = ""
    quick: bool = False
    seed: int = 0

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
                          mixed_warmup_cycles=1, mixed_cycles=1, cuda=False, label=CPU_LABEL, quick=True)
    else:
        cfg = SweepConfig(model=TINY, batches=(1, 2), contexts=(20,), layers=(1, 2), mixed=True,
                          mixed_layers=1, mixed_context=20, check_steps=1, warmup=1, steps=3, gpu_steps=0,
                          mixed_warmup_cycles=1, mixed_cycles=1, cuda=False, label=CPU_LABEL)
    return replace(cfg, **overrides)


# ============================================================================================= model


@dataclass
class LayerWeights:
    in_norm: torch.Tensor
    qkv: torch.Tensor  # [qkv_size, hidden] (nn.Linear layout); the GEMMs use the .t() views below
    o: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor
    k_scale: torch.Tensor  # per-layer [1] fp32 (vLLM's layer._k_scale: a different pointer per layer)
    v_scale: torch.Tensor
    qkv_t: torch.Tensor = None
    o_t: torch.Tensor = None
    gate_up_t: torch.Tensor = None
    down_t: torch.Tensor = None

    def __post_init__(self) -> None:
        self.qkv_t, self.o_t = self.qkv.t(), self.o.t()
        self.gate_up_t, self.down_t = self.gate_up.t(), self.down.t()


class Model:
    """Random weights created on `device` (seeded), scaled by 1/sqrt(fan_in) so activations stay O(1)."""

    def __init__(self, cfg: ModelConfig, device: Any, num_layers: int | None = None, max_position: int = 8192):
        self.cfg = cfg
        self.device = torch.device(device)
        self.num_layers = cfg.num_layers if num_layers is None else num_layers
        dt = cfg.torch_dtype
        g = torch.Generator(device=self.device).manual_seed(cfg.seed)
        h, i = cfg.hidden, cfg.intermediate

        def randn(*shape: int, scale: float) -> torch.Tensor:
            t = torch.randn(shape, generator=g, device=self.device, dtype=dt)
            return t.mul_(scale)

        def norm_w() -> torch.Tensor:
            return (1.0 + 0.05 * torch.randn(h, generator=g, device=self.device)).to(dt)

        self.embed = randn(cfg.vocab, h, scale=1.0)
        self.layers = []
        for _ in range(self.num_layers):
            self.layers.append(LayerWeights(
                in_norm=norm_w(), qkv=randn(cfg.qkv_size, h, scale=h ** -0.5),
                o=randn(h, cfg.q_size, scale=cfg.q_size ** -0.5), post_norm=norm_w(),
                gate_up=randn(2 * i, h, scale=h ** -0.5), down=randn(h, i, scale=i ** -0.5),
                k_scale=torch.ones(1, dtype=torch.float32, device=self.device),
                v_scale=torch.ones(1, dtype=torch.float32, device=self.device)))
        self.final_norm = norm_w()
        self.lm_head = randn(cfg.vocab, h, scale=h ** -0.5)
        self.lm_head_t = self.lm_head.t()
        # one cos/sin table for all layers (fp32; the kernel computes in fp32)
        self.cos_sin = _layers.rope_cos_sin_cache(max_position, cfg.head_size, base=cfg.rope_theta,
                                                  device=self.device)
        self.scale = 1.0 / math.sqrt(cfg.head_size)


# ==================================================================================== KV cache, blocks


class BlockAllocator:
    """A free list of block ids (shuffled once, so sequences are scattered over the pool)."""

    def __init__(self, num_blocks: int, seed: int = 0):
        self.num_blocks = num_blocks
        self._free = [int(b) for b in np.random.default_rng(seed).permutation(num_blocks)]

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise MemoryError(f"KV block pool exhausted: need {n}, {len(self._free)} of {self.num_blocks} free")
        out = self._free[len(self._free) - n:]
        del self._free[len(self._free) - n:]
        return out

    def free(self, blocks: Iterable[int]) -> None:
        self._free.extend(int(b) for b in blocks)


class SeqTable:
    """Per-slot sequence state on the host. `blocks` is the host block table, one row per slot (pinned
    on CUDA so decode steps copy its rows straight to the device, like vLLM's block table)."""

    def __init__(self, max_seqs: int, max_blocks: int, block_size: int, pin: bool):
        self.max_seqs, self.max_blocks, self.block_size = max_seqs, max_blocks, block_size
        t = torch.zeros(max_seqs, max_blocks, dtype=torch.int32)
        self.blocks_t = t.pin_memory() if pin else t
        self.blocks = self.blocks_t.numpy()
        self.seq_len = np.zeros(max_seqs, np.int64)
        self.nblk = np.zeros(max_seqs, np.int64)
        self.next_tok = np.zeros(max_seqs, np.int64)
        self.prompt: dict[int, np.ndarray] = {}
        self.alloc: BlockAllocator | None = None

    def set_allocator(self, alloc: BlockAllocator | None) -> None:
        self.alloc = alloc
        self.seq_len[:] = 0
        self.nblk[:] = 0
        self.blocks[:] = 0
        self.prompt.clear()

    def ensure(self, rows: np.ndarray, end: np.ndarray) -> None:
        """Allocate blocks so each row can hold `end` tokens."""
        bs = self.block_size
        need = (end + bs - 1) // bs
        short = np.nonzero(need > self.nblk[rows])[0]
        if not len(short):
            return
        r_short = rows[short]
        have = self.nblk[r_short]
        if (need[short] - have == 1).all() and need[short].max() <= self.max_blocks and len(set(r_short.tolist())) == len(r_short):
            # the common decode case: each growing sequence crossed into one new block (vectorised)
            self.blocks[r_short, have] = self.alloc.allocate(len(short))
            self.nblk[r_short] = have + 1
            return
        for j in short:
            r, k = int(rows[j]), int(need[j])
            have = int(self.nblk[r])
            if k > self.max_blocks:
                raise ValueError(f"sequence slot {r} needs {k} blocks > max_blocks_per_seq {self.max_blocks}")
            self.blocks[r, have:k] = self.alloc.allocate(k - have)
            self.nblk[r] = k

    def add(self, slot: int, length: int, next_tok: int, prompt: np.ndarray | None = None) -> None:
        self.seq_len[slot] = 0
        self.ensure(np.array([slot]), np.array([length]))
        self.seq_len[slot] = length
        self.next_tok[slot] = next_tok
        if prompt is not None:
            self.prompt[slot] = prompt

    def truncate(self, slot: int, length: int) -> None:
        keep = -(-length // self.block_size)
        have = int(self.nblk[slot])
        if have > keep:
            self.alloc.free(self.blocks[slot, keep:have].tolist())
            self.blocks[slot, keep:have] = 0
            self.nblk[slot] = keep
        self.seq_len[slot] = length

    def release(self, slot: int) -> None:
        self.truncate(slot, 0)
        self.prompt.pop(slot, None)


@dataclass
class Plan:
    """One step: which sequence slots run and how many new tokens each (decodes first)."""

    rows: np.ndarray  # int64 slots
    q_lens: np.ndarray  # int64
    n: int
    T: int
    max_q: int
    decode_only: bool
    identity: bool  # rows == arange(n): the host block table rows can be copied as they are
    prefill: tuple[int, ...] = ()  # batch indices whose tokens come from a prompt
    label: str = ""


def _plan(rows: Sequence[int], q_lens: Sequence[int], prefill: tuple[int, ...] = (), label: str = "") -> Plan:
    r = np.asarray(rows, np.int64)
    q = np.asarray(q_lens, np.int64)
    return Plan(rows=r, q_lens=q, n=len(r), T=int(q.sum()), max_q=int(q.max()), decode_only=bool((q == 1).all()),
                identity=bool((r == np.arange(len(r))).all()), prefill=prefill, label=label)


class DecodeSchedule:
    """Fixed-batch decode: slots 0..B-1 start with `context` tokens; every step appends one token each."""

    kind = "decode"
    cycle = 1

    def __init__(self, seqs: SeqTable, batch: int, context: int, vocab: int, seed: int = 0):
        self.seqs, self.batch, self.context = seqs, batch, context
        self.tokens0 = np.random.default_rng(seed + 1).integers(0, vocab, batch).astype(np.int64)
        for s in range(batch):
            seqs.add(s, context, int(self.tokens0[s]))
        self._plan = _plan(range(batch), [1] * batch, label=f"decode {batch}")

    def reset(self) -> None:
        for s in range(self.batch):
            self.seqs.truncate(s, self.context)
        self.seqs.next_tok[:self.batch] = self.tokens0

    def plan(self, i: int) -> Plan:
        return self._plan

    def shapes(self) -> list[Plan]:
        return [self._plan]

    def commit(self, plan: Plan, sampled: np.ndarray) -> None:
        b = self.batch
        self.seqs.seq_len[:b] += 1
        self.seqs.next_tok[:b] = sampled[:b]

    def blocks_needed(self, max_steps: int) -> int:
        return self.batch * -(-(self.context + max_steps + 1) // self.seqs.block_size)


class MixedSchedule:
    """Continuous batching: `num_decode` decode sequences (contexts around `context`) plus one prefill
    request at a time, prefilled in chunks of `chunk` tokens; steps follow `pattern` cyclically. A
    request's prompt spans the cycle's prefill steps, so every cycle completes one request (its slot
    and blocks go back to the allocator) and starts the next."""

    kind = "mixed"

    def __init__(self, seqs: SeqTable, pattern: Sequence[tuple[str, int]], num_decode: int, context: int,
                 chunk: int, vocab: int, seed: int = 0):
        self.seqs, self.pattern, self.num_decode, self.chunk, self.vocab = seqs, tuple(pattern), num_decode, chunk, vocab
        self.cycle = len(self.pattern)
        need = max([k for kind, k in self.pattern])
        if need > num_decode:
            raise ValueError(f"pattern needs {need} decode sequences, pool has {num_decode}")
        prefills = sum(kind in ("mixed", "prefill") for kind, _ in self.pattern)
        self.prompt_len = max(1, prefills) * chunk
        rng = np.random.default_rng(seed + 2)
        self.contexts = (context + rng.integers(0, 64, num_decode)).astype(np.int64)
        self.tokens0 = rng.integers(0, vocab, num_decode).astype(np.int64)
        self.prefill_slot = num_decode
        self.seed = seed
        for s in range(num_decode):
            seqs.add(s, int(self.contexts[s]), int(self.tokens0[s]))
        self.requests = 0
        self._new_request()

    def _new_request(self) -> None:
        rng = np.random.default_rng(self.seed * 1000 + 7 + self.requests)
        prompt = rng.integers(0, self.vocab, self.prompt_len).astype(np.int64)
        self.seqs.add(self.prefill_slot, 0, 0, prompt)
        self.requests += 1

    def reset(self) -> None:
        for s in range(self.num_decode):
            self.seqs.truncate(s, int(self.contexts[s]))
        self.seqs.next_tok[:self.num_decode] = self.tokens0
        self.seqs.release(self.prefill_slot)
        self.requests = 0
        self._new_request()

    def _shape(self, entry: tuple[str, int]) -> tuple[list[int], list[int], tuple[int, ...]]:
        kind, k = entry
        rows, qls = list(range(k)), [1] * k
        if kind in ("mixed", "prefill"):
            rows.append(self.prefill_slot)
            qls.append(self.chunk)
            return rows, qls, (len(rows) - 1,)
        return rows, qls, ()

    def plan(self, i: int) -> Plan:
        entry = self.pattern[i % self.cycle]
        rows, qls, pre = self._shape(entry)
        return _plan(rows, qls, pre, label=f"{entry[0]} {entry[1]}")

    def shapes(self) -> list[Plan]:
        return [self.plan(i) for i in range(self.cycle)]

    def commit(self, plan: Plan, sampled: np.ndarray) -> None:
        seqs = self.seqs
        seqs.seq_len[plan.rows] += plan.q_lens
        dec = [j for j in range(plan.n) if j not in plan.prefill]
        seqs.next_tok[plan.rows[dec]] = sampled[dec]
        for j in plan.prefill:
            slot = int(plan.rows[j])
            if seqs.seq_len[slot] >= self.prompt_len:  # prompt done: the request leaves, the next one arrives
                seqs.release(slot)
                self._new_request()

    @staticmethod
    def blocks_needed(pattern: Sequence[tuple[str, int]], num_decode: int, context: int, chunk: int,
                      block_size: int, max_steps: int) -> int:
        """An upper bound of the blocks a trial of `max_steps` steps can hold at once."""
        prefills = sum(kind in ("mixed", "prefill") for kind, _ in pattern)
        prompt = max(1, prefills) * chunk
        per_seq = -(-(context + 64 + max_steps + 1) // block_size)  # contexts are context + [0, 64)
        return num_decode * per_seq + 2 * -(-prompt // block_size) + 2


# ==================================================================================== kernels and ops


@dataclass
class KernelSet:
    name: str  # "stock" | "jitlab_safe" | "jitlab_tuned" | "jitlab_tuned_verify"
    rms: Any
    rope: Any
    cache: Any
    attn: Any
    reduce: Any
    silu: Any
    policies: dict = field(default_factory=dict)  # kernel key -> Policy (jitlab sets)
    scope: str | None = None  # jitlab.scope name the set runs under (None: the global scope)

    def items(self) -> list[tuple[str, Any]]:
        return [("rms", self.rms), ("rope", self.rope), ("cache", self.cache), ("attn", self.attn),
                ("reduce", self.reduce), ("silu", self.silu)]

    def jit(self) -> list[Any]:
        """The JitCache objects of this set (empty for stock)."""
        return [k for _, k in self.items() if hasattr(k, "counters")]

    def counters(self) -> dict[str, int]:
        """Sum of jitlab counters of this set in its scope."""
        total: dict[str, int] = {}
        for k in self.jit():
            for n, v in k.counters(self.scope).items() if self.scope else k.counters("global").items():
                total[n] = total.get(n, 0) + v
        return total


RAW_KERNELS = {
    "rms": _layers.rms_norm_kernel,
    "rope": _layers.rope_neox_kernel,
    "cache": _cw.reshape_and_cache_kernel_flash,
    "attn": _ua.kernel_unified_attention,
    "reduce": _ua.reduce_segments,
    "silu": _layers.silu_and_mul_kernel,
}

# Arguments that change from layer to layer in vLLM (each layer owns its KV cache tensor and its
# k/v scale tensors): never frozen, even where the Case lists them as fixed per model (the attention
# Case lists k_scale/v_scale among its scales, which are only dereferenced for fp8 KV caches).
PER_LAYER_ARGS = ("key_cache_ptr", "value_cache_ptr", "k_scale", "v_scale", "sink_ptr")
# Persistent runner buffers (allocated once per Engine, i.e. per process, like vLLM's model-runner
# input buffers): their addresses never change, so freezing them holds. The segm_* buffers are None
# in 2D entries and the persistent fp32 buffers in 3D entries; IS_3D is in the key, so each entry
# freezes one consistent value.
PERSISTENT_ARGS = {
    "rope": ("positions_ptr",),
    "cache": ("slot_mapping_ptr",),
    "attn": ("block_tables_ptr", "seq_lens_ptr", "query_start_len_ptr", "softmax_segm_output_ptr",
             "softmax_segm_max_ptr", "softmax_segm_expsum_ptr"),
    "reduce": ("segm_output_ptr", "segm_max_ptr", "segm_expsum_ptr", "seq_lens_ptr", "query_start_len_ptr"),
}
TUNED_POLICY_NAME = "e2e_tuned"


def _policy_cases() -> dict[str, Any]:
    """Tiny CPU Cases of each kernel: only their name lists are used (strides, fixed_per_model,
    varying_constexprs, varying_ints)."""
    f32 = torch.float32
    attn = _ua.make_case("cpu", dtype=f32, num_seqs=2, context=20, mode="3d", num_query_heads=4,
                         num_kv_heads=2, head_size=16)
    return {
        "rms": _layers.make_rms_norm_case("cpu", dtype=f32, num_tokens=2, hidden=64),
        "rope": _layers.make_rope_case("cpu", dtype=f32, num_tokens=2, num_q_heads=4, num_kv_heads=2,
                                       head_size=16, max_position=32),
        "cache": _cw.make_case("cpu", dtype=f32, num_tokens=2, num_heads=2, head_size=16, num_blocks=4),
        "attn": attn,
        "reduce": attn.extra["reduce"],
        "silu": _layers.make_silu_and_mul_case("cpu", dtype=f32, num_tokens=2, intermediate=64),
    }


def _jit_params(kernel: Any) -> list:
    if hasattr(kernel, "params"):
        return kernel.params
    from triton.runtime.jit import JITFunction

    from ..kernels.interpret import python_fn

    return JITFunction(python_fn(kernel)).params


VIEW_STRIDES = {"cache": ("key_stride", "value_stride"), "attn": ("query_stride_0", "query_stride_1")}


def tuned_policies(verify: int = 0) -> dict[str, Policy]:
    """The tuned policy of each kernel, built from its Case fields, keeping only relaxations that hold
    in this decode loop:

    - check_keys = Case.varying_constexprs: the constexprs that change between launches here
      (rms: HAS_RESIDUAL; attention: IS_3D, NUM_SEGMENTS_PER_SEQ, TILE_SIZE; the others: none).
      Every other constexpr is a function of the model (hidden, heads, head size, block size, flags).
    - check_specialization = Case.varying_ints: attention and reduce_segments check num_seqs (its
      ==1 / %16 / other class changes in the mixed run). Nothing else is checked: every pointer here
      is a row-0 view of a fresh allocation or of a persistent buffer, at offsets that are multiples
      of 16 bytes (q/k/v of the fused qkv buffer: q_size and kv_size elements), with one dtype for the
      whole run and no None/tensor flip that a checked constexpr does not mirror (rms residual_ptr
      <-> HAS_RESIDUAL, attention segm_* <-> IS_3D). `Engine.check_alignment` asserts the offsets.
    - assume_const = Case.fixed_per_model (strides, N/d, eps, scale, softcap, the None pointers, the
      rope cos/sin table) minus PER_LAYER_ARGS, plus PERSISTENT_ARGS (runner buffers).
    - cache_launch_grid = False for every kernel: all grids depend on the token count or num_seqs,
      which are not in the key (they change within one entry as the batch or the mixed step changes).
    """
    cases = _policy_cases()
    out = {}
    for key, case in cases.items():
        frozen = [n for n in case.fixed_per_model if n not in PER_LAYER_ARGS]
        # Token strides of q/k/v, which are `.view()`s of the fused qkv buffer: for a one-token step torch
        # gives the size-1 token dimension a contiguous stride (1024 or 4096 instead of 6144), so they
        # change between steps of the mixed run. The tuned mode's verify=1 check caught it on the H200
        # (AssumptionViolated: q_token_stride 4096 -> 6144, then key_stride 1024 -> 6144); not frozen.
        frozen = [n for n in frozen if n not in VIEW_STRIDES.get(key, case.strides if key == "rope" else ())]
        frozen += [n for n in PERSISTENT_ARGS.get(key, ()) if n not in frozen]
        pol = Policy(name=TUNED_POLICY_NAME + ("+verify" if verify else ""),
                     check_keys=tuple(case.varying_constexprs), check_specialization=tuple(case.varying_ints),
                     assume_const=tuple(frozen), cache_launch_grid=False, verify=verify)
        params = _jit_params(RAW_KERNELS[key])
        pol.validate(key, [p.name for p in params if p.is_constexpr], [p.name for p in params if not p.is_constexpr])
        out[key] = pol
    return out


def make_kernel_sets(cuda: bool, scope: str) -> dict[str, KernelSet]:
    """stock, jitlab_safe, jitlab_tuned (under `scope`) and jitlab_tuned_verify (same policies with
    verify=1: every hit re-derives Triton's key and checks the frozen values; used for the checks)."""
    from .. import jitcache

    if cuda:
        raw = dict(RAW_KERNELS)
    else:
        from ..kernels.interpret import interpreted

        raw = {k: interpreted(v) for k, v in RAW_KERNELS.items()}
    sets = {"stock": KernelSet("stock", **raw)}
    sets["jitlab_safe"] = KernelSet("jitlab_safe", **{k: jitcache(v) for k, v in raw.items()},
                                    policies={k: Policy() for k in raw})
    for name, verify in (("jitlab_tuned", 0), ("jitlab_tuned_verify", 1)):
        pols = tuned_policies(verify=verify)
        sets[name] = KernelSet(name, **{k: jitcache(policy=pols[k])(v) for k, v in raw.items()},
                               policies=pols, scope=scope)
    return sets


def reshape_and_cache_flash(key, value, kv_cache, slot_mapping, k_scale, v_scale, kernel=None):
    """KV-cache write launched as vLLM launches `reshape_and_cache_kernel_flash` (keywords, a grid
    lambda, num_warps=16/num_stages=10 on CUDA). `kv_cache` is one layer's [num_blocks, 2, bs, h, d]."""
    key_cache, value_cache = kv_cache[:, 0], kv_cache[:, 1]
    num_tokens = slot_mapping.shape[0]
    num_heads, head_size = key.shape[1], key.shape[2]
    n = num_heads * head_size
    tile = min(2048, triton.next_power_of_2(n))
    opts = {"num_warps": 16, "num_stages": 10} if key.is_cuda else {}
    (kernel or _cw.reshape_and_cache_kernel_flash)[lambda meta: (num_tokens, triton.cdiv(n, meta["TILE_SIZE"]))](
        key_ptr=key, value_ptr=value, key_cache_ptr=key_cache, value_cache_ptr=value_cache,
        slot_mapping_ptr=slot_mapping, k_scale=k_scale, v_scale=v_scale,
        key_stride=key.stride(0), value_stride=value.stride(0), block_stride=key_cache.stride(0),
        head_stride=key_cache.stride(2), dim_stride_k=key_cache.stride(3), dim_stride_v=value_cache.stride(3),
        page_stride=key_cache.stride(1), num_heads=num_heads, head_size=head_size,
        block_size=key_cache.shape[1], x=max(1, 16 // key_cache.element_size()), USE_HEAD_MAJOR_LAYOUT=False,
        FP8_KV_CACHE=False, TILE_SIZE=tile, **opts)


class Ops:
    """Every launch of a step goes through one of these methods (the same code in every mode)."""

    def __init__(self, ks: KernelSet):
        self.ks = ks
        self._rms, self._rope, self._cache, self._silu = ks.rms, ks.rope, ks.cache, ks.silu
        self._attn = {"attn": ks.attn, "reduce": ks.reduce}

    # torch
    def embed(self, table, ids, out):
        torch.index_select(table, 0, ids, out=out)

    def mm(self, a, b, out):
        torch.mm(a, b, out=out)

    def gather(self, x, idx, out):
        torch.index_select(x, 0, idx, out=out)

    def argmax(self, logits, out):
        torch.argmax(logits, dim=-1, out=out)

    def copy(self, dst, src):
        dst.copy_(src, non_blocking=True)

    def replay(self, graph):
        graph.replay()

    # Triton
    def rms(self, x, w, eps, out, residual=None):
        _layers.rms_norm(x, w, eps, out=out, kernel=self._rms, residual=residual)

    def rope(self, q, k, positions, cos_sin):
        _layers.rope_(q, k, positions, cos_sin, kernel=self._rope)

    def silu(self, x, out):
        _layers.silu_and_mul(x, out=out, kernel=self._silu)

    def cache_write(self, key, value, kv_cache, slot_mapping, k_scale, v_scale):
        reshape_and_cache_flash(key, value, kv_cache, slot_mapping, k_scale, v_scale, kernel=self._cache)

    def attention(self, q, kv_cache, out, qsl, seq_lens, block_table, max_q, max_k, scale, segm, k_scale, v_scale):
        _ua.unified_attention(q, kv_cache, out, qsl, seq_lens, block_table, max_q, max_k, scale,
                              segm_buffers=segm, kernels=self._attn, k_scale=k_scale, v_scale=v_scale)


class _CountingKernel:
    def __init__(self, inner: Any, counts: dict, name: str):
        self.inner, self.counts, self.name = inner, counts, name

    def __getitem__(self, grid):
        self.counts["triton"] += 1
        self.counts[f"triton.{self.name}"] = self.counts.get(f"triton.{self.name}", 0) + 1
        return self.inner[grid]


class CountingOps(Ops):
    """Ops that count what they launch (used for the check steps and during graph capture; the
    kernels are the same objects, so results are identical)."""

    def __init__(self, ks: KernelSet, graph_kernels: dict | None = None):
        self.counts = {"triton": 0, "torch": 0, "copy": 0, "graph": 0, "in_graph": 0}
        counted = KernelSet(ks.name, **{k: _CountingKernel(v, self.counts, k) for k, v in ks.items()},
                            policies=ks.policies, scope=ks.scope)
        super().__init__(counted)
        self.graph_kernels = graph_kernels if graph_kernels is not None else {}

    def _torch(self):
        self.counts["torch"] += 1

    def embed(self, table, ids, out):
        self._torch()
        super().embed(table, ids, out)

    def mm(self, a, b, out):
        self._torch()
        super().mm(a, b, out)

    def gather(self, x, idx, out):
        self._torch()
        super().gather(x, idx, out)

    def argmax(self, logits, out):
        self._torch()
        super().argmax(logits, out)

    def copy(self, dst, src):
        self.counts["copy"] += 1
        super().copy(dst, src)

    def replay(self, graph):
        self.counts["graph"] += 1
        self.counts["in_graph"] += self.graph_kernels.get(id(graph), 0)
        super().replay(graph)

    def kernels(self) -> int:
        """Kernels (Triton + torch) launched from the host, excluding those inside graphs."""
        return self.counts["triton"] + self.counts["torch"]


# ============================================================================================= engine


@dataclass
class Views:
    """Slices of the persistent buffers for one step shape (cached per shape: a step slices nothing)."""

    key: tuple
    T_pad: int
    T: int
    n: int
    max_q: int
    is_3d: bool
    ids: torch.Tensor
    pos: torch.Tensor
    res: torch.Tensor
    x: torch.Tensor
    h: torch.Tensor
    qkv: torch.Tensor
    q_rope: torch.Tensor
    k_rope: torch.Tensor
    attn_flat: torch.Tensor
    o: torch.Tensor
    gu: torch.Tensor
    act: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    out: torch.Tensor
    slot: torch.Tensor
    seq_lens: torch.Tensor
    qsl: torch.Tensor
    block_table: torch.Tensor
    lidx: torch.Tensor
    xs: torch.Tensor
    logits: torch.Tensor
    next_ids: torch.Tensor
    host_next: torch.Tensor
    copies: list = field(default_factory=list)  # (dst, src) H2D staging copies
    copies_rows: list = field(default_factory=list)  # same, with the gathered block-table rows


class Engine:
    """Persistent buffers, the forward pieces, staging and one step. One per process and model."""

    def __init__(self, model: Model, max_tokens: int, max_seqs: int, max_model_len: int):
        self.model = model
        cfg = self.cfg = model.cfg
        self.device = model.device
        self.cuda = self.device.type == "cuda"
        dev, dt = self.device, cfg.torch_dtype
        self.max_tokens, self.max_seqs = max_tokens, max_seqs
        self.max_blocks = -(-max_model_len // cfg.block_size)
        self.max_model_len = self.max_blocks * cfg.block_size
        i64, i32 = torch.int64, torch.int32

        def host(*shape, dtype):
            t = torch.zeros(shape, dtype=dtype)
            return t.pin_memory() if self.cuda else t

        # persistent device inputs (vLLM's model-runner buffers)
        self.d_ids = torch.zeros(max_tokens, dtype=i64, device=dev)
        self.d_pos = torch.zeros(max_tokens, dtype=i64, device=dev)
        self.d_slot = torch.zeros(max_tokens, dtype=i64, device=dev)
        self.d_seq_lens = torch.zeros(max_seqs, dtype=i32, device=dev)
        self.d_qsl = torch.zeros(max_seqs + 1, dtype=i32, device=dev)
        self.d_bt = torch.zeros(max_seqs, self.max_blocks, dtype=i32, device=dev)
        self.d_lidx = torch.zeros(max_seqs, dtype=i64, device=dev)
        # pinned host staging
        self.h_ids, self.h_pos, self.h_slot = host(max_tokens, dtype=i64), host(max_tokens, dtype=i64), host(max_tokens, dtype=i64)
        self.h_seq_lens, self.h_qsl = host(max_seqs, dtype=i32), host(max_seqs + 1, dtype=i32)
        self.h_bt = host(max_seqs, self.max_blocks, dtype=i32)
        self.h_lidx = host(max_seqs, dtype=i64)
        self.h_next = host(max_seqs, dtype=i64)
        self.n_ids, self.n_pos, self.n_slot = self.h_ids.numpy(), self.h_pos.numpy(), self.h_slot.numpy()
        self.n_seq_lens, self.n_qsl, self.n_bt = self.h_seq_lens.numpy(), self.h_qsl.numpy(), self.h_bt.numpy()
        self.n_lidx, self.n_next = self.h_lidx.numpy(), self.h_next.numpy()
        self._arange = np.arange(max(max_tokens, max_seqs) + 1, dtype=np.int64)
        # static activations
        h = cfg.hidden
        self.w_res = torch.zeros(max_tokens, h, dtype=dt, device=dev)
        self.w_x = torch.zeros(max_tokens, h, dtype=dt, device=dev)
        self.w_h = torch.zeros(max_tokens, h, dtype=dt, device=dev)
        self.w_o = torch.zeros(max_tokens, h, dtype=dt, device=dev)
        self.w_qkv = torch.zeros(max_tokens, cfg.qkv_size, dtype=dt, device=dev)
        self.w_attn = torch.zeros(max_tokens, cfg.num_q_heads, cfg.head_size, dtype=dt, device=dev)
        self.w_gu = torch.zeros(max_tokens, 2 * cfg.intermediate, dtype=dt, device=dev)
        self.w_act = torch.zeros(max_tokens, cfg.intermediate, dtype=dt, device=dev)
        self.w_xs = torch.zeros(max_seqs, h, dtype=dt, device=dev)
        self.w_logits = torch.zeros(max_seqs, cfg.vocab, dtype=dt, device=dev)
        self.w_next = torch.zeros(max_seqs, dtype=i64, device=dev)
        self.segm = _ua.make_segm_buffers(max_tokens, cfg.num_q_heads, cfg.head_size, dev)
        self.seqs = SeqTable(max_seqs, self.max_blocks, cfg.block_size, pin=self.cuda)
        self.kv: torch.Tensor | None = None
        self.kv_layers: list[torch.Tensor] = []
        self.nl = 0
        self.max_k = 0
        self._views: dict[tuple, Views] = {}
        self.graph_kernels: dict[int, int] = {}
        self.graph_pool = None
        self.check_alignment()

    # -- per-config KV cache ---------------------------------------------------------------------------
    def kv_bytes(self, num_layers: int, num_blocks: int) -> int:
        return num_layers * num_blocks * self.cfg.block_bytes

    def prepare_config(self, num_layers: int, num_blocks: int, seed: int = 0) -> None:
        """Allocate (after freeing the previous one) and randomly fill a KV cache for `num_layers`
        layers of `num_blocks` blocks each; a fresh allocator; empty sequence table."""
        if num_layers > self.model.num_layers:
            raise ValueError(f"{num_layers} layers > the model's {self.model.num_layers}")
        self.release_config()
        cfg = self.cfg
        self.kv = torch.empty((num_layers, num_blocks, 2, cfg.block_size, cfg.num_kv_heads, cfg.head_size),
                              dtype=cfg.torch_dtype, device=self.device)
        g = torch.Generator(device=self.device).manual_seed(seed + 12345)
        for layer in range(num_layers):
            self.kv[layer].normal_(generator=g)
        self.kv_layers = [self.kv[layer] for layer in range(num_layers)]
        self.nl = num_layers
        self.seqs.set_allocator(BlockAllocator(num_blocks, seed))

    def release_config(self) -> None:
        self.kv, self.kv_layers, self.nl = None, [], 0
        self.seqs.set_allocator(None)
        self.graph_kernels.clear()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()

    def check_alignment(self) -> None:
        """The tuned policies check no pointer alignment: every pointer must be 16-byte aligned."""
        cfg = self.cfg
        isz = cfg.itemsize
        for what, off in (("k offset in qkv", cfg.q_size), ("v offset in qkv", cfg.q_size + cfg.kv_size),
                          ("qkv row", cfg.qkv_size), ("hidden row", cfg.hidden),
                          ("intermediate row", cfg.intermediate), ("vocab row", cfg.vocab)):
            if (off * isz) % 16:
                raise AssertionError(f"{what}: {off} elements of {isz} bytes is not a 16-byte multiple; "
                                     f"the tuned policies' unchecked pointer alignment would not hold")

    # -- views ------------------------------------------------------------------------------------------
    def views(self, T_pad: int, T: int, n: int, max_q: int) -> Views:
        key = (T_pad, T, n, max_q)
        v = self._views.get(key)
        if v is not None:
            return v
        cfg = self.cfg
        qs, ks = cfg.q_size, cfg.kv_size
        nq, nkv, hd = cfg.num_q_heads, cfg.num_kv_heads, cfg.head_size
        if T_pad > self.max_tokens or n > self.max_seqs:
            raise ValueError(f"step of {T_pad} tokens / {n} seqs exceeds the engine's {self.max_tokens} / {self.max_seqs}")
        qkv = self.w_qkv[:T_pad]
        v = Views(
            key=key, T_pad=T_pad, T=T, n=n, max_q=max_q,
            is_3d=_ua.use_3d(max_q, n, nkv, self.segm),
            ids=self.d_ids[:T_pad], pos=self.d_pos[:T_pad], res=self.w_res[:T_pad], x=self.w_x[:T_pad],
            h=self.w_h[:T_pad], qkv=qkv, q_rope=qkv[:, :qs].view(T_pad, nq, hd),
            k_rope=qkv[:, qs:qs + ks].view(T_pad, nkv, hd), attn_flat=self.w_attn[:T_pad].view(T_pad, qs),
            o=self.w_o[:T_pad], gu=self.w_gu[:T_pad], act=self.w_act[:T_pad],
            q=qkv[:T, :qs].view(T, nq, hd), k=qkv[:T, qs:qs + ks].view(T, nkv, hd),
            v=qkv[:T, qs + ks:].view(T, nkv, hd), out=self.w_attn[:T], slot=self.d_slot[:T],
            seq_lens=self.d_seq_lens[:n], qsl=self.d_qsl[:n + 1], block_table=self.d_bt[:n],
            lidx=self.d_lidx[:n], xs=self.w_xs[:n], logits=self.w_logits[:n], next_ids=self.w_next[:n],
            host_next=self.h_next[:n])
        common = [(self.d_ids[:T_pad], self.h_ids[:T_pad]), (self.d_pos[:T_pad], self.h_pos[:T_pad]),
                  (self.d_slot[:T], self.h_slot[:T]), (self.d_seq_lens[:n], self.h_seq_lens[:n]),
                  (self.d_qsl[:n + 1], self.h_qsl[:n + 1]), (self.d_lidx[:n], self.h_lidx[:n])]
        v.copies = common + [(self.d_bt[:n], self.seqs.blocks_t[:n])]
        v.copies_rows = common + [(self.d_bt[:n], self.h_bt[:n])]
        self._views[key] = v
        return v

    # -- staging ----------------------------------------------------------------------------------------
    def stage(self, ops: Ops, plan: Plan, pad: Callable[[int], int] | None = None) -> Views:
        """Host metadata for `plan` into the pinned buffers, allocating blocks as sequences grow, then
        the H2D copies into the persistent device buffers. Returns the step's views."""
        seqs, bs = self.seqs, self.cfg.block_size
        rows, qls, n, T = plan.rows, plan.q_lens, plan.n, plan.T
        start = seqs.seq_len[rows]
        end = start + qls
        seqs.ensure(rows, end)
        self.max_k = int(end.max())  # host-only (vLLM passes max_seqlen_k; no kernel argument)
        T_pad = pad(T) if pad is not None else T
        if plan.decode_only:
            pos = start
            self.n_ids[:n] = seqs.next_tok[rows]
            self.n_qsl[:n + 1] = self._arange[:n + 1]
            self.n_lidx[:n] = self._arange[:n]
            blk = seqs.blocks[rows, pos // bs]
        else:
            cs = np.cumsum(qls)
            self.n_qsl[0] = 0
            self.n_qsl[1:n + 1] = cs
            first = cs - qls
            tok_seq = np.repeat(self._arange[:n], qls)
            pos = start[tok_seq] + self._arange[:T] - first[tok_seq]
            ids = seqs.next_tok[rows][tok_seq]
            for j in plan.prefill:
                slot = int(rows[j])
                ids[first[j]:cs[j]] = seqs.prompt[slot][start[j]:end[j]]
            self.n_ids[:T] = ids
            self.n_lidx[:n] = cs - 1
            blk = seqs.blocks[rows[tok_seq], pos // bs]
        self.n_pos[:T] = pos
        self.n_slot[:T] = blk.astype(np.int64) * bs + pos % bs
        self.n_seq_lens[:n] = end
        if T_pad > T:
            self.n_ids[T:T_pad] = 0
            self.n_pos[T:T_pad] = 0
        v = self.views(T_pad, T, n, plan.max_q)
        if plan.identity:
            copies = v.copies
        else:
            self.n_bt[:n] = seqs.blocks[rows]
            copies = v.copies_rows
        for dst, src in copies:
            ops.copy(dst, src)
        return v

    # -- forward pieces ---------------------------------------------------------------------------------
    def piece(self, ops: Ops, i: int, v: Views) -> None:
        """Graph piece i of the step (vLLM splits at attention): 0: embed + norm + qkv + rope of layer 0;
        0 < i < L: o-proj + MLP of layer i-1, then norm + qkv + rope of layer i; L: o-proj + MLP of the
        last layer and the final norm."""
        m, eps, nl = self.model, self.cfg.eps, self.nl
        if i == 0:
            ops.embed(m.embed, v.ids, v.res)
            ops.rms(v.res, m.layers[0].in_norm, eps, v.x)
        else:
            lw = m.layers[i - 1]
            ops.mm(v.attn_flat, lw.o_t, v.o)
            ops.rms(v.o, lw.post_norm, eps, v.x, v.res)
            ops.mm(v.x, lw.gate_up_t, v.gu)
            ops.silu(v.gu, v.act)
            ops.mm(v.act, lw.down_t, v.h)
            ops.rms(v.h, m.layers[i].in_norm if i < nl else m.final_norm, eps, v.x, v.res)
        if i < nl:
            ops.mm(v.x, m.layers[i].qkv_t, v.qkv)
            ops.rope(v.q_rope, v.k_rope, v.pos, m.cos_sin)

    def attention(self, ops: Ops, i: int, v: Views, max_k: int) -> None:
        """The eager part of layer i: KV-cache write, then attention (2D, or 3D + reduce)."""
        kv, lw = self.kv_layers[i], self.model.layers[i]
        ops.cache_write(v.k, v.v, kv, v.slot, lw.k_scale, lw.v_scale)
        ops.attention(v.q, kv, v.out, v.qsl, v.seq_lens, v.block_table, v.max_q, max_k, self.model.scale,
                      self.segm, lw.k_scale, lw.v_scale)

    def forward_eager(self, ops: Ops, v: Views, max_k: int) -> None:
        for i in range(self.nl):
            self.piece(ops, i, v)
            self.attention(ops, i, v, max_k)
        self.piece(ops, self.nl, v)

    def tail(self, ops: Ops, v: Views) -> None:
        """Logits of each sequence's last token, greedy sampling, token ids back to the host."""
        ops.gather(v.x, v.lidx, v.xs)
        ops.mm(v.xs, self.model.lm_head_t, v.logits)
        ops.argmax(v.logits, v.next_ids)
        ops.copy(v.host_next, v.next_ids)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.current_stream().synchronize()

    # -- graphs -----------------------------------------------------------------------------------------
    def _pool(self):
        if self.graph_pool is None:
            self.graph_pool = torch.cuda.graph_pool_handle()
        return self.graph_pool

    def sync_all(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def _warm(self, fn: Callable[[], None], times: int = 2) -> None:
        """Run `fn` eagerly on a side stream before capture (compiles, cuBLAS workspaces, jitlab entries)."""
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(times):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        torch.cuda.synchronize()

    def _capture(self, ks: KernelSet, fn: Callable[[Ops], None]) -> Any:
        ops = CountingOps(ks)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self._pool()):
            fn(ops)
        self.graph_kernels[id(g)] = ops.kernels()
        return g

    def capture_piecewise(self, ks: KernelSet, shapes: Sequence[Views]) -> dict[int, list]:
        """Pieces 0..L captured per padded token count (they only read ids/positions/static buffers)."""
        out: dict[int, list] = {}
        for v in shapes:
            if v.T_pad in out:
                continue
            ops = Ops(ks)
            self._warm(lambda: [self.piece(ops, i, v) for i in range(self.nl + 1)])
            out[v.T_pad] = [self._capture(ks, lambda o, i=i, v=v: self.piece(o, i, v)) for i in range(self.nl + 1)]
        self.sync_all()
        return out

    def capture_full(self, ks: KernelSet, v: Views, max_k: int) -> dict[tuple, Any]:
        """The whole model forward (attention included) for one decode shape. Staged metadata must be
        valid: the warmup writes this step's KV slots (the real step rewrites them)."""
        ops = Ops(ks)
        self._warm(lambda: self.forward_eager(ops, v, max_k), times=1)
        g = self._capture(ks, lambda o: self.forward_eager(o, v, max_k))
        self.sync_all()
        return {v.key: g}

    def drop_graphs(self) -> None:
        self.graph_kernels.clear()
        self.graph_pool = None  # graphs are dropped with their trial; the next trial captures into a new pool
        self.sync_all()


# ====================================================================================== reference


def reference_logits(engine: Engine, kv_layers: list[torch.Tensor], v: Views, max_layers: int | None = None) -> torch.Tensor:
    """Pure-torch forward of the same model for the step currently staged in the engine's device
    buffers (`v`), using the kernel modules' torch references. `kv_layers` (copies of the KV cache:
    this step's slots are written into them) hold the context. Returns fp32 logits [n, vocab]."""
    from ..kernels.unified_attention import reference_attention

    m, cfg = engine.model, engine.cfg
    T = v.T
    nq, nkv, hd, qs, ks, bs, eps = (cfg.num_q_heads, cfg.num_kv_heads, cfg.head_size, cfg.q_size, cfg.kv_size,
                                    cfg.block_size, cfg.eps)
    ids, pos, slot = v.ids[:T].clone(), v.pos[:T].clone(), v.slot.clone()
    qsl, seq_lens, bt, lidx = v.qsl.clone(), v.seq_lens.clone(), v.block_table.clone(), v.lidx.clone()
    nl = engine.nl if max_layers is None else max_layers
    res = m.embed[ids]
    x = _layers.rms_norm_reference(res, m.layers[0].in_norm, eps)
    h = None
    for layer in range(nl):
        lw = m.layers[layer]
        if layer > 0:
            x, res = _layers.rms_norm_reference(h, lw.in_norm, eps, residual=res)
        qkv = x @ lw.qkv.t()
        q = qkv[:, :qs].reshape(T, nq, hd)
        k = qkv[:, qs:qs + ks].reshape(T, nkv, hd)
        val = qkv[:, qs + ks:].reshape(T, nkv, hd)
        q, k = _layers.rope_reference(q, k, pos, m.cos_sin)
        kv = kv_layers[layer]
        live = slot >= 0
        b, o = slot[live] // bs, slot[live] % bs
        kv[b, 0, o] = k[live].to(kv.dtype)
        kv[b, 1, o] = val[live].to(kv.dtype)
        a = reference_attention(q, kv, qsl, seq_lens, bt, m.scale).to(x.dtype)
        o_out = a.reshape(T, qs) @ lw.o.t()
        x, res = _layers.rms_norm_reference(o_out, lw.post_norm, eps, residual=res)
        act = _layers.silu_and_mul_reference(x @ lw.gate_up.t())
        h = act @ lw.down.t()
    x, res = _layers.rms_norm_reference(h, m.final_norm, eps, residual=res)
    return (x[lidx] @ m.lm_head.t()).float()


# ============================================================================================= modes


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
DEFAULT_MODES = ("eager_stock", "eager_jitlab_safe", "eager_jitlab_tuned", "piecewise_stock", "piecewise_jitlab",
                 "full_graph")
REFERENCE_MODE = "eager_stock"
GRAPH_MODE = "full_graph"


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
        for i in range(n_steps):
            _, _, _, _, v = self.step(ops, i)
            logits.append(v.logits.detach().clone())
            ids.append(self.engine.n_next[:v.n].copy())
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
        rec_i0, rec_flushes = (len(rec.records), rec.flushes) if rec is not None else (0, 0)
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
        from ..telemetry import recorder as _rec

        if rec.flushes != flushes:
            return {"per_launch_note": "recorder flushed during the trial; per-launch times not computed"}
        recs = [r for r in rec.records[i0:] if r[3] == _rec.HIT and t_start <= r[5] <= t_end]
        if not recs:
            return {}
        by: dict[str, list] = {}
        for r in recs:
            by.setdefault(rec.string(r[0]), []).append(r)
        per_kernel = {k: {"n": len(rs), "arg_update_ns": statistics.median(r[6] - r[5] for r in rs),
                          "launch_ns": statistics.median(r[7] - r[6] for r in rs)} for k, rs in by.items()}
        return {"per_launch_samples": len(recs),
                "arg_update_ns": statistics.median(r[6] - r[5] for r in recs),
                "launch_call_ns": statistics.median(r[7] - r[6] for r in recs),
                "per_launch_us": statistics.median((r[7] - r[5]) / 1e3 for r in recs),
                "per_launch_by_kernel": per_kernel}

    def gpu_busy(self, n_steps: int, host_ms: float | None) -> dict:
        """Steps launched while the GPU is held by a sleep kernel: the CUDA events then bracket pure
        device work (no gaps from a slow host), i.e. the GPU time per step."""
        e = self.engine
        if not e.cuda or n_steps <= 0:
            return {}
        from .timing import Device

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
        self.sweep = sweep
        self.cuda = sweep.cuda
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.console = console
        self.results: list[dict] = []
        self.run = None
        self.meta: dict = {}

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
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from .. import telemetry
        from ..provenance import provenance
        from ..settings import SETTINGS

        s = self.sweep
        console = self.console or Console(stderr=True)
        configs = s.configs()
        modes = [MODES[m] for m in s.mode_names()]
        est = estimate(s)
        self.meta = {"provenance": provenance(), "estimate_s": est["total_s"]}
        console.print(f"[bold]{EXPERIMENT}[/]: {len(configs)} configs x {len(modes)} modes; "
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
            "jitlab.e2e.device": str(self.device),
        }
        t_build = time.perf_counter()
        console.print(f"building {s.model.name} ({model_layers} layers, {s.model.dtype}) on {self.device} ...")
        self.model = Model(s.model, self.device, num_layers=model_layers, max_position=max_len + 1)
        self.engine = Engine(self.model, max_t, max_s, max_len)
        scope_name = s.model.name
        self.scope_name = scope_name
        self.kernel_sets = make_kernel_sets(self.cuda, scope_name)
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
        e.release_config()

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
                "jitlab.e2e.context": c.context, "jitlab.e2e.layers": c.layers, "jitlab.e2e.mode": m.name,
                "jitlab.e2e.mode_kind": m.kind, "jitlab.e2e.kernels": m.kernels,
                "jitlab.policy": TUNED_POLICY_NAME if m.kernels == "jitlab_tuned" else m.kernels,
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
                progress("warmup")
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
        with self.run.trial("sanity/eager_stock_vs_torch", {"jitlab.e2e.mode": "sanity"}) as tr:
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


# ========================================================================================= results


_ATTR_SKIP = ("config", "kind", "batch", "context", "layers", "mode", "mode_kind", "kernels")


def _attrs(row: dict) -> dict:
    """A result row as trial-span attributes (`jitlab.e2e.<key>`; dicts as JSON strings)."""
    out = {}
    for k, v in row.items():
        if k in _ATTR_SKIP or v is None:
            continue
        out[f"jitlab.e2e.{k}"] = json.dumps(v, default=str) if isinstance(v, (dict, list)) else v
    return out


def derive(rows: list[dict]) -> None:
    """Per config: speedup vs eager_stock, fraction of the eager_stock -> full_graph tokens/s gap
    closed ((mode - stock) / (graph - stock)), and the ratio to the full graph."""
    by = {r["mode"]: r for r in rows if r.get("tokens_per_s")}
    # every mode runs the same device kernels per step (graphs only change who launches them); for
    # mixed runs piecewise pads the token count, which changes no kernel count either
    dk = by.get(REFERENCE_MODE, {}).get("device_kernels_per_step")
    for r in rows:
        if dk is not None and r.get("device_kernels_per_step") is not None:
            r["device_kernels_match"] = abs(r["device_kernels_per_step"] - dk) < 1e-9
    stock = by.get(REFERENCE_MODE, {}).get("tokens_per_s")
    graph = by.get(GRAPH_MODE, {}).get("tokens_per_s")
    for r in rows:
        tps = r.get("tokens_per_s")
        if not tps:
            continue
        if stock:
            r["speedup_vs_stock"] = tps / stock
        if graph:
            r["x_full_graph"] = tps / graph
        if stock and graph and r["mode"] not in (REFERENCE_MODE, GRAPH_MODE):
            gap = graph - stock
            # a gap under 2% of stock is noise: "gap closed" is not defined there
            r["gap_closed"] = (tps - stock) / gap if gap > 0.02 * stock else None


def summarize(results: list[dict]) -> dict:
    """The issue's goals (B=1, 32 layers, context 1024) and the crossover (speedup of eager jitlab
    tuned over eager stock, and of piecewise jitlab over piecewise stock, per config)."""
    out: dict[str, Any] = {}
    goal = [r for r in results if r.get("kind") == "decode" and r["batch"] == 1 and r["layers"] == 32
            and r["context"] == 1024]
    g = {r["mode"]: r for r in goal}
    if g:
        out["goal_config"] = "B=1 ctx=1024 L=32"
        for m in ("eager_jitlab_tuned", "eager_jitlab_safe", "piecewise_jitlab", "piecewise_jitlab_safe"):
            if m in g:
                out[f"{m}.gap_closed"] = g[m].get("gap_closed")
                out[f"{m}.x_full_graph"] = g[m].get("x_full_graph")
                out[f"{m}.speedup_vs_stock"] = g[m].get("speedup_vs_stock")
    cross = []
    configs = {}
    for r in results:
        if r.get("kind") == "decode":
            configs.setdefault(r["config"], {})[r["mode"]] = r
    for name, ms in configs.items():
        r0 = next(iter(ms.values()))
        item = {"config": name, "batch": r0["batch"], "context": r0["context"], "layers": r0["layers"]}
        for a, b in (("eager_jitlab_tuned", "eager_stock"), ("eager_jitlab_safe", "eager_stock"),
                     ("piecewise_jitlab", "piecewise_stock")):
            if ms.get(a, {}).get("tokens_per_s") and ms.get(b, {}).get("tokens_per_s"):
                item[f"{a}/{b}"] = ms[a]["tokens_per_s"] / ms[b]["tokens_per_s"]
        for m in ("eager_stock", "full_graph"):
            if ms.get(m, {}).get("host_ms") is not None:
                item[f"{m}.host_ms"] = ms[m]["host_ms"]
            if ms.get(m, {}).get("gpu_busy_ms") is not None:
                item[f"{m}.gpu_busy_ms"] = ms[m]["gpu_busy_ms"]
        cross.append(item)
    out["crossover"] = cross
    return out


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(text)


def _one_line(r: dict) -> str:
    if r.get("skip"):
        return f"  {r['config']} {r['mode']}: skipped ({r['skip']})"
    if r.get("error"):
        return f"  {r['config']} {r['mode']}: [red]error[/] {escape(r['error'][:300])}"

    def f(x, fmt="{:.2f}"):
        return fmt.format(x) if isinstance(x, (int, float)) else "-"

    return (f"  {r['config']} {r['mode']}: {f(r.get('tokens_per_s'), '{:.0f}')} tok/s, host {f(r.get('host_ms'))} ms, "
            f"GPU {f(r.get('gpu_busy_ms'))} ms, {f(r.get('launches_per_step'), '{:.0f}')} launches/step, "
            f"check {escape(str(r.get('check', '?')))}")


def print_table(results: list[dict], sweep: SweepConfig, meta: dict, file: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, width=200)
    prov = meta.get("provenance", {})
    caption = (f"{prov.get('gpu', '?')} · driver {prov.get('driver', '?')} · torch {prov.get('torch', '?')} · "
               f"triton {prov.get('triton', '?')} · jitlab {prov.get('jitlab_commit', '?')} · {prov.get('date', '')}"
               f"\ntrace: {meta.get('trace_file')}")
    title = f"{EXPERIMENT}: {sweep.model.name} ({sweep.model.dtype}) {sweep.label}".strip()
    t = Table(title=title, caption=caption)
    for col in ("config", "mode", "tok/s", "x stock", "gap closed", "x graph", "host ms", "GPU ms", "step ms",
                "launches", "µs/launch", "check"):
        t.add_column(col, justify="left" if col in ("config", "mode", "check") else "right")

    def f(x, fmt="{:.2f}"):
        return fmt.format(x) if isinstance(x, (int, float)) and x is not None else ""

    last = None
    for r in results:
        if last is not None and r["config"] != last:
            t.add_section()
        last = r["config"]
        note = r.get("skip") or r.get("error")
        if note:
            t.add_row(r["config"], r["mode"], "", "", "", "", "", "", "", "", "",
                      escape(("skip: " if r.get("skip") else "ERROR: ") + note[:90]))
            continue
        check = escape(str(r.get("check", "")))
        if r.get("check_ok") is False:
            check = f"[bold red]{check}[/]"
        t.add_row(r["config"], r["mode"], f(r.get("tokens_per_s"), "{:.1f}" if not sweep.cuda else "{:.0f}"),
                  f(r.get("speedup_vs_stock"), "{:.2f}x"), f(r.get("gap_closed"), "{:.0%}"),
                  f(r.get("x_full_graph"), "{:.2f}"), f(r.get("host_ms")), f(r.get("gpu_busy_ms")),
                  f(r.get("step_ms")), f(r.get("launches_per_step"), "{:.0f}"), f(r.get("per_launch_us")), check)
    console.print(t)
    console.print("host ms: median host time per step until the last launch returned (incl. input staging); "
                  "GPU ms: device time per step with the GPU held busy; step ms: median wall per step incl. the "
                  "token read-back sync; launches: host-issued kernels + copies + graph replays per step; "
                  "µs/launch: jitlab's median (argument update + launcher call) from sampled records; "
                  "gap closed = (mode - eager_stock) / (full_graph - eager_stock) in tokens/s.")
    s = summarize(results)
    if s.get("goal_config"):
        def pct(x):
            return f"{x:.0%}" if isinstance(x, (int, float)) else "n/a"

        def x2(x):
            return f"{x:.3f}" if isinstance(x, (int, float)) else "n/a"

        console.print(f"[bold]Goals at {s['goal_config']}[/]: eager_jitlab_tuned closes "
                      f"{pct(s.get('eager_jitlab_tuned.gap_closed'))} of the eager->full-graph gap (goal >= 80%; safe: "
                      f"{pct(s.get('eager_jitlab_safe.gap_closed'))}); piecewise_jitlab reaches "
                      f"{x2(s.get('piecewise_jitlab.x_full_graph'))}x the full graph (goal >= 0.95).")
    cross = [c for c in s.get("crossover", []) if len(c) > 4]
    if len(cross) > 1:
        ct = Table(title="crossover: tokens/s ratio jitlab / stock (eager tuned; piecewise)")
        for col in ("layers", "context", "batch", "eager tuned/stock", "eager safe/stock", "piecewise jit/stock",
                    "eager host ms", "GPU ms"):
            ct.add_column(col, justify="right")
        for c in sorted(cross, key=lambda c: (c["layers"], c["context"], c["batch"])):
            def mark(x):
                if not isinstance(x, (int, float)):
                    return ""
                return f"{x:.2f}" if x >= 1.05 else f"[dim]{x:.2f}[/]"

            ct.add_row(str(c["layers"]), str(c["context"]), str(c["batch"]),
                       mark(c.get("eager_jitlab_tuned/eager_stock")), mark(c.get("eager_jitlab_safe/eager_stock")),
                       mark(c.get("piecewise_jitlab/piecewise_stock")), f(c.get("eager_stock.host_ms")),
                       f(c.get("full_graph.gpu_busy_ms") or c.get("eager_stock.gpu_busy_ms")))
        console.print(ct)
        if sweep.cuda:
            console.print("dim: < 5% gain (launch overhead no longer turns into tokens/s: the GPU time per step "
                          "exceeds the host time)")
        else:
            console.print("CPU demo: interpreter times, not launch overhead; the ratios carry no meaning")


# ========================================================================================= estimate


def estimate(s: SweepConfig) -> dict:
    """A rough wall-clock estimate of the sweep on an H200 (or the CPU demo)."""
    if not s.cuda:
        n = len(s.configs()) * sum(MODES[m].kind == "eager" for m in s.mode_names())  # graph modes skip
        return {"total_s": 3.0 + n * s.steps_per_trial() * 0.35, "note": " (CPU demo; interpreter speed varies)"}
    m = s.model
    hbm = 3.0e12  # effective bytes/s
    # host ms per layer, from the H200 launch-overhead trials (stock unified attention 52-72 us/launch,
    # cache write 40 us; jitlab safe ~25 us, tuned ~17 us) plus the Python helpers and 4 GEMM launches
    host_per_layer_ms = {"eager_stock": 0.35, "eager_jitlab_safe": 0.20, "eager_jitlab_tuned": 0.15,
                         "piecewise_stock": 0.16, "piecewise_jitlab": 0.07, "piecewise_jitlab_safe": 0.08,
                         "full_graph": 0.0}
    total = 5.0  # startup, weights
    for c in s.configs():
        steps = s.steps_per_trial() if c.kind == "decode" else 8 * (2 + s.mixed_warmup_cycles + s.mixed_cycles)
        tokens_ctx = (c.batch * c.context) if c.kind == "decode" else 32 * c.context
        kv = tokens_ctx * c.layers * m.block_bytes / m.block_size
        gpu_ms = (m.weight_bytes(c.layers) + kv) / hbm * 1e3
        total += 0.3 + kv * 2 / 1e12  # allocation + random fill
        for name in s.mode_names():
            if c.kind == "mixed" and name == "full_graph":
                continue
            host_ms = host_per_layer_ms.get(name, 0.2) * c.layers + 0.3
            total += steps * (max(host_ms, gpu_ms) + 0.3) / 1e3
            if name.startswith("piecewise"):
                total += (c.layers + 1) * 0.006 * (8 if c.kind == "mixed" else 1) + 0.2
            elif name == "full_graph":
                total += 0.05 + gpu_ms / 1e3
    return {"total_s": total, "note": " (+ up to ~1 min of Triton compilation on a cold cache)"}


# ============================================================================================= entry


def run_experiment(sweep: SweepConfig) -> list[dict]:
    """Run the sweep, print the summary table (stdout), return the result rows."""
    runner = Runner(sweep)
    results: list[dict] = []
    try:
        results = runner.run_all()
    finally:
        print_table(runner.results, sweep, runner.meta)
        if runner.meta.get("trace_file"):
            print(f"trace: {runner.meta['trace_file']}")
    return results
