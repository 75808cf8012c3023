"""The e2e decode experiment's stability flag (`host_unstable`): a trial whose per-step host times are not
flat (the host changed speed during it) is flagged, the printed table marks it, the notebooks apply the same
rule, and the committed trace that prompted it (356bb8: eager safe at B=1 went from ~6.9 to ~12 ms per
step at step 14, and its median was compared with a tuned trial that sat in the slow state throughout) is
flagged where it should be and nowhere else."""

from __future__ import annotations

import ast
import json
import io
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from jitlab.bench.decode import config as cfg
from jitlab.bench.decode import results as res
from jitlab.bench.fmt import num

from .conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
TRACE_356 = ROOT / "traces" / "focused" / "e2e_decode-20261130T072254Z-356bb8.jsonl"
TRACE_D96 = ROOT / "traces" / "focused" / "e2e_decode-20261129T113324Z-d96d17.jsonl"

# the per-step host ms of the 356bb8 trials (rounded to 0.1 ms), as in docs/RESULTS.md
SAFE_B1 = [6.8, 6.9, 6.6, 7.3, 7.1, 6.9, 6.9, 6.7, 6.9, 6.7, 6.7, 6.7, 6.9, 6.8, 9.3, 11.3, 8.5, 13.5, 12.9, 12.7]
TUNED_B1 = [12.7, 12.6, 12.5, 12.8, 12.9, 12.7, 12.6, 13.5, 12.7, 12.8, 12.6, 12.7, 12.9, 12.8, 12.6, 12.7, 12.5,
            12.8, 13.0, 12.7]
# eager stock just before: slow state, then its last 3 steps fast (the halves test alone misses this)
STOCK_B1 = [21.4, 22.0, 22.5, 21.8, 23.4, 24.7, 21.3, 21.8, 21.9, 22.8, 21.8, 20.1, 22.8, 22.5, 23.2, 22.3, 21.2,
            13.8, 13.3, 13.2]


# ------------------------------------------------------------------------------------------ the rule


def test_rule_flags_a_level_change_and_not_a_flat_trial():
    safe = res.host_stability(SAFE_B1)
    assert safe["host_unstable"] is True
    assert safe["host_shift"] > res.HOST_SHIFT_MAX and safe["host_spread"] > res.HOST_SPREAD_MAX
    assert safe["host_shift"] == pytest.approx(abs(statistics.median(SAFE_B1[:10]) - statistics.median(SAFE_B1[10:]))
                                               / statistics.median(SAFE_B1))
    tuned = res.host_stability(TUNED_B1)
    assert tuned["host_unstable"] is False
    assert tuned["host_shift"] < 0.05 and tuned["host_spread"] < 1.1
    assert tuned["host_ms_p10"] == sorted(TUNED_B1)[1]  # the host_ms_p90 index rule: sorted[int(q * (n - 1))]


def test_rule_catches_a_short_stretch_at_one_end():
    """A few fast steps at the end leave the halves' medians alone; the spread test sees them."""
    r = res.host_stability(STOCK_B1)
    assert r["host_shift"] < res.HOST_SHIFT_MAX
    assert r["host_spread"] > res.HOST_SPREAD_MAX and r["host_unstable"] is True
    # one outlier step in 20 is noise, not a change of state
    one = [10.0] * 19 + [30.0]
    assert res.host_stability(one)["host_unstable"] is False


def test_rule_needs_enough_steps():
    assert res.host_stability(SAFE_B1[-res.HOST_STABILITY_MIN_STEPS + 1:]) == {}
    assert res.host_stability([]) == {}
    assert res.host_stability([1.0] * res.HOST_STABILITY_MIN_STEPS)["host_unstable"] is False
    assert res.host_stability([0.0] * 20) == {}  # no division by a zero median


# ----------------------------------------------------------------------------------------- the table


def _row(config: str, batch: int, mode: str, host: list[float]) -> dict:
    med = statistics.median(host)
    return {"config": config, "kind": "decode", "batch": batch, "context": 1024, "layers": 32, "mode": mode,
            "mode_kind": mode.split("_")[0], "tokens_per_s": batch * 1000 / (med + 0.2), "host_ms": med,
            "step_ms": med + 0.2, "check": "bitwise", "check_ok": True, **res.host_stability(host)}


def _rows(unstable: bool) -> list[dict]:
    rows = []
    for batch in (1, 16):
        c = f"B={batch} ctx=1024 L=32"
        part = [_row(c, batch, "eager_stock", [22.0 + 0.1 * (i % 3) for i in range(20)]),
                _row(c, batch, "eager_jitlab_safe", SAFE_B1 if unstable and batch == 1 else [6.9] * 20),
                _row(c, batch, "eager_jitlab_tuned", TUNED_B1),
                _row(c, batch, "full_graph", [0.4 + 0.01 * (i % 2) for i in range(20)])]
        res.derive(part)
        rows += part
    return rows


