"""Per-kernel launch statistics of a process, and the table `jitlab run` prints at exit.

`KernelStats.add` sees every record the process session drains (on its exporter thread, before the
records become spans or are dropped for want of a target), and keeps, per kernel, how many launches
of each outcome it saw and their host time (t_exit - t_enter). Hits are recorded as the trace level
samples them (none at `summary`), so hit time is an average over the sampled hits; misses,
fallbacks and pass-through launches are always recorded. Launch counts come from the caches'
counters (exact), not from here: `format_table` takes both.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .. import record_layout as _layout
from . import recorder as _rec

_KERNEL, _OUTCOME, _T_ENTER, _T_EXIT, _COMPILE = (_layout.INDEX[f] for f in
                                                  ("kernel", "outcome", "t_enter", "t_exit", "compile_ns"))


@dataclass
class Timing:
    n: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.n += 1
        self.ns += ns

    @property
    def us(self) -> float | None:
        return self.ns / self.n / 1e3 if self.n else None


@dataclass
class KernelTimes:
    hit: Timing = field(default_factory=Timing)  # sampled hits: jitlab's launch
    triton: Timing = field(default_factory=Timing)  # fallbacks and pass-throughs: plain Triton's launch
    miss: Timing = field(default_factory=Timing)  # first launches of a key, compile time left out


class KernelStats:
    """Host time per kernel and outcome, from drained records (see the module doc)."""

    def __init__(self) -> None:
        self.by_kernel: dict[str, KernelTimes] = {}
        self.records = 0
        self.wanted = False  # set by whoever prints the table: records without a trace target then went there
        self._lock = threading.Lock()

    def add(self, records: Iterable[tuple], string: Callable[[object], str]) -> None:
        with self._lock:
            for r in records:
                times = self.by_kernel.get(string(r[_KERNEL]))
                if times is None:
                    times = self.by_kernel[string(r[_KERNEL])] = KernelTimes()
                outcome, ns = r[_OUTCOME], r[_T_EXIT] - r[_T_ENTER]
                if outcome == _rec.HIT:
                    times.hit.add(ns)
                elif outcome == _rec.MISS:
                    times.miss.add(max(0, ns - r[_COMPILE]))
                elif outcome in (_rec.FALLBACK, _rec.PASSTHROUGH):
                    times.triton.add(ns)
                self.records += 1


def _us(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def format_table(rows: list[dict], stats: KernelStats | None, level: str, title: str) -> str:
    """One plain-text table. `rows`: one dict per kernel with `kernel` (module.qualname), `name` (the
    name records carry), `launches`, `hit`, `miss`, `fallback` and `reasons` ({reason: count})."""
    head = ("kernel", "launches", "hits", "misses", "fallbacks", "hit µs", "Triton µs", "why not a hit")
    body = []
    for r in sorted(rows, key=lambda r: -r["launches"]):
        t = stats.by_kernel.get(r["name"]) if stats is not None else None
        why = ", ".join(f"{k} x{v}" for k, v in sorted(r["reasons"].items())) or "-"
        body.append((r["kernel"], str(r["launches"]), str(r["hit"]), str(r["miss"]), str(r["fallback"]),
                     _us(t.hit.us if t else None), _us(t.triton.us if t else None), why))
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) if i in (0, 7) else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    notes = ("host µs per launch, mean over the launches the trace kept: hits sampled at "
             f"JITLAB_TRACE={level}" + (" (none: use --trace sampled or full for hit times)" if level == "summary"
                                        else "") + "; Triton µs: fallbacks and pass-throughs, all kept")
    if stats is None:
        notes = "host µs per launch: not measured (tracing did not start; see the warning above)"
    if not body:
        return f"{title}\n(no Triton kernel was launched)"
    out = [title, line(head), *(line(b) for b in body), notes]
    return "\n".join(out)
