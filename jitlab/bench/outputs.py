"""When two runs of a program printed "the same": the output rule of the any-program experiment.

A program's stdout is compared line by line, bitwise, after two stated exclusions:

- `mask`: regular expressions whose matches are replaced by `<masked>` on every line (timing a
  program prints inline, e.g. pytest's "1 passed in 12.34s");
- `stop_at`: a regular expression for the first line of a timing block (e.g. the `<plot_name>:`
  header `triton.testing.perf_report` prints over each benchmark table). From the first matching
  line on, lines are compared by count only: the tables hold GB/s and TFLOPS, which differ between
  any two runs, stock against stock included.

Everything before `stop_at` (tensors printed, max differences, "Triton and Torch match", assertion
failures in the traceback of a failing program) must be identical, and so must the exit status.
stderr is not compared (warnings and jitlab's own summary go there); it is kept for the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MASKED = "<masked>"


@dataclass(frozen=True)
class Rule:
    stop_at: str | None = None
    mask: tuple[str, ...] = ()

    def __post_init__(self):  # compile once, so a bad expression fails where the rule is made
        object.__setattr__(self, "_stop", re.compile(self.stop_at) if self.stop_at else None)
        object.__setattr__(self, "_masks", tuple(re.compile(m) for m in self.mask))

    def split(self, text: str) -> tuple[list[str], int]:
        """(lines compared bitwise after masking, number of lines from the first `stop_at` match on)."""
        lines = text.splitlines()
        cut = len(lines)
        if self._stop is not None:
            cut = next((i for i, line in enumerate(lines) if self._stop.search(line)), cut)
        head = lines[:cut]
        for m in self._masks:
            head = [m.sub(MASKED, line) for line in head]
        return head, len(lines) - cut

    def describe(self) -> str:
        parts = ["stdout bitwise, line by line, and the exit status"]
        if self.mask:
            parts.append("matches of " + ", ".join(f"/{m}/" for m in self.mask) + f" replaced by {MASKED}")
        if self.stop_at:
            parts.append(f"from the first line matching /{self.stop_at}/ on (benchmark tables), the line count only")
        return "; ".join(parts)


@dataclass(frozen=True)
class Comparison:
    identical: bool
    compared: int  # lines compared bitwise
    timing_lines: int  # lines compared by count only (stock's)
    difference: str | None  # the first difference, one line

    def verdict(self) -> str:
        return "identical" if self.identical else f"DIFFERS: {self.difference}"


def compare(stock: str, jitlab: str, rule: Rule, stock_rc: int = 0, jitlab_rc: int = 0) -> Comparison:
    """Compare two runs' stdout (and exit statuses) under `rule`."""
    a, a_tail = rule.split(stock)
    b, b_tail = rule.split(jitlab)
    diff = None
    if stock_rc != jitlab_rc:
        diff = f"exit status {stock_rc} (stock) vs {jitlab_rc} (jitlab)"
    else:
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                diff = f"line {i + 1}: {_short(x)!r} vs {_short(y)!r}"
                break
        else:
            if len(a) != len(b):
                diff = f"{len(a)} lines (stock) vs {len(b)} lines (jitlab) before the timing block"
            elif a_tail != b_tail:
                diff = f"timing block of {a_tail} lines (stock) vs {b_tail} lines (jitlab)"
    return Comparison(diff is None, len(a), a_tail, diff)


def _short(s: str, n: int = 80) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."