def _print(rows: list[dict]) -> str:
    buf = io.StringIO()
    res.print_table(rows, cfg.gpu_sweep(quick=True), {"provenance": {}, "trace_file": "x.jsonl"}, file=buf)
    return buf.getvalue()


def _line(out: str, *words: str) -> str:
    """The one table row (a line with cell borders) holding all of `words`."""
    hits = [ln for ln in out.splitlines() if "│" in ln and all(w in ln for w in words)]
    assert len(hits) == 1, (words, hits)
    return hits[0]


def test_table_marks_a_flagged_trial():
    rows = _rows(unstable=True)
    safe = next(r for r in rows if r["mode"] == "eager_jitlab_safe" and r["batch"] == 1)
    tuned = next(r for r in rows if r["mode"] == "eager_jitlab_tuned" and r["batch"] == 1)
    assert safe["host_unstable"] and not tuned["host_unstable"]
    out = _print(rows)
    assert f"{num(safe['host_ms'])}!" in _line(out, "B=1 ctx=1024 L=32", "eager_jitlab_safe")
    assert "!" not in _line(out, "B=1 ctx=1024 L=32", "eager_jitlab_tuned")
    assert "host ms per step not flat in 1 trial " in out and "rows without !" in out and "rerun" in out
    # the crossover table marks the ratio that involves the flagged trial (safe/stock at B=1), no other
    cross = res.summarize(rows)["crossover"]
    b1 = next(c for c in cross if c["batch"] == 1)
    assert b1.get("eager_jitlab_safe/eager_stock.host_unstable") is True
    assert "eager_jitlab_tuned/eager_stock.host_unstable" not in b1
    assert not any(k.endswith(".host_unstable") for c in cross if c["batch"] == 16 for k in c)
    assert "a ratio or host ms that involves a trial whose step times were not flat" in out
    assert "(steps not flat)" in res._one_line(safe) and "not flat" not in res._one_line(tuned)


def test_table_of_flat_trials_has_no_mark():
    out = _print(_rows(unstable=False))
    assert "!" not in out and "not flat" not in out


def test_rows_without_the_field_print_as_before():
    """Results written before the flag existed (no host_unstable key) print unmarked."""
    rows = _rows(unstable=True)
    for r in rows:
        for k in ("host_unstable", "host_shift", "host_spread", "host_ms_p10"):
            r.pop(k, None)
    out = _print(rows)
    assert "!" not in out and "not flat" not in out


# ------------------------------------------------------------------------------------ the notebooks


def _notebook_function(name: str, func: str):
    """The function `func` of notebooks/<name>.py, run with numpy, pandas and the module it imports the rule from."""
    import numpy as np
    import pandas as pd

    from jitlab.telemetry import stability

    text = (ROOT / "notebooks" / f"{name}.py").read_text(encoding="utf-8")
    assert "from jitlab.telemetry import stability" in text, f"notebooks/{name}.py does not use the one rule"
    assert "HOST_SHIFT_MAX =" not in text, f"notebooks/{name}.py keeps its own copy of the rule"
    tree = ast.parse(text)
    ns: dict = {"np": np, "pd": pd, "stability": stability}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == func:
            exec(compile(ast.Module([node], []), name, "exec"), ns)
    assert func in ns, f"notebooks/{name}.py has no {func}()"
    return ns[func]


CASES = [SAFE_B1, TUNED_B1, STOCK_B1, [10.0] * 19 + [30.0], SAFE_B1[:7], SAFE_B1[:9], TUNED_B1[:11] + SAFE_B1[9:],
         [0.2, 0.2, 0.5, 0.2, 0.3, 0.2, 0.2, 0.2, 0.5, 0.5, 0.4, 0.5, 0.5]]


def test_notebooks_apply_the_same_rule():
    """The notebooks judge old traces with the experiment's rule (jitlab.telemetry.stability), NaN steps skipped."""
    e2e = _notebook_function("e2e_throughput", "host_stability")
    link = _notebook_function("launch_vs_throughput", "host_unstable")
    for host in CASES:
        want = res.host_stability(host)
        shift, spread, unstable = e2e(host)
        assert unstable == want.get("host_unstable"), host
        assert link(host) == want.get("host_unstable"), host
        if want:
            assert shift == pytest.approx(want["host_shift"]) and spread == pytest.approx(want["host_spread"])


# ------------------------------------------------------------------------------- the committed traces


def _stability_by_trial(path: Path) -> dict[str, dict]:
    from jitlab.telemetry.load import iter_spans

    names, steps = {}, defaultdict(list)
    for r in iter_spans(path):
        if r.get("jitlab.span.kind") == "trial" and r.get("jitlab.e2e.mode"):
            names[r["span_id"]] = r["name"]
        elif r.get("jitlab.e2e.phase") == "measure" and r.get("jitlab.e2e.host_ms") is not None:
            steps[r["parent_id"]].append((r["jitlab.e2e.step"], r["jitlab.e2e.host_ms"]))
    return {names[p]: res.host_stability([h for _, h in sorted(s)]) for p, s in steps.items() if p in names}


