"""The vLLM Triton kernels the plugin wraps, and their signatures as vLLM 0.26.0 ships them.

Written from the 0.26.0 wheel (jitlab.vllm.kernel_files, then jitlab._triton.params_of). A vLLM
whose kernels differ from these is left unwrapped (jitlab.vllm.probe). Each kernel is looked up
in its module"s globals by vLLM"s Python wrapper at every call (`kernel[grid](...)`), which is what
makes replacing the global enough.
"""

from __future__ import annotations

from typing import NamedTuple

VLLM_VERSION = "0.26.0"
UNIFIED = "vllm.v1.attention.ops.triton_unified_attention"  # launched by unified_attention()
CACHE = "vllm.v1.attention.ops.triton_reshape_and_cache_flash"  # launched by triton_reshape_and_cache_flash*()


class Kernel(NamedTuple):
    module: str
    name: str
    params: tuple[str, ...]  # in order; a constexpr is written "NAME:constexpr"


KERNELS = (
    Kernel(UNIFIED, "kernel_unified_attention", (
        "output_ptr", "query_ptr", "key_cache_ptr", "value_cache_ptr", "sink_ptr", "block_tables_ptr",
        "seq_lens_ptr", "alibi_slopes_ptr", "qq_bias_ptr", "scale", "q_scale", "k_scale", "v_scale",
        "out_scale", "softcap", "num_query_heads:constexpr", "num_queries_per_kv:constexpr",
        "block_table_stride", "query_stride_0", "query_stride_1", "output_stride_0", "output_stride_1",
        "qq_bias_stride_0", "BLOCK_SIZE:constexpr", "TILE_SIZE:constexpr", "HEAD_SIZE:constexpr",
        "HEAD_SIZE_PADDED:constexpr", "USE_ALIBI_SLOPES:constexpr", "USE_ALIBI_SQRT:constexpr",
        "USE_QQ_BIAS:constexpr", "USE_SOFTCAP:constexpr", "USE_SINKS:constexpr", "SLIDING_WINDOW:constexpr",
        "USE_CAUSAL:constexpr", "USE_PER_SEQ_CAUSAL:constexpr", "per_seq_causal_ptr",
        "USE_MM_PREFIX:constexpr", "MAX_MM_RANGES:constexpr", "mm_prefix_range_ptr", "rswa_prefix_lens_ptr",
        "R_SWA_WINDOW:constexpr", "USE_R_SWA:constexpr", "stride_k_cache_0", "stride_k_cache_1",
        "stride_k_cache_2", "stride_k_cache_3:constexpr", "stride_v_cache_0", "stride_v_cache_1",
        "stride_v_cache_2", "stride_v_cache_3:constexpr", "query_start_len_ptr", "BLOCK_Q:constexpr",
        "num_seqs", "BLOCK_M:constexpr", "NUM_SEGMENTS_PER_SEQ:constexpr", "USE_FP8:constexpr",
        "IS_3D:constexpr", "segm_output_ptr", "segm_max_ptr", "segm_expsum_ptr", "k_scale_cache_ptr",
        "v_scale_cache_ptr", "stride_ks_blk", "stride_ks_slot", "stride_ks_head", "stride_vs_blk",
        "stride_vs_slot", "stride_vs_head", "KV_QUANT_MODE:constexpr", "FP8_MIN:constexpr",
        "FP8_MAX:constexpr", "CHUNK_LOOKBACK:constexpr", "CHUNK_SIZE:constexpr", "USE_TD:constexpr",
        "USE_TD_QO:constexpr", "Q_IS_FP8:constexpr", "MM_PREFIX_CLAMP_SW:constexpr",
    )),
    Kernel(UNIFIED, "reduce_segments", (
        "output_ptr", "segm_output_ptr", "segm_max_ptr", "segm_expsum_ptr", "seq_lens_ptr", "num_seqs",
        "num_query_heads:constexpr", "out_scale_inv", "output_stride_0", "output_stride_1",
        "block_table_stride", "TILE_SIZE:constexpr", "HEAD_SIZE:constexpr", "HEAD_SIZE_PADDED:constexpr",
        "query_start_len_ptr", "BLOCK_Q:constexpr", "NUM_SEGMENTS_PER_SEQ:constexpr", "USE_FP8:constexpr",
        "FP8_MIN:constexpr", "FP8_MAX:constexpr",
    )),
    Kernel(CACHE, "reshape_and_cache_kernel_flash", (
        "key_ptr", "value_ptr", "key_cache_ptr", "value_cache_ptr", "slot_mapping_ptr", "k_scale",
        "v_scale", "key_stride", "value_stride", "block_stride", "head_stride", "dim_stride_k",
        "dim_stride_v", "page_stride", "num_heads:constexpr", "head_size:constexpr", "block_size:constexpr",
        "x:constexpr", "USE_HEAD_MAJOR_LAYOUT:constexpr", "FP8_KV_CACHE:constexpr", "TILE_SIZE:constexpr",
    )),
    Kernel(CACHE, "_reshape_cache_per_token_head", (
        "key_ptr", "value_ptr", "key_cache_ptr", "value_cache_ptr", "k_scale_cache_ptr",
        "v_scale_cache_ptr", "slot_mapping_ptr", "stride_key_tok", "stride_key_head", "stride_val_tok",
        "stride_val_head", "stride_kc_blk", "stride_kc_slot", "stride_kc_head", "stride_vc_blk",
        "stride_vc_slot", "stride_vc_head", "stride_ks_blk", "stride_ks_slot", "stride_ks_head",
        "stride_vs_blk", "stride_vs_slot", "stride_vs_head", "block_size:constexpr", "head_size:constexpr",
        "head_size_v:constexpr", "HEAD_SIZE_PADDED:constexpr", "QUANT_MAX:constexpr", "QUANT_MIN:constexpr",
        "IS_INT_QUANT:constexpr",
    )),
    Kernel(CACHE, "reshape_and_cache_kernel_flash_diffkv", (
        "key_ptr", "value_ptr", "kv_cache_ptr", "slot_mapping_ptr", "k_scale", "v_scale", "key_stride",
        "value_stride", "block_stride", "page_stride", "head_stride", "num_heads:constexpr",
        "head_size_k:constexpr", "head_size_v:constexpr", "block_size:constexpr", "FP8_KV_CACHE:constexpr",
        "TILE_SIZE:constexpr",
    )),
)
