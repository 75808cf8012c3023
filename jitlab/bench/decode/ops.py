"""Kernel sets per mode (stock, jitlab safe, jitlab tuned policies) and the operations a step launches."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import triton

from ... import kernels
from ..._triton.introspect import parameter_names
from ..._triton.interpreter import interpreted
from ...kernels import cache_write as _cw
from ...kernels import layers as _layers
from ...kernels import unified_attention as _ua
from ...policy import Policy



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
    # --attention vllm: KV write + attention through vLLM's wrappers (cache/attn/reduce are None)
    vllm: Any = None  # vllm_attention.VllmAttention
    vllm_wrappers: dict = field(default_factory=dict)  # the plugin's jitcache wrappers while active()

    def items(self) -> list[tuple[str, Any]]:
        return [("rms", self.rms), ("rope", self.rope), ("cache", self.cache), ("attn", self.attn),
                ("reduce", self.reduce), ("silu", self.silu)]

    def jit(self) -> list[Any]:
        """The JitCache objects of this set (empty for stock; with vLLM attention, the plugin's while active)."""
        return [k for _, k in self.items() if hasattr(k, "counters")] + list(self.vllm_wrappers.values())

    @contextlib.contextmanager
    def active(self):
        """Where this set's launches go: a no-op for the project's kernels; with vLLM attention, the
        plugin installed with this set's policy (jitlab sets) or vLLM's kernels unwrapped (stock)."""
        if self.vllm is None:
            yield self
            return
        with self.vllm.installed(self.name, self.scope) as wrappers:
            self.vllm_wrappers = wrappers
            try:
                yield self
            finally:
                self.vllm_wrappers = {}

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
TUNED_POLICY_NAME = "e2e_tuned"
# The tuned policies are data, package data next to this module (the reasoning is in the file).
TUNED_POLICIES = Path(__file__).with_name("tuned_policies.toml")
# The Case (registered workload, jitlab.kernels.decode_workloads) whose argument groups each kernel's
# policy refers to; attention's is the 3D launch's (same kernel, every segm_* argument in use).
_WORKLOAD = {("attn" if kind == "attn_3d" else kind): name for kind, name in kernels.decode_workloads().items()
             if kind != "attn_2d"}


def _policy_cases() -> dict[str, Any]:
    """Tiny CPU Cases of each kernel: only their name lists are used (strides, fixed_per_model,
    varying_constexprs, varying_ints)."""
    cases = {key: kernels.make_case(name, cuda=False) for key, name in _WORKLOAD.items()}
    cases["reduce"] = cases["attn"].extra["reduce"]
    return cases


def tuned_policies(verify: int = 0, path: str | Path = TUNED_POLICIES) -> dict[str, Policy]:
    """The tuned policy of each kernel, from `path` (tuned_policies.toml here) resolved against the
    kernel's Case; with `verify`, every hit re-derives Triton's key and checks the frozen values."""
    from ...policy import per_kernel_tables, policy_of

    cases = _policy_cases()
    tables = per_kernel_tables(path, RAW_KERNELS)
    out = {}
    for key in RAW_KERNELS:
        pol = policy_of({**tables[key], "name": TUNED_POLICY_NAME + ("+verify" if verify else ""), "verify": verify},
                         cases[key])
        frozen_per_layer = sorted(set(pol.assume_const) & set(PER_LAYER_ARGS))
        if frozen_per_layer:
            raise ValueError(f"{path}: policy.{key} freezes {frozen_per_layer}, which change from layer to layer")
        pol.validate(key, *parameter_names(RAW_KERNELS[key]))
        out[key] = pol
    return out


VLLM_REPLACES = ("cache", "attn", "reduce")  # what --attention vllm launches through vLLM's wrappers instead


def make_kernel_sets(cuda: bool, scope: str, vllm: Any = None) -> dict[str, KernelSet]:
    """stock, jitlab_safe, jitlab_tuned (under `scope`) and jitlab_tuned_verify (same policies with
    verify=1: every hit re-derives Triton's key and checks the frozen values; used for the checks).
    With `vllm` (vllm_attention.VllmAttention) the KV write and attention of every set are vLLM's
    wrappers and kernels, wrapped by the plugin with the set's policy while the set is active()."""
    from ... import jitcache

    raw = dict(RAW_KERNELS) if cuda else {k: interpreted(v) for k, v in RAW_KERNELS.items()}
    if vllm is not None:
        raw = {k: (None if k in VLLM_REPLACES else v) for k, v in raw.items()}

    def wrap(pol: Policy | None, k: Any) -> Any:
        return None if k is None else (jitcache(k) if pol is None else jitcache(policy=pol)(k))

    extra = {} if vllm is None else {"vllm": vllm}
    def pols_of(name: str, pols: dict) -> dict:
        if vllm is None:
            return pols
        return {**{k: p for k, p in pols.items() if k not in VLLM_REPLACES}, **vllm.policies(name)}

    sets = {"stock": KernelSet("stock", **raw, **extra)}
    sets["jitlab_safe"] = KernelSet("jitlab_safe", **{k: wrap(None, v) for k, v in raw.items()},
                                    policies=pols_of("jitlab_safe", {k: Policy() for k in raw}), **extra)
    for name, verify in (("jitlab_tuned", 0), ("jitlab_tuned_verify", 1)):
        pols = tuned_policies(verify=verify)
        sets[name] = KernelSet(name, **{k: wrap(pols[k], v) for k, v in raw.items()},
                               policies=pols_of(name, pols), scope=scope, **extra)
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
        if ks.vllm is not None:  # --attention vllm: vLLM's wrappers (which kernels: the set's active())
            self.cache_write, self.attention = ks.vllm.cache_write, ks.vllm.attention

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


class CountingKernel:
    """Stands in for a kernel during a counted call: `k[grid]` counts one Triton launch (also under
    `triton.<name>`), then launches the kernel it wraps."""

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
        counted = KernelSet(ks.name, **{k: CountingKernel(v, self.counts, k) for k, v in ks.items()},
                            policies=ks.policies, scope=ks.scope, vllm=ks.vllm)
        super().__init__(counted)
        self.graph_kernels = graph_kernels if graph_kernels is not None else {}
        if ks.vllm is not None:  # count vLLM's kernels where vLLM's wrappers launch them (by their names)
            vllm = ks.vllm

            def cache_write(*args: Any) -> None:
                with vllm.counting(self.counts):
                    vllm.cache_write(*args)

            def attention(*args: Any) -> None:
                with vllm.counting(self.counts):
                    vllm.attention(*args)

            self.cache_write, self.attention = cache_write, attention

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
