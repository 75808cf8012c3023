"""The model (random Llama-shaped weights), the paged-KV bookkeeping (block allocator, sequence table) and step schedules."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ...kernels import layers as _layers
from .config import ModelConfig



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
