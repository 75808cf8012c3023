"""Kernels as Triton sees them without a GPU: a JITFunction view, and a compile-only build for sm_90.

Shared by the kernel tests: compiling for an H100/H200 target runs Triton's bundled ptxas on CPU and
catches what the interpreter accepts but the compiler rejects (tl.dot shapes, dtypes, ...).
"""

from __future__ import annotations

from typing import Any

import torch

from jitlab._triton.introspect import jit_function as jit_view  # a JITFunction view, even under TRITON_INTERPRET=1

_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int32: "i32",
          torch.int64: "i64", torch.float8_e4m3fn: "fp8e4nv"}


def compile_sm90(kernel: Any, bound: dict[str, Any], num_warps: int = 4) -> Any:
    """Compile `kernel` for sm_90 with the signature its bound values imply (parameters missing from
    `bound` take their defaults; None and constexprs are constants)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = jit_view(kernel)
    sig, consts = {}, {}
    for p in kernel.params:
        v = bound.get(p.name, p.default)
        if p.is_constexpr or v is None:
            sig[p.name], consts[p.name] = "constexpr", v
        elif isinstance(v, torch.Tensor):
            sig[p.name] = "*" + _TYPES[v.dtype]
        elif isinstance(v, float):
            sig[p.name] = "fp32"
        else:
            sig[p.name] = "i64" if p.annotation == "i64" else "i32"
    return triton.compile(ASTSource(kernel, sig, consts), target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": num_warps})
