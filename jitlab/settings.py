"""Every JITLAB_* environment variable, read in this one module, once (at import).

Settings are process-wide and set by the user; per-kernel trade-offs are `Policy` objects.
Standard OTEL_* variables are not read here: they mean what they mean everywhere and the
OpenTelemetry SDK reads them (see jitlab.telemetry.export).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env_bool(name: str, default: bool = False) -> bool:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    return v.strip().lower() in ("1", "true", "yes", "on")


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v.strip() == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {v!r}") from None


def _env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    v = os.environ.get(name, "").strip().lower() or default
    if v not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {v!r}")
    return v


@dataclass(frozen=True)
class Settings:
    #: JITLAB_DISABLE=1: the kill switch. `jitcache` returns the Triton kernel unwrapped, before any probe runs.
    disable: bool = field(default_factory=lambda: _env_bool("JITLAB_DISABLE"))
    #: JITLAB_VERIFY=N: re-derive Triton's full key on every Nth hit of every kernel (0 = off).
    verify: int = field(default_factory=lambda: _env_int("JITLAB_VERIFY", 0))
    #: JITLAB_TRACE=off|summary|sampled|full: launch recording level for experiments and Run().
    trace: str = field(default_factory=lambda: _env_choice("JITLAB_TRACE", "off", ("off", "summary", "sampled", "full")))
    #: JITLAB_TRACE_SAMPLE=N: with trace=sampled, keep every Nth hit (misses/fallbacks always kept).
    trace_sample: int = field(default_factory=lambda: _env_int("JITLAB_TRACE_SAMPLE", 100))
    #: JITLAB_TRACE_FILE=path: where the OTLP JSON-lines trace goes (experiments default to traces/<experiment>-<run_id>.jsonl).
    trace_file: str | None = field(default_factory=lambda: os.environ.get("JITLAB_TRACE_FILE") or None)
    #: JITLAB_RECORDER_CAPACITY=N: launch records kept in memory before drops are counted.
    recorder_capacity: int = field(default_factory=lambda: _env_int("JITLAB_RECORDER_CAPACITY", 2_000_000))
    #: JITLAB_MAX_ENTRIES=N: cache entries per kernel and scope after which jitlab warns once, naming the key
    #: parts that keep changing (entries are never evicted: a warning, not a limit).
    max_entries: int = field(default_factory=lambda: _env_int("JITLAB_MAX_ENTRIES", 1024))
    #: JITLAB_LAUNCHER=auto|native|python|triton: how a hit launches. auto: jitlab's C++ dispatcher (one C call,
    #: built once in the background) and C launcher where they build, else the generated Python hit path;
    #: native: the same, warning when a native part is unavailable; python: the generated Python hit path
    #: with jitlab's C launcher (the reference the native path is tested against); triton: the Python hit
    #: path with Triton's own launcher, no jitlab C code.
    launcher: str = field(default_factory=lambda: _env_choice("JITLAB_LAUNCHER", "auto",
                                                              ("auto", "native", "python", "triton")))
    #: JITLAB_HIP=1: use jitlab's fast path on Triton's HIP backend (ROCm). Checked offline only (no AMD GPU has
    #: run it), so HIP stays in pass-through unless this opts in; see jitlab/_triton/hip.py.
    hip: bool = field(default_factory=lambda: _env_bool("JITLAB_HIP"))
    #: JITLAB_CACHE_DIR=path: where jitlab builds its C launcher and floor (default $XDG_CACHE_HOME/jitlab or ~/.cache/jitlab).
    cache_dir: str = field(default_factory=lambda: os.environ.get("JITLAB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "jitlab"))
    #: JITLAB_COMMIT=sha: the jitlab commit recorded in provenance when the tree has no .git (copies sent to a GPU host).
    commit: str | None = field(default_factory=lambda: os.environ.get("JITLAB_COMMIT") or None)
    #: JITLAB_VLLM_POLICY=safe|off|<name>|<file.toml>:<name>: what the vLLM plugin wraps vLLM's kernels with (jitlab.vllm).
    vllm_policy: str = field(default_factory=lambda: os.environ.get("JITLAB_VLLM_POLICY", "").strip() or "safe")
    #: JITLAB_LOGS=+jitlab.cache,...: modules whose logger is set to DEBUG ("+jitlab" for all).
    logs: str = field(default_factory=lambda: os.environ.get("JITLAB_LOGS", ""))


SETTINGS = Settings()


def reload() -> Settings:
    """Re-read the environment (tests only: production code reads SETTINGS once)."""
    global SETTINGS
    SETTINGS = Settings()
    return SETTINGS


def configure_logging() -> None:
    import logging

    for spec in filter(None, (s.strip() for s in SETTINGS.logs.split(","))):
        if spec.startswith("+"):
            logging.getLogger(spec[1:]).setLevel(logging.DEBUG)
