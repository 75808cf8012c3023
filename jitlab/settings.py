"""Every JITLAB_* environment variable, read in this one module.

Settings are process-wide and set by the user; per-kernel trade-offs are `Policy` objects.
Standard OTEL_* variables are not read here: they mean what they mean everywhere and the
OpenTelemetry SDK reads them (see jitlab.telemetry.export).

Each variable is read and checked when its setting is first used, not at `import jitlab`: a bad
value raises `SettingError`, one line naming the variable, the value and the valid choices, from
the code that needs it. With `JITLAB_DISABLE=1` nothing raises: a bad value of another variable
falls back to its default (jitlab is off, so nothing else should stop the program).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from typing import Any, Callable

log = logging.getLogger(__name__)

TRACE_LEVELS = ("off", "summary", "sampled", "full")
LAUNCHERS = ("auto", "native", "python", "triton")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")

#: JITLAB_RECORDER_CAPACITY is clamped to this range. The minimum keeps a buffer worth handing to
#: the exporter; the maximum (2**24 records, ~3 GiB of tuples at worst) keeps the C appender's
#: Py_ssize_t comparison and the process's memory sane (2**63 used to make every traced launch raise).
RECORDER_CAPACITY_MIN, RECORDER_CAPACITY_MAX = 1_000, 1 << 24
#: JITLAB_TRACE_FLUSH_S: seconds between a process session's exports (and its allowed range).
TRACE_FLUSH_S_DEFAULT, TRACE_FLUSH_S_RANGE = 5.0, (0.05, 3600.0)


class SettingError(ValueError):
    """A JITLAB_* variable holds a value jitlab cannot use (one line: variable, value, valid choices)."""

    def __init__(self, name: str, value: str, valid: str):
        super().__init__(f"{name}={value!r} is not valid; valid: {valid}")
        self.variable, self.value, self.valid = name, value, valid


def _bool(name: str, v: str) -> bool:
    s = v.strip().lower()
    if s in _TRUE or s in _FALSE:
        return s in _TRUE
    raise SettingError(name, v, "1/true/yes/on or 0/false/no/off")


def _int(lo: int, hi: int | None = None, clamp: bool = False) -> Callable[[str, str], int]:
    def parse(name: str, v: str) -> int:
        valid = f"an integer >= {lo}" + (f" (clamped to {hi})" if clamp and hi else "")
        try:
            n = int(v.strip())
        except ValueError:
            raise SettingError(name, v, valid) from None
        if clamp:
            c = max(lo, min(n, hi if hi is not None else n))
            if c != n:
                log.warning("jitlab: %s=%s clamped to %d (valid range %d..%d)", name, v.strip(), c, lo, hi)
            return c
        if n < lo:
            raise SettingError(name, v, valid)
        return n

    return parse


def _seconds(name: str, v: str) -> float:
    lo, hi = TRACE_FLUSH_S_RANGE
    try:
        x = float(v.strip())
    except ValueError:
        x = float("nan")
    if not lo <= x <= hi:
        raise SettingError(name, v, f"seconds between {lo} and {hi}")
    return x


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, v: str) -> str:
        s = v.strip().lower()
        if s not in choices:
            raise SettingError(name, v, "|".join(choices))
        return s

    return parse


def _text(name: str, v: str) -> str | None:
    return v or None


#: JITLAB_AUTO's named choices (a policy file is the other form: `path.toml:name`).
AUTO_MODES = ("off", "safe", "observe")


def _auto_policy(name: str, v: str) -> str:
    """off, safe, observe, or `file.toml:name` naming a policy that file holds (checked here, so a
    missing or malformed file stops the program before anything is installed)."""
    s = v.strip()
    if s.lower() in AUTO_MODES:
        return s.lower()
    path, sep, policy = s.rpartition(":")
    if not sep or not path.endswith(".toml") or not policy:
        raise SettingError(name, v, "|".join(AUTO_MODES) + "|<file.toml>:<name>")
    from .policy import Policy

    try:
        Policy.named(s)
    except (OSError, ValueError) as e:  # tomllib.TOMLDecodeError is a ValueError
        raise SettingError(name, v, f"a readable policy file and one of its policy names ({_one_line(e)})") from None
    return s


def _one_line(e: BaseException) -> str:
    text = str(e.strerror if isinstance(e, OSError) and e.strerror else e)
    return " ".join(text.split())


def _patterns(v: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in v.split(",") if p.strip())


class _Var:
    """One JITLAB_* variable: parsed on first read of the setting, then cached on the instance.

    `Settings` is a frozen dataclass whose fields default to their `_Var`: a field left at that
    default reads the environment when first used; a value passed in (`dataclasses.replace(SETTINGS,
    launcher="python")`, as tests do) is used as is."""

    def __init__(self, env: str, parse: Callable[[str, str], Any], default: Any, doc: str):
        self.env, self.parse, self.default, self.__doc__ = env, parse, default, doc

    def __set_name__(self, owner, attr: str) -> None:
        self.attr = attr

    def __set__(self, obj, value) -> None:
        if value is not self:  # the dataclass default: leave it to the environment
            obj.__dict__[self.attr] = value

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        d = obj.__dict__
        if self.attr in d:
            return d[self.attr]
        raw = os.environ.get(self.env)
        if raw is None or raw.strip() == "":
            value = self.default() if callable(self.default) else self.default
        else:
            try:
                value = self.parse(self.env, raw)
            except SettingError:
                if self.env == "JITLAB_DISABLE" or not obj.disable:
                    raise
                value = self.default() if callable(self.default) else self.default
        d[self.attr] = value  # cached: read once
        return value


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jitlab")


@dataclass(frozen=True, eq=False, repr=False)
class Settings:
    """The JITLAB_* variables of the environment, each read when first used."""

    disable: bool = _Var("JITLAB_DISABLE", _bool, False,
                   "JITLAB_DISABLE=1: the kill switch. `jitcache` returns the Triton kernel unwrapped, before any probe runs.")
    verify: int = _Var("JITLAB_VERIFY", _int(0), 0,
                  "JITLAB_VERIFY=N: re-derive Triton's full key on every Nth hit of every kernel (0 = off).")
    trace: str = _Var("JITLAB_TRACE", _choice(*TRACE_LEVELS), "off",
                 "JITLAB_TRACE=off|summary|sampled|full: launch recording level (any process; experiments and Run()).")
    trace_sample: int = _Var("JITLAB_TRACE_SAMPLE", _int(1), 100,
                        "JITLAB_TRACE_SAMPLE=N: with trace=sampled, keep every Nth hit (misses/fallbacks always kept).")
    trace_file: str | None = _Var("JITLAB_TRACE_FILE", _text, None,
                      "JITLAB_TRACE_FILE=path: where the OTLP JSON-lines trace goes (experiments default to "
                      "traces/<experiment>-<run_id>.jsonl; a plain program writes no file without it).")
    trace_follow_symlinks: bool = _Var("JITLAB_TRACE_FOLLOW_SYMLINKS", _bool, False,
                                "JITLAB_TRACE_FOLLOW_SYMLINKS=1: write a trace through a trace path that is a symbolic "
                                "link (default: refused with one line; the file is created with O_EXCL, opened with O_NOFOLLOW).")
    trace_flush_s: float = _Var("JITLAB_TRACE_FLUSH_S", _seconds, TRACE_FLUSH_S_DEFAULT,
                         "JITLAB_TRACE_FLUSH_S=seconds: how often a process's tracing session exports (default 5).")
    recorder_capacity: int = _Var("JITLAB_RECORDER_CAPACITY", _int(RECORDER_CAPACITY_MIN, RECORDER_CAPACITY_MAX, clamp=True),
                             2_000_000, "JITLAB_RECORDER_CAPACITY=N: launch records buffered before the buffer is "
                             f"handed to the exporter (clamped to {RECORDER_CAPACITY_MIN}..{RECORDER_CAPACITY_MAX}).")
    trace_on_full: str = _Var("JITLAB_TRACE_ON_FULL", _choice("flush", "block", "drop"), "flush",
                         "JITLAB_TRACE_ON_FULL=flush|block|drop: a full recorder buffer goes to the exporter thread, "
                         "dropping (counted) what it is too far behind for (flush); or waits for it (block: "
                         "back-pressure, nothing dropped); or later records are counted as dropped (drop).")
    max_entries: int = _Var("JITLAB_MAX_ENTRIES", _int(1), 1024,
                       "JITLAB_MAX_ENTRIES=N: the most cache entries a kernel keeps per scope (read at decoration). "
                       "A new entry past it evicts the least recently used one (counted as `evict`, traced as "
                       "an `evict` record; warned once, naming the key parts that keep changing).")
    max_scopes: int = _Var("JITLAB_MAX_SCOPES", _int(1), 1024,
                      "JITLAB_MAX_SCOPES=N: scopes a kernel may have entries in before jitlab warns once (a "
                      "scope's entries go only with Scope.clear(): a per-request scope never cleared is the usual cause).")
    launcher: str = _Var("JITLAB_LAUNCHER", _choice(*LAUNCHERS), "auto",
                    "JITLAB_LAUNCHER=auto|native|python|triton: how a hit launches. auto: jitlab's C++ dispatcher (one "
                    "C call, built once in the background) and C launcher where they build, else the generated Python "
                    "hit path; native: the same, warning when a native part is unavailable; python: the generated "
                    "Python hit path with jitlab's C launcher (the reference the native path is tested against); "
                    "triton: the Python hit path with Triton's own launcher, no jitlab C code.")
    cache_dir: str = _Var("JITLAB_CACHE_DIR", _text, _default_cache_dir,
                     "JITLAB_CACHE_DIR=path: where jitlab builds its C launcher and floor (default "
                     "$XDG_CACHE_HOME/jitlab or ~/.cache/jitlab).")
    commit: str | None = _Var("JITLAB_COMMIT", _text, None,
                  "JITLAB_COMMIT=sha: the jitlab commit recorded in provenance when the tree has no .git.")
    hip: bool = _Var("JITLAB_HIP", _bool, False,
                "JITLAB_HIP=1: use jitlab's fast path on Triton's HIP backend (ROCm). Checked offline only (no AMD GPU "
                "has run it), so HIP stays in pass-through unless this opts in; see jitlab/_triton/hip.py.")
    vllm_policy: str = _Var("JITLAB_VLLM_POLICY", lambda name, v: v.strip(), "safe",
                       "JITLAB_VLLM_POLICY=safe|off|<name>|<file.toml>:<name>: what the vLLM plugin wraps vLLM's "
                       "kernels with (jitlab.vllm).")
    auto: str = _Var("JITLAB_AUTO", lambda name, v: _auto_policy(name, v), "off",
                "JITLAB_AUTO=off|safe|observe|<file.toml>:<name>: put jitlab under every Triton kernel the program "
                "launches with kernel[grid](...), without code changes (`jitlab run` sets it; jitlab.auto). observe: "
                "every kernel wrapped but launched by plain Triton, counted and traced (the stock side of a comparison).")
    auto_include: tuple = _Var("JITLAB_AUTO_INCLUDE", lambda name, v: _patterns(v), (),
                        "JITLAB_AUTO_INCLUDE=pat,pat: with JITLAB_AUTO, only kernels whose module.qualname matches one "
                        "of these shell patterns (fnmatch) are wrapped (default: all).")
    auto_exclude: tuple = _Var("JITLAB_AUTO_EXCLUDE", lambda name, v: _patterns(v), (),
                        "JITLAB_AUTO_EXCLUDE=pat,pat: with JITLAB_AUTO, kernels whose module.qualname matches one of "
                        "these shell patterns are left to plain Triton.")
    run_pid: int | None = _Var("JITLAB_RUN_PID", _int(1), None,
                       "JITLAB_RUN_PID=pid: set by `jitlab run` to the pid of the program it starts. Other processes "
                       "(children) write their trace to JITLAB_TRACE_FILE with a .pid<N> suffix, so none clobbers "
                       "another's file.")
    logs: str = _Var("JITLAB_LOGS", lambda name, v: v, "",
                "JITLAB_LOGS=+jitlab.cache,...: modules whose logger is set to DEBUG (\"+jitlab\" for all).")

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={getattr(self, k)!r}' for k in self.names())})"

    def given(self, attr: str):
        """The setting's value if the environment sets its variable, else None (so a command-line
        default can sit between an explicit flag and the variable)."""
        raw = os.environ.get(type(self).__dict__[attr].env)
        return None if raw is None or not raw.strip() else getattr(self, attr)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


SETTINGS = Settings()


@dataclass(frozen=True)
class NativeParts:
    """Which of jitlab's compiled parts JITLAB_LAUNCHER allows: the one place that decides it."""

    dispatcher: bool  # the C++ dispatcher in front of the generated hit path (auto, native)
    c_code: bool  # the C launcher, the C keyer and the C hit-record appender (all but triton)
    warn: bool  # warn when an allowed part is unavailable (native)


def native_parts() -> NativeParts:
    choice = SETTINGS.launcher
    return NativeParts(dispatcher=choice in ("auto", "native"), c_code=choice != "triton", warn=choice == "native")


def trace_file_for_process(pid: int | None = None) -> str | None:
    """JITLAB_TRACE_FILE for this process: as given in the process `jitlab run` started (JITLAB_RUN_PID)
    and in any process outside `jitlab run`; with a `.pid<N>` suffix before the extension in the
    processes it starts (subprocess, multiprocessing spawn and fork), so each writes its own file."""
    path = SETTINGS.trace_file
    run_pid = SETTINGS.run_pid
    pid = os.getpid() if pid is None else pid
    if path is None or run_pid is None or pid == run_pid:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}.pid{pid}{ext}"


def reload() -> Settings:
    """Forget every value read so far; each is re-read from the environment when next used."""
    global SETTINGS
    SETTINGS = Settings()
    return SETTINGS


def configure_logging() -> None:
    try:
        logs = SETTINGS.logs
    except SettingError:  # pragma: no cover - any string is valid
        return
    for spec in filter(None, (s.strip() for s in logs.split(","))):
        if spec.startswith("+"):
            logging.getLogger(spec[1:]).setLevel(logging.DEBUG)
