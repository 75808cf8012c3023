"""Were a trial's host times per step flat? The one rule the e2e experiment records (`jitlab.e2e.host_unstable`)
and the notebooks apply to traces written before it. Standard library only: jitlab.bench and the notebooks
both import it.
"""

from __future__ import annotations

import statistics
from typing import Sequence

# A trial times its mode as one block of measured steps and reports their median host ms. The GPU hosts
# these runs use change speed by 1.5-2x for hundreds of ms at a time, so one mode's block can sit in a fast
# stretch and the next mode's in a slow one (traces/focused/e2e_decode-20261130T072254Z-356bb8.jsonl:
# eager_jitlab_safe at B=1 ran steps 0-13 at 6.6-7.3 ms and steps 14-19 at 8.5-13.5 ms, eager_jitlab_tuned
# right after it sat at 12.5-13.6 ms, and the medians read "tuned 12.7 vs safe 6.9 ms"). A trial whose
# per-step host times are not flat is flagged `host_unstable`; a comparison that involves it is not to be
# trusted (rerun, compare only flat trials). Two tests, both relative to the trial's median host ms:
HOST_SHIFT_MAX = 0.20
"""`host_shift` = |median(first half) - median(second half)| / median of the measured steps' host ms: the
level moved during the trial. Above this: flagged. Why 0.20: the 356bb8 case above scores 0.30; trials
whose steps look flat score 0.00-0.10 (the median over the 358 trials of the committed e2e traces is
0.03), and the level changes visible in those traces' step spans score 0.2-0.9; 0.10-0.20 is left as
noise (a short excursion moves one half's median a little; the spread test below catches it if it is
large)."""
HOST_SPREAD_MAX = 1.5
"""`host_spread` = max(p90 / median, median / p10) of the measured steps' host ms: at least ~10% of the
steps ran this much slower (or faster) than the median, a stretch in the other speed state that the halves
test misses when it is short, sits at one end or comes back (356bb8's eager_stock at B=1: its last 3 of 20
steps at 13 against 22 ms: spread 1.65, shift 0.02). Above this: flagged. Why 1.5: the 356bb8
eager_jitlab_safe case scores 1.85; flat trials score 1.01-1.3 (median over the committed trials 1.16),
and timer jitter on sub-ms full-graph host times alone reaches ~1.5 (d96d17's B=1 L=32 full_graph: 1.48),
so a lower bound would flag those."""
HOST_STABILITY_MIN_STEPS = 8
"""Fewer measured steps than this (the CPU demo's 2-3): no verdict (the quantiles and halves say nothing)."""


def _quantile(sorted_xs: Sequence[float], q: float) -> float:
    """The same index rule as the runner's `host_ms_p90`: sorted[int(q * (n - 1))]."""
    return sorted_xs[int(q * (len(sorted_xs) - 1))]


def host_stability(host_ms: Sequence[float]) -> dict:
    """Per-step host ms of one trial (in step order) -> `host_ms_p10`, `host_shift`, `host_spread` and
    `host_unstable` (see HOST_SHIFT_MAX and HOST_SPREAD_MAX); {} when there are too few steps to judge."""
    xs = [float(x) for x in host_ms if x is not None]
    n = len(xs)
    if n < HOST_STABILITY_MIN_STEPS:
        return {}
    s = sorted(xs)
    med, p10, p90 = statistics.median(s), _quantile(s, 0.1), _quantile(s, 0.9)
    if med <= 0 or p10 <= 0:
        return {}
    h = n // 2  # an odd middle step belongs to neither half
    shift = abs(statistics.median(xs[:h]) - statistics.median(xs[n - h:])) / med
    spread = max(p90 / med, med / p10)
    return {"host_ms_p10": p10, "host_shift": shift, "host_spread": spread,
            "host_unstable": bool(shift > HOST_SHIFT_MAX or spread > HOST_SPREAD_MAX)}
