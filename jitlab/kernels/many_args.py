"""26 runtime arguments (13 pointers, 13 i32) and almost no work: the launch-overhead case of the notes.

Timed launcher against launcher by `python -m jitlab.bench.native_launch`; its parameter layout is
checked against the driver's in tests/gpu/test_native_gpu.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from jitlab.kernels.case import Case


@triton.jit
def many_args(p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12,
              n0, n1, n2, n3, n4, n5, n6, n7, n8, n9, n10, n11, n12):
    v = n0 + n1 + n2 + n3 + n4 + n5 + n6 + n7 + n8 + n9 + n10 + n11 + n12
    tl.store(p0 + tl.program_id(0), v)


def make_case(device, dtype=torch.int32) -> Case:
    ptrs = [torch.zeros(64, device=device, dtype=dtype) for _ in range(13)]
    ints = list(range(3, 16))
    want = torch.tensor([sum(ints)], device=device, dtype=dtype)
    return Case(name="many_args", kernel=many_args, grid=(1,), args=tuple(ptrs + ints), kwargs={},
                outputs=[ptrs[0][:1]], reference=lambda: [want])
