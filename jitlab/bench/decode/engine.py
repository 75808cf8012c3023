"""The engine: persistent buffers, views per step, the forward pieces, CUDA graphs, and a torch reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ...kernels import layers as _layers
from ...kernels import unified_attention as _ua
from .model import BlockAllocator, Model, Plan, SeqTable
from .ops import CountingOps, KernelSet, Ops



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

    def __init__(self, model: Model, max_tokens: int, max_seqs: int, max_model_len: int, kv_layout: str = "jitlab"):
        """kv_layout: "jitlab" ([num_blocks, 2, block, heads, head] per layer, the project's kernels) or
        "vllm" (vLLM's TRITON_ATTN physical layout; each layer gets the same logical view of it)."""
        if kv_layout not in ("jitlab", "vllm"):
            raise ValueError(f"kv_layout must be 'jitlab' or 'vllm', got {kv_layout!r}")
        self.kv_layout = kv_layout
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
        g = torch.Generator(device=self.device).manual_seed(seed + 12345)
        if self.kv_layout == "vllm":
            from .vllm_attention import vllm_layout

            self.kv, self.kv_layers = vllm_layout(num_layers, num_blocks, cfg.block_size, cfg.num_kv_heads,
                                                  cfg.head_size, cfg.torch_dtype, self.device)
            for view in self.kv_layers:  # the same values as the jitlab layout, position by position
                view.copy_(torch.empty(view.shape, dtype=view.dtype, device=self.device).normal_(generator=g))
        else:
            self.kv = torch.empty((num_layers, num_blocks, 2, cfg.block_size, cfg.num_kv_heads, cfg.head_size),
                                  dtype=cfg.torch_dtype, device=self.device)
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
    from ...kernels.unified_attention import reference_attention

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
