"""Helpers shared by the notebooks: find trace files, load them (through `jitlab.telemetry.load`),
pull out run / trial / step / launch spans, and show figures and computed text.

Only pandas, numpy, matplotlib and `jitlab.telemetry.load` are used: the notebooks never launch
kernels and never import Triton, torch or the jitcache core.

Importable when a notebook runs with cwd = notebooks/ or cwd = the repository root (the notebooks
put this folder on sys.path first).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from jitlab.telemetry.load import load_traces

NOTEBOOKS = Path(__file__).resolve().parent
REPO = NOTEBOOKS.parent
TRACES = REPO / "traces"


# ------------------------------------------------------------------------------------------ files


def newest_trace(experiment: str, folder: str | os.PathLike = TRACES) -> str | None:
    """The newest `<folder>/<experiment>-<run_id>.jsonl` (run ids start with a UTC timestamp, so the
    newest is the last by name; subfolders such as traces/_dev and traces/cpu-demo are not searched).
    Returned relative to the repository root when it lies inside it; None when there is none."""
    files = sorted(Path(folder).glob(f"{experiment}-*.jsonl"), key=lambda p: p.name)
    if not files:
        return None
    p = files[-1].resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def resolve(path: str | os.PathLike) -> Path:
    """A trace path as given (absolute, or relative to the cwd), else relative to the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO / p


def require(path: str | os.PathLike | None, experiment: str) -> Path:
    """`resolve(path)`, or a clear error when there is no trace to read."""
    if path is None:
        raise FileNotFoundError(
            f"no traces/{experiment}-*.jsonl found: run `python -m experiments.{experiment}` on a GPU machine, "
            f"or pass the trace path as a parameter (e.g. papermill -p ... / edit the parameters cell)")
    p = resolve(path)
    if not p.exists():
        raise FileNotFoundError(f"trace file {path!r} not found (looked at {p})")
    return p


def open_run(path: str | os.PathLike | None, experiment: str) -> tuple[pd.DataFrame, dict]:
    """One experiment's trace: its spans (`load`) and its run span's attributes (`run_info`), with
    `require`'s clear error when there is no trace."""
    df = load(require(path, experiment))
    return df, run_info(df)


def load(path: str | os.PathLike | Iterable) -> pd.DataFrame:
    """All spans of one trace file (or several), one row per span (`jitlab.telemetry.load_traces`)."""
    if isinstance(path, (str, os.PathLike)):
        return load_traces(resolve(path))
    return load_traces([resolve(p) for p in path])


# ------------------------------------------------------------------------------------------ spans


def col(df: pd.DataFrame, name: str, default: Any = np.nan) -> pd.Series:
    """Column `name`, or a column of `default` when no span carries that attribute."""
    if name in df.columns:
        return df[name]
    return pd.Series([default] * len(df), index=df.index, dtype="object" if not isinstance(default, float) else float)


def kind(df: pd.DataFrame, k: str) -> pd.DataFrame:
    """Frame spans of one `jitlab.span.kind` (run | trial | step), in start order."""
    return df[col(df, "jitlab.span.kind", None) == k].sort_values("start_ns").copy()


def run_info(df: pd.DataFrame) -> dict:
    """The run span's attributes (first run if several files), NaN/None dropped."""
    runs = kind(df, "run")
    if runs.empty:  # traces written before frames carried jitlab.span.kind
        runs = df[(df["name"] == "jitlab.run") & df["parent_id"].isna()]
    if runs.empty:
        return {}
    r = runs.iloc[0]
    return {k: v for k, v in r.items() if v is not None and not (isinstance(v, float) and np.isnan(v))
            and v is not pd.NA}


def jloads(x: Any, default: Any = None) -> Any:
    """JSON attribute -> Python (None/NaN/empty -> default)."""
    if isinstance(x, str) and x:
        try:
            return json.loads(x)
        except ValueError:
            return default
    return default


def num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype(float)


def trace_level(info: dict) -> tuple[str, Any]:
    """(level, sample_every) of the run (older traces: from the experiment's `jitlab.config`)."""
    cfg = jloads(info.get("jitlab.config"), {}) or {}
    return (info.get("jitlab.trace.level") or cfg.get("trace", "?"),
            info.get("jitlab.trace.sample_every") or cfg.get("sample_every"))


