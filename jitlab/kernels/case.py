"""A launchable workload: one Triton kernel plus the arguments of one realistic launch.

Tests and experiments share these, so a benchmark always launches what the tests checked.
"""

from __future__ import annotations

import sys

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Case:
    name: str
    kernel: Any  # the raw @triton.jit JITFunction (undecorated)
    grid: tuple | Callable[[dict], tuple]
    args: tuple  # positional arguments (empty when launched by keyword, as vLLM does)
    kwargs: dict  # keyword arguments, constexprs and launch options (num_warps, ...)
    outputs: list  # tensors the kernel writes; poisoned before a checked launch
    reference: Callable[[], list]  # torch reference for `outputs`, same order
    # Which runtime arguments are fixed per model/config (what the seed put in assume_const):
    strides: tuple[str, ...] = ()
    scales: tuple[str, ...] = ()
    fixed_per_model: tuple[str, ...] = ()  # every runtime argument that never changes for a model
    # The minimal checks for this workload (what the seed's relaxed policy checked):
    varying_constexprs: tuple[str, ...] = ()  # constexprs that may change between steps
    varying_ints: tuple[str, ...] = ()  # runtime ints whose ==1 / %16 class may change between steps
    atol: float = 1e-2
    rtol: float = 1e-2
    extra: dict = field(default_factory=dict)  # follow-up launches (e.g. 3D attention's segment reduce)

    def __post_init__(self) -> None:
        # Keyword names written literally at a call site are interned strings, which CPython matches
        # by identity; names built at run time are compared character by character (4x slower for 36
        # keywords). Intern them so every variant is timed as a real call site would be.
        self.kwargs = {sys.intern(k): v for k, v in self.kwargs.items()}

    def launch(self, kernel=None) -> None:
        """Launch `kernel` (default: the raw Triton kernel) with this case's arguments."""
        (kernel or self.kernel)[self.grid](*self.args, **self.kwargs)

    def poison(self) -> None:
        for t in self.outputs:
            if t.is_floating_point():
                t.fill_(float("nan"))
            else:
                t.fill_(-1)

    def check(self) -> None:
        """Compare outputs with the torch reference; raises AssertionError naming the output."""
        import torch

        for i, (got, want) in enumerate(zip(self.outputs, self.reference())):
            torch.testing.assert_close(got.float(), want.float(), atol=self.atol, rtol=self.rtol,
                                       msg=lambda m: f"{self.name} output {i}: {m}")
