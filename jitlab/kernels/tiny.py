"""The smallest useful kernel: three runtime arguments, one constexpr. Measures pure launch cost."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from jitlab.kernels.case import Case


@triton.jit
def add_one(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    # fp32 math: the interpreter cannot build bf16 scalar constants (`bf16 + 1` fails there)
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    tl.store(out_ptr + offs, (x + 1).to(out_ptr.dtype.element_ty), mask=mask)


def reference(x: torch.Tensor) -> torch.Tensor:
    return (x.float() + 1).to(x.dtype)


def make_case(device, dtype=torch.float32, n: int = 4096, block: int = 1024) -> Case:
    x = torch.randn(n, generator=torch.Generator().manual_seed(0)).to(dtype).to(device)
    out = torch.empty_like(x)
    return Case(
        name="tiny",
        kernel=add_one,
        grid=(triton.cdiv(n, block),),
        args=(x, out, n),
        kwargs={"BLOCK": block},
        outputs=[out],
        reference=lambda: [reference(x)],
        varying_ints=("n",),
    )
