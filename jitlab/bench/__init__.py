"""Measurement library behind experiments/: timing, variants, sweeps, tables. Experiments stay thin.

It needs jitlab's [lab] extra; a missing part is named in one line (`jitlab._extras`).
"""

from .._extras import require

for _module in ("rich", "numpy", "opentelemetry.sdk"):
    require("lab", _module)