def test_committed_356bb8_trace_flags_safe_at_b1():
    if not TRACE_356.is_file():
        pytest.skip(f"{TRACE_356.relative_to(ROOT)} is not in this checkout")
    by = _stability_by_trial(TRACE_356)
    assert len(by) == 18, sorted(by)
    flagged = {n for n, r in by.items() if r.get("host_unstable")}
    # eager safe at B=1 (the "tuned 12.7 vs safe 6.9 ms" comparison) and eager stock at B=1 (its last three
    # steps dropped from ~22 to ~13 ms); tuned at B=1 was flat in the slow state, and all of B=16 was flat
    assert flagged == {"B=1 ctx=1024 L=32/eager_jitlab_safe", "B=1 ctx=1024 L=32/eager_stock"}, flagged
    assert by["B=1 ctx=1024 L=32/eager_jitlab_safe"]["host_shift"] > res.HOST_SHIFT_MAX
    assert by["B=1 ctx=1024 L=32/eager_jitlab_tuned"]["host_unstable"] is False


def test_committed_flat_run_is_not_flagged():
    if not TRACE_D96.is_file():
        pytest.skip(f"{TRACE_D96.relative_to(ROOT)} is not in this checkout")
    by = _stability_by_trial(TRACE_D96)
    flat = {n: r for n, r in by.items() if "L=32" in n}  # every step of these 12 trials looks flat
    assert len(flat) == 12 and not any(r["host_unstable"] for r in flat.values()), \
        {n: (round(r["host_shift"], 2), round(r["host_spread"], 2)) for n, r in flat.items() if r["host_unstable"]}


# ------------------------------------------------------------------------------- the experiment (CPU)


def test_cpu_demo_records_the_flag(tmp_path):
    """The runner puts host_shift / host_spread / host_unstable on the trial span and into jitlab.results."""
    import json

    trace = tmp_path / "e2e.jsonl"
    env = subprocess_env()
    for k in ("TRITON_INTERPRET", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.pop(k, None)
    steps = res.HOST_STABILITY_MIN_STEPS
    p = subprocess.run([sys.executable, "-m", "experiments.e2e_decode", "--quick", "--cpu", "--no-sanity",
                        "--modes", "eager_stock", "--steps", str(steps), "--trace-file", str(trace)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    from jitlab.telemetry import load_traces

    df = load_traces(str(trace))
    t = df[df["jitlab.span.kind"] == "trial"].set_index("jitlab.e2e.mode").loc["eager_stock"]
    assert isinstance(t["jitlab.e2e.host_unstable"], bool)
    shift, spread = t["jitlab.e2e.host_shift"], t["jitlab.e2e.host_spread"]
    assert t["jitlab.e2e.host_unstable"] == (shift > res.HOST_SHIFT_MAX or spread > res.HOST_SPREAD_MAX)
    st = df[(df["jitlab.span.kind"] == "step") & (df["jitlab.e2e.phase"] == "measure")].sort_values("start_ns")
    assert len(st) == steps
    assert res.host_stability(st["jitlab.e2e.host_ms"].tolist())["host_shift"] == pytest.approx(shift)
    run = df[df["jitlab.span.kind"] == "run"].iloc[0]
    row = next(r for r in json.loads(run["jitlab.results"]) if r["mode"] == "eager_stock")
    assert row["host_unstable"] == t["jitlab.e2e.host_unstable"] and row["host_ms_p10"] <= row["host_ms"]


def test_report_marks_a_trial_whose_steps_were_not_flat():
    """`jitlab report` on an e2e trace: a flagged trial's host ms carries `!`, with one line saying why."""
    import pandas as pd

    from jitlab.bench import report

    def row(mode, host, unstable):
        return {"kind": "decode", "batch": 1, "layers": 32, "context": 1024, "mode": mode, "tokens_per_s": 100.0,
                "host_ms": host, "gpu_busy_ms": 2.0, **({"host_unstable": unstable} if unstable is not None else {})}

    def table(rows):
        df = pd.DataFrame([{"name": "jitlab.run", "jitlab.results": json.dumps(rows)}])
        return report.e2e_markdown("t.jsonl", df=df)

    flagged = table([row("eager_stock", 12.0, False), row("eager_jitlab_safe", 6.9, True)])
    assert "(12.0 / 2.0)" in flagged and "(6.9! / 2.0)" in flagged and "was not flat" in flagged
    plain = table([row("eager_stock", 12.0, None), row("eager_jitlab_safe", 6.9, False)])
    assert "!" not in plain.replace("|---|", "") and "was not flat" not in plain
