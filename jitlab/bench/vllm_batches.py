"""Batches for vLLM's own attention wrappers, built the way vLLM's TRITON_ATTN backend builds them.

One attention layer: a paged KV cache in vLLM's default NHD layout (physical
`[num_blocks, block_size, num_kv_heads, 2 * head_size]`, K and V split from the last dimension as
`TritonAttentionImpl` does), a persistent block table `[max_num_seqs, max_blocks]` sliced to the
batch's rows, query start locations and sequence lengths, slot mappings for the new tokens, and
the 3D split-KV softmax buffers sized as `TritonAttentionMetadataBuilder` sizes them.
Used by experiments/vllm_kernels.py (on the GPU) and the CPU tests (under Triton's interpreter).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

UNIFIED = "vllm.v1.attention.ops.triton_unified_attention"
CACHE = "vllm.v1.attention.ops.triton_reshape_and_cache_flash"
KINDS = ("decode", "prefill", "mixed")
MODES = ("2d", "3d")
MIN_LAUNCH_GRID_SIZE_2D = 128  # vLLM 0.26.0 triton_attn.py: 3D only while num_seqs <= 128 // num_kv_heads
NUM_PAR_SOFTMAX_SEGMENTS = 16


@dataclass(frozen=True)
class Shape:
    """One attention layer (GPU default: Llama-3.1-8B's)."""

    num_query_heads: int = 32
    num_kv_heads: int = 8
    head_size: int = 128
    block_size: int = 16
    dtype: str = "bfloat16"
    context: int = 1024  # longest context of a batch; sequences get 1/4..1 of it
    prefill_chunk: int = 64  # query tokens of a prefill-chunk sequence
    max_num_seqs: int = 64

    @property
    def seq_threshold_3d(self) -> int:
        return MIN_LAUNCH_GRID_SIZE_2D // self.num_kv_heads


# The CPU demo / tests: small enough for Triton's interpreter; fp32 (3.6's interpreter gets bf16 tl.dot wrong).
CPU_SHAPE = Shape(num_query_heads=4, num_kv_heads=2, head_size=32, block_size=16, dtype="float32",
                  context=40, prefill_chunk=5, max_num_seqs=8)


@dataclass(frozen=True)
class Spec:
    num_seqs: int
    kind: str  # decode | prefill | mixed
    mode: str  # 2d: no 3D buffers given (vLLM's 2D-only path); 3d: buffers given, vLLM picks

    @property
    def name(self) -> str:
        return f"{self.kind} n={self.num_seqs} {self.mode}"

    def is_3d(self, shape: Shape) -> bool:
        """What vLLM's unified_attention() will launch (its own rule, for labelling and de-duplication)."""
        return self.mode == "3d" and self.kind == "decode" and self.num_seqs <= shape.seq_threshold_3d


def matrix(num_seqs: tuple[int, ...], kinds: tuple[str, ...], modes: tuple[str, ...], shape: Shape) -> list[Spec]:
    """Every (num_seqs, kind, mode), without "3d" cases that vLLM would run in 2D (duplicates of a 2d case)."""
    out = []
    for kind in kinds:
        for mode in modes:
            for n in num_seqs:
                s = Spec(n, kind, mode)
                if mode == "2d" or s.is_3d(shape):
                    out.append(s)
    return out


class Batch:
    """Tensors of one batch; `attention_kwargs()` / `cache_write_args()` are vLLM's wrapper arguments."""

    def __init__(self, spec: Spec, shape: Shape, device: str, seed: int = 0):
        import torch

        if spec.num_seqs > shape.max_num_seqs:
            raise ValueError(f"num_seqs {spec.num_seqs} > max_num_seqs {shape.max_num_seqs}")
        g = torch.Generator().manual_seed(seed * 1000 + spec.num_seqs)
        dt = getattr(torch, shape.dtype)
        self.spec, self.shape, self.device = spec, shape, device
        n, hq, hk, d, bs = spec.num_seqs, shape.num_query_heads, shape.num_kv_heads, shape.head_size, shape.block_size
        q_lens = [1] * n if spec.kind == "decode" else [shape.prefill_chunk] * n
        if spec.kind == "mixed":
            q_lens = [shape.prefill_chunk] + [1] * (n - 1)
        lo = max(1, shape.context // 4)
        seq_lens = [int(x) for x in torch.randint(lo, shape.context + 1, (n,), generator=g)]
        seq_lens = [max(s, q) for s, q in zip(seq_lens, q_lens)]
        max_blocks = -(-shape.context // bs)
        num_blocks = n * max_blocks + 1
        tokens = sum(q_lens)
        rnd = lambda *s: torch.randn(*s, generator=g).to(dt).to(device)  # noqa: E731
        # vLLM's fused qkv projection output; q, k, v are views of it (as after the qkv split)
        qkv = rnd(tokens, (hq + 2 * hk) * d)
        self.q = qkv[:, : hq * d].view(tokens, hq, d)
        self.k = qkv[:, hq * d: (hq + hk) * d].view(tokens, hk, d)
        self.v = qkv[:, (hq + hk) * d:].view(tokens, hk, d)
        self.out = torch.empty(tokens, hq, d, dtype=dt, device=device)
        # physical [num_blocks, block_size, kv_heads, 2*head]; logical (B, H, N, 2*hs) is its permutation
        self.kv_cache = rnd(num_blocks, bs, hk, 2 * d).permute(0, 2, 1, 3)
        blocks = torch.randperm(num_blocks - 1, generator=g)[: n * max_blocks].view(n, max_blocks).int() + 1
        self.block_table_buffer = torch.zeros(shape.max_num_seqs, max_blocks, dtype=torch.int32)
        self.block_table_buffer[:n] = blocks
        self.block_table_buffer = self.block_table_buffer.to(device)
        starts = [0]
        for ql in q_lens:
            starts.append(starts[-1] + ql)
        self.query_start_loc = torch.tensor(starts, dtype=torch.int32, device=device)
        self.seq_lens = torch.tensor(seq_lens, dtype=torch.int32, device=device)
        slots = [int(blocks[i, p // bs]) * bs + p % bs
                 for i, (sl, ql) in enumerate(zip(seq_lens, q_lens)) for p in range(sl - ql, sl)]
        self.slot_mapping = torch.tensor(slots, dtype=torch.int64, device=device)
        self.max_seqlen_q, self.max_seqlen_k = max(q_lens), max(seq_lens)
        self.k_scale = torch.ones((), dtype=torch.float32, device=device)
        self.v_scale = torch.ones((), dtype=torch.float32, device=device)
        segs, dp = NUM_PAR_SOFTMAX_SEGMENTS, 1 << (d - 1).bit_length()
        self.segm = None
        if spec.mode == "3d":
            t = shape.seq_threshold_3d
            self.segm = (torch.empty(t, hq, segs, dp, dtype=torch.float32, device=device),
                         torch.empty(t, hq, segs, dtype=torch.float32, device=device),
                         torch.empty(t, hq, segs, dtype=torch.float32, device=device))

    def key_value_caches(self) -> tuple[Any, Any]:
        """(B, H, N, 2*hs) -> ((B, N, H, hs), (B, N, H, hs)), as TritonAttentionImpl splits them."""
        return self.kv_cache.transpose(1, 2).split(self.shape.head_size, dim=-1)

    def attention_kwargs(self) -> dict:
        k, v = self.key_value_caches()
        n, hk = self.spec.num_seqs, self.shape.num_kv_heads
        kw = dict(q=self.q, k=k, v=v, out=self.out, cu_seqlens_q=self.query_start_loc,
                  max_seqlen_q=self.max_seqlen_q, seqused_k=self.seq_lens, max_seqlen_k=self.max_seqlen_k,
                  softmax_scale=self.shape.head_size ** -0.5, causal=True, window_size=(-1, -1),
                  block_table=self.block_table_buffer[:n], softcap=0, q_descale=None,
                  k_descale=self.k_scale.expand(n, hk), v_descale=self.v_scale.expand(n, hk))
        if self.segm is not None:
            kw.update(seq_threshold_3D=self.shape.seq_threshold_3d, num_par_softmax_segments=NUM_PAR_SOFTMAX_SEGMENTS,
                      softmax_segm_output=self.segm[0], softmax_segm_max=self.segm[1],
                      softmax_segm_expsum=self.segm[2])
        return kw

    def cache_write_args(self) -> tuple:
        k, v = self.key_value_caches()
        return (self.k, self.v, k, v, self.slot_mapping, "auto", self.k_scale, self.v_scale)

    def outputs(self) -> list:
        """What one step writes: the KV cache (by the cache write) and the attention output."""
        return [self.kv_cache, self.out]


def wrappers() -> tuple[Any, Any]:
    """vLLM's unified_attention() and triton_reshape_and_cache_flash() (import vllm first)."""
    return (importlib.import_module(UNIFIED).unified_attention,
            importlib.import_module(CACHE).triton_reshape_and_cache_flash)


def step(batch: Batch) -> None:
    """One layer's attention as vLLM runs it: the KV-cache write, then unified attention."""
    attention, cache_write = wrappers()
    cache_write(*batch.cache_write_args())
    attention(**batch.attention_kwargs())


def bits(t: Any) -> Any:
    """A tensor's bit pattern (NaN payloads compared exactly; -0.0 != 0.0)."""
    import torch

    ints = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.contiguous().view(ints[t.element_size()])


def reference_attention(batch: Batch) -> Any:
    """Causal paged attention in fp32 torch from the batch's KV cache (after the cache write): what
    unified_attention() should produce, up to rounding. Checks that the batch is laid out as vLLM's."""
    import torch

    k_cache, v_cache = batch.key_value_caches()
    bs, group = batch.shape.block_size, batch.shape.num_query_heads // batch.shape.num_kv_heads
    out = torch.empty(batch.out.shape, dtype=torch.float32, device=batch.out.device)
    starts, lens = batch.query_start_loc.tolist(), batch.seq_lens.tolist()
    for i, seq_len in enumerate(lens):
        blocks = batch.block_table_buffer[i, : -(-seq_len // bs)].long()
        keys = k_cache[blocks].reshape(-1, *k_cache.shape[2:])[:seq_len].float().repeat_interleave(group, 1)
        vals = v_cache[blocks].reshape(-1, *v_cache.shape[2:])[:seq_len].float().repeat_interleave(group, 1)
        q = batch.q[starts[i]: starts[i + 1]].float()
        scores = torch.einsum("qhd,khd->hqk", q, keys) * batch.shape.head_size ** -0.5
        pos_q = torch.arange(seq_len - q.shape[0], seq_len, device=q.device)[:, None]
        scores = scores.masked_fill(torch.arange(seq_len, device=q.device)[None, :] > pos_q, float("-inf"))
        out[starts[i]: starts[i + 1]] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), vals)
    return out
