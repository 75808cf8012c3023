"""The floors: the same compiled kernel launched with prebuilt parameters through cuda-python and from C."""

from __future__ import annotations

from typing import Any

from .runner import Variant


def variants(case: Any) -> list[Variant]:
    return [Variant("cuda_python_floor", "floor", skip="not built yet"),
            Variant("c_floor", "floor", skip="not built yet")]
