"""jitlab as a vLLM plugin: vLLM's own Triton attention kernels behind jitcache.

    pip install "jitlab[vllm]"                     # registers the entry point below
    JITLAB_VLLM_POLICY=tuned vllm serve ... --attention-backend TRITON_ATTN

vLLM loads `jitlab.vllm:register` (group `vllm.general_plugins`) in each of its processes; it wraps
the kernels listed in `known.py` with the policy named by JITLAB_VLLM_POLICY (`policies.toml`).
`uninstall()` puts vLLM's kernels back. Importing this package imports neither vLLM nor Triton.
"""

from __future__ import annotations

from .plugin import install, installed, register, uninstall

unwrap = uninstall

__all__ = ["register", "install", "uninstall", "unwrap", "installed"]
