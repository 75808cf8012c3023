"""Kernel workloads: the one registry of what the experiments and tests launch (see `case.py`).

A workload is a `make_case(device, dtype=..., **shape) -> Case` builder in a module of this package
plus the two shapes the launch-overhead experiment uses: the decode shape on a GPU and a small one
for the CPU demonstration under Triton's interpreter, whether the launch-overhead sweep runs it
(`sweep`), and which kernel of the e2e decode loop it stands for (`decode`). Adding a workload is
one entry here; the experiments, the decode loop and the notebooks read these.

Modules are imported on first use, so importing this package does not import Triton.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from jitlab.kernels.case import Case

# The CPU demo's attention shape: small enough for the interpreter, same code paths as the GPU's.
_CPU_ATTENTION = {"num_seqs": 2, "context": 20, "num_query_heads": 4, "num_kv_heads": 2, "head_size": 16}
# The decode shape of the issue: timing holds the GPU busy, so kernel run time never enters host numbers.
_GPU_ATTENTION = {"num_seqs": 16, "context": 1024}


@dataclass(frozen=True)
class Workload:
    name: str
    module: str  # under jitlab.kernels
    builder: str  # its make_case function
    gpu_shape: dict  # builder keywords on a CUDA GPU
    cpu_shape: dict  # builder keywords for the CPU demonstration (always fp32 there)
    sweep: str = ""  # in the launch-overhead sweep: "quick" (also in --quick), "full" (default run only), ""
    decode: str = ""  # the e2e decode loop's kernel kind it stands for (attention: by 2D/3D), or ""


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("tiny", "tiny", "make_case", {}, {"n": 256}, sweep="quick"),
    Workload("paged_attention_2d", "paged_attention", "make_case", _GPU_ATTENTION, _CPU_ATTENTION, sweep="quick"),
    Workload("unified_attention_2d", "unified_attention", "make_case_2d", _GPU_ATTENTION, _CPU_ATTENTION,
             sweep="quick", decode="attn_2d"),
    Workload("unified_attention_3d", "unified_attention", "make_case_3d", _GPU_ATTENTION, _CPU_ATTENTION,
             sweep="full", decode="attn_3d"),
    Workload("cache_write", "cache_write", "make_case", {"num_tokens": 16},
             {"num_tokens": 4, "num_heads": 2, "head_size": 16, "num_blocks": 8}, sweep="full", decode="cache"),
    Workload("rms_norm", "layers", "make_rms_norm_case", {}, {"num_tokens": 2, "hidden": 64}, decode="rms"),
    Workload("rope", "layers", "make_rope_case", {},
             {"num_tokens": 2, "num_q_heads": 4, "num_kv_heads": 2, "head_size": 16, "max_position": 32},
             decode="rope"),
    Workload("silu_and_mul", "layers", "make_silu_and_mul_case", {}, {"num_tokens": 2, "intermediate": 64},
             decode="silu"),
    Workload("many_args", "many_args", "make_case", {}, {}),
)}


def launch_sweep(quick: bool = False) -> tuple[str, ...]:
    """The workloads of the launch-overhead experiment (its default run, or --quick), in order."""
    return tuple(n for n, w in WORKLOADS.items() if w.sweep == "quick" or (w.sweep == "full" and not quick))


def decode_workloads() -> dict[str, str]:
    """{e2e decode kernel kind: workload} (attention split into attn_2d / attn_3d)."""
    return {w.decode: n for n, w in WORKLOADS.items() if w.decode}


def _workload(name: str) -> Workload:
    w = WORKLOADS.get(name)
    if w is None:
        raise ValueError(f"unknown workload {name!r}; valid choices: {sorted(WORKLOADS)}")
    return w


def builder(name: str) -> Callable[..., Case]:
    """The `make_case` callable of workload `name` (imports its module now)."""
    w = _workload(name)
    return getattr(importlib.import_module(f"{__name__}.{w.module}"), w.builder)


def make_case(name: str, cuda: bool) -> Case:
    """Workload `name` at its registered shape: the GPU shape on "cuda", else the CPU demo's in fp32
    (Triton 3.6's interpreter gets bf16 `tl.dot` wrong: see `jitlab._triton.interpreter`)."""
    w = _workload(name)
    if cuda:
        return builder(name)("cuda", **w.gpu_shape)
    import torch

    return builder(name)("cpu", **{"dtype": torch.float32, **w.cpu_shape})


__all__ = ["WORKLOADS", "Case", "Workload", "builder", "decode_workloads", "launch_sweep", "make_case"]
