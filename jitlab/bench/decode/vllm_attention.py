"""`--attention vllm`: each layer's KV-cache write and attention through vLLM's own code.

The decode loop keeps everything else (norms, GEMMs, RoPE, SiLU, staging, graphs); per layer it calls
vLLM 0.26's `triton_reshape_and_cache_flash()` and `unified_attention()` (the wrappers vLLM's
TRITON_ATTN backend calls), with the arguments `TritonAttentionImpl.forward` passes (mapping as in
jitlab.bench.vllm_batches: k/v caches `kv_cache[:, 0]` / `kv_cache[:, 1]`, NHD; per-layer scales
expanded to `[num_seqs, num_kv_heads]`; the 3D split-KV buffers and threshold of its metadata
builder). vLLM's files come from an installed vLLM or from `--vllm-dir` (experiments/vllm_carry.sh),
loaded by jitlab.bench.vllm_kernels.load_vllm.

Which kernels those wrappers launch is decided by vLLM's module globals: the stock modes leave them
alone (vLLM's plain Triton kernels); the jitlab modes install the plugin (`jitlab.vllm.install`) for
the mode's trial with the mode's policy (`safe`, or the plugin's shipped `tuned`; `verify=1` for the
tuned check steps) in the mode's scope, and uninstall it afterwards (`VllmAttention.installed`).

KV layout: vLLM's TRITON_ATTN cache is physical `[num_blocks, block_size, num_kv_heads, 2 * head]`
(K and V split from the last dimension). The engine allocates that and hands each layer the logical
view `[num_blocks, 2, block_size, num_kv_heads, head]` of it, so `kv[:, 0]` / `kv[:, 1]` are exactly
the K / V views vLLM passes, and the engine's reference indexes it as it indexes its own layout.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import Any, Iterator

import torch

from .ops import CountingKernel

log = logging.getLogger(__name__)

ATTENTIONS = ("jitlab", "vllm")
# kernel set -> (plugin policy of jitlab.vllm's shipped policies.toml, verify); stock: not installed
PLUGIN_POLICY = {"stock": None, "jitlab_safe": ("safe", 0), "jitlab_tuned": ("tuned", 0),
                 "jitlab_tuned_verify": ("tuned", 1)}
NUM_PAR_SOFTMAX_SEGMENTS = 16  # vLLM 0.26.0 triton_attn.py
MIN_LAUNCH_GRID_SIZE_2D = 128  # vLLM 0.26.0 triton_attn.py: 3D while num_seqs <= 128 // num_kv_heads


def vllm_layout(num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_size: int,
                dtype: torch.dtype, device: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """vLLM's physical KV cache for `num_layers` layers, and per layer the logical view
    [num_blocks, 2, block_size, num_kv_heads, head_size] of it (see the module docstring)."""
    phys = torch.empty((num_layers, num_blocks, block_size, num_kv_heads, 2 * head_size), dtype=dtype, device=device)
    views = [phys[i].view(num_blocks, block_size, num_kv_heads, 2, head_size).permute(0, 3, 1, 2, 4)
             for i in range(num_layers)]
    return phys, views


class VllmAttention:
    """vLLM's two wrappers, the modules whose globals they launch, and the plugin per kernel set."""

    def __init__(self, vllm_dir: str, cuda: bool):
        from .. import vllm_batches as vb
        from .. import vllm_kernels

        if not cuda:
            vllm_kernels.interpret_env()  # vLLM's kernels must be decorated under the interpreter
        self.source = vllm_kernels.load_vllm(vllm_dir)  # VllmNotFound: one line, naming --vllm-dir
        self.vllm_dir, self.cuda = vllm_dir, cuda
        self.globals = {n: importlib.import_module(m).__dict__ for n, m in vllm_kernels.KERNEL_MODULES.items()}
        self.kernel_names = tuple(vllm_kernels.KERNEL_MODULES)
        self._attention, self._cache_write = vb.wrappers()
        from ...vllm import plugin

        if plugin.installed() is not None:  # e.g. JITLAB_VLLM_POLICY through vLLM's plugin loading
            log.warning("jitlab.vllm was installed before the e2e loop; uninstalling it (each mode installs its own)")
            plugin.uninstall()

    # -- the calls of one layer (TritonAttentionImpl.forward's) ---------------------------------------------
    def cache_write(self, key, value, kv_cache, slot_mapping, k_scale, v_scale) -> None:
        self._cache_write(key, value, kv_cache[:, 0], kv_cache[:, 1], slot_mapping, "auto", k_scale, v_scale)

    def attention(self, q, kv_cache, out, qsl, seq_lens, block_table, max_q, max_k, scale, segm, k_scale,
                  v_scale) -> None:
        k, v = kv_cache[:, 0], kv_cache[:, 1]
        descale = (seq_lens.shape[0], k.shape[2])
        self._attention(q=q, k=k, v=v, out=out, cu_seqlens_q=qsl, max_seqlen_q=max_q, seqused_k=seq_lens,
                        max_seqlen_k=max_k, softmax_scale=scale, causal=True, window_size=(-1, -1),
                        block_table=block_table, softcap=0, q_descale=None, k_descale=k_scale.expand(descale),
                        v_descale=v_scale.expand(descale), seq_threshold_3D=MIN_LAUNCH_GRID_SIZE_2D // k.shape[2],
                        num_par_softmax_segments=NUM_PAR_SOFTMAX_SEGMENTS, softmax_segm_output=segm[0],
                        softmax_segm_max=segm[1], softmax_segm_expsum=segm[2])

    @contextlib.contextmanager
    def counting(self, counts: dict) -> Iterator[None]:
        """While active, every launch of vLLM's kernel globals is counted under the kernel's vLLM name."""
        saved = {n: g[n] for n, g in self.globals.items()}
        try:
            for n, g in self.globals.items():
                g[n] = CountingKernel(saved[n], counts, n)
            yield
        finally:
            for n, g in self.globals.items():
                g[n] = saved[n]

    # -- the plugin per kernel set -----------------------------------------------------------------------
    def policies(self, kernel_set: str) -> dict:
        """{vLLM kernel name: Policy} the plugin applies for this kernel set ({} for stock)."""
        from ...vllm import policies as vp

        spec = PLUGIN_POLICY[kernel_set]
        if spec is None:
            return {}
        table, groups = vp.table(vp.SHIPPED, spec[0])
        return {n: vp.for_kernel(table, groups, n).replace(verify=spec[1]) if spec[1] else
                vp.for_kernel(table, groups, n) for n in self.kernel_names}

    @contextlib.contextmanager
    def installed(self, kernel_set: str, scope: str | None) -> Iterator[dict]:
        """vLLM's kernels as this kernel set runs them: {name: jitcache wrapper} with the plugin installed
        (policy per PLUGIN_POLICY, in `scope`, else the global scope), or {} for stock (unwrapped)."""
        from ... import settings
        from ...vllm import plugin

        spec = PLUGIN_POLICY[kernel_set]
        if spec is None:
            if plugin.installed() is not None:
                raise RuntimeError("jitlab.vllm is installed while a stock mode runs vLLM's kernels")
            yield {}
            return
        state = plugin.install(spec[0], scope=scope or "global", verify=spec[1])
        if state is None:
            if not settings.SETTINGS.disable:
                raise RuntimeError(f"jitlab.vllm did not wrap vLLM's kernels (policy {spec[0]}): see the warning above")
            yield {}
            return
        try:
            yield {n: w for n, w in state.wrappers().items() if n in self.kernel_names}
        finally:
            plugin.uninstall()

    @contextlib.contextmanager
    def environment(self) -> Iterator[None]:
        """The whole run: on the CPU, vLLM's kernels under the interpreter (the labelled demo)."""
        if self.cuda:
            yield
            return
        from ..vllm_kernels import cpu_demo_patches

        with cpu_demo_patches():
            yield


def load(attention: str, vllm_dir: str, cuda: bool) -> VllmAttention | None:
    """None for the project's own kernels; vLLM's wrappers and kernels for "vllm"."""
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    return VllmAttention(vllm_dir, cuda) if attention == "vllm" else None
