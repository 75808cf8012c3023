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


CPU_DEMO = "CPU demo, not a measurement"


def _present(v: Any) -> bool:
    """False for None and for a DataFrame cell's missing value (NaN, or pandas.NA, whose truth raises)."""
    if v is None:
        return False
    try:
        return bool(v == v)
    except TypeError:  # pandas.NA
        return False


def is_cpu_demo(attrs: dict) -> bool:
    label = attrs.get("jitlab.experiment.label")
    if _present(label) and "CPU" in str(label):
        return True
    cuda = attrs.get("jitlab.provenance.cuda_available", attrs.get("resource.jitlab.cuda.available"))
    return _present(cuda) and not bool(cuda)


def _demo_line(attrs: dict) -> list[str]:
    return [f"**{CPU_DEMO}** (no CUDA GPU: Triton's interpreter, jitlab in pass-through).", ""] \
        if is_cpu_demo(attrs) else []


def provenance_line(attrs: dict) -> str:
    def g(k: str) -> str:
        v = attrs.get(f"jitlab.provenance.{k}")
        return "?" if v is None or v != v else str(v)

    return (f"{g('gpu')} (host CPU {g('cpu')}), driver {g('driver')}, torch {g('torch')}, triton {g('triton')}, "
            f"jitlab {g('jitlab_commit')}, {g('date')}")
