"""Text for tables and reports: the one number formatter and the one run caption."""

from __future__ import annotations

from typing import Any


def num(x: Any, fmt: str = "{:.2f}", missing: str = "") -> str:
    """`x` formatted with `fmt` when it is a number, else `missing` (None, NaN-free strings, absent)."""
    return fmt.format(x) if isinstance(x, (int, float)) else missing


def caption(prov: dict, trace_file: Any) -> str:
    """The caption under a printed results table: where it ran (jitlab.provenance) and its trace file."""
    return (f"{prov.get('gpu', '?')} · driver {prov.get('driver', '?')} · torch {prov.get('torch', '?')} · "
            f"triton {prov.get('triton', '?')} · jitlab {prov.get('jitlab_commit', '?')} · {prov.get('date', '')}"
            f"\ntrace: {trace_file}")