def provenance_line(info: dict) -> str:
    p = lambda k: info.get(f"jitlab.provenance.{k}", "?")  # noqa: E731
    return (f"{p('gpu')} · driver {p('driver')} · CUDA {p('cuda_runtime')} · torch {p('torch')} · "
            f"triton {p('triton')} · jitlab {p('jitlab_commit')} · {str(p('date'))[:16].replace('T', ' ')} UTC")


def banner(info: dict, path: Any) -> str:
    """Markdown: which run this is (provenance), and a loud warning when it is labelled (CPU demo, sample)."""
    label = info.get("jitlab.experiment.label") or ""
    stem = Path(str(path)).stem  # <experiment>-<run_id>
    exp, _, rid = stem.partition("-")
    level = trace_level(info)[0]
    lines = [f"**Trace** `{path}` · run `{info.get('jitlab.run.id', rid or '?')}` · experiment "
             f"`{info.get('jitlab.experiment', exp or '?')}` · trace level `{level}`",
             "", f"**Machine** {provenance_line(info)}"]
    if label:
        lines += ["", f"> **This run is labelled: {label}**"]
    return "\n".join(lines)


def script_args(namespace: dict, names: Iterable[str]) -> None:
    """As a plain script, `python notebooks/x.py name=value ...` overrides parameters (values are
    Python literals, else strings: `trace=traces/x.jsonl save_figure=True`). No-op in a notebook."""
    import ast

    if in_kernel():
        return
    names = set(names)
    for arg in sys.argv[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in names:
            raise SystemExit(f"usage: python {sys.argv[0]} [{'|'.join(sorted(names))}=VALUE ...]; got {arg!r}")
        try:
            namespace[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            namespace[key] = value


# ----------------------------------------------------------------------------------------- output


def in_kernel() -> bool:
    """True inside a Jupyter kernel (figures render inline), False as a plain script."""
    return "ipykernel" in sys.modules


def setup_matplotlib() -> None:
    import matplotlib

    if not in_kernel() and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")  # as a script: no windows; figures go to `figure_dir` if set
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False, "font.size": 10,
                         "axes.titlesize": 11, "legend.fontsize": 8, "legend.frameon": False})


def say(md: str) -> None:
    """Computed text: rendered as Markdown in a notebook, printed as a script."""
    if in_kernel():
        from IPython.display import Markdown, display

        display(Markdown(md))
    else:
        print(md, end="\n\n")


class NothingToShow(Exception):
    """Raised by `stop` inside a notebook kernel: ends "Run All" with the reason as the last output."""


def stop(md: str) -> None:
    """The trace holds nothing this notebook shows: say why (and what to run instead) and stop, with exit
    status 0 as a script, no traceback."""
    say(md)
    if in_kernel():
        raise NothingToShow(md)
    raise SystemExit(0)


def table(df: pd.DataFrame, digits: int = 2) -> None:
    """A DataFrame shown rounded (HTML in a notebook, text as a script)."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(digits)
    if in_kernel():
        from IPython.display import display

        display(out)
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 40, "display.max_colwidth", 80):
            print(out.to_string(), end="\n\n")


def show(fig: Any, name: str, figure_dir: str | os.PathLike | None = None) -> None:
    """Render `fig` (inline in a notebook); also save it as `<figure_dir>/<name>.png` when asked."""
    import matplotlib.pyplot as plt

    if figure_dir:
        d = resolve(figure_dir) if not Path(figure_dir).is_absolute() else Path(figure_dir)
        d.mkdir(parents=True, exist_ok=True)
        fig.savefig(d / f"{name}.png", bbox_inches="tight")
    if in_kernel():
        plt.show()
    plt.close(fig)


def save_png(fig: Any, path: str | os.PathLike) -> Path:
    """Save `fig` as a PNG at `path` (relative paths: from the repository root)."""
    p = Path(path)
    if not p.is_absolute():
        p = REPO / p
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, bbox_inches="tight", dpi=150, metadata={"Software": None})
    return p


def fmt(x: Any, spec: str = ".2f", missing: str = "n/a") -> str:
    try:
        if x is None or (isinstance(x, float) and np.isnan(x)) or x is pd.NA:
            return missing
        return format(x, spec)
    except (TypeError, ValueError):
        return str(x)


def span(values, spec: str = ".1f") -> str:
    """"a–b" of a series (one value when min == max)."""
    v = pd.Series(values).dropna()
    if v.empty:
        return "n/a"
    lo, hi = format(v.min(), spec), format(v.max(), spec)
    return lo if lo == hi else f"{lo}–{hi}"
