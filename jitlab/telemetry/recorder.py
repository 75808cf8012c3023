"""Per-launch records kept as plain integers: the only telemetry module the hot path touches.

The jitcache's generated hit path reads `recorder.ACTIVE.recorder`; when it is not None and the
hit is kept (`every_hit`, or `wants_hit()` for sampling) it reads `perf_counter_ns()` twice
(entry, arguments ready) and, after the launch, calls `hit_appender()`'s function, which stamps
t_exit and appends one compact tuple `(entry.head, t_enter, t_args, t_exit, thread)` (`head` is
the entry's prebuilt `(kernel, scope, policy, HIT, key)`). At level full that is all it does: no
Recorder method call and no counter (see `seen`). Misses, locked misses, fallbacks and
pass-through launches go through `record()` with every field, without asking `wants_hit()`.
Readers (`drain_raw`, `drain`, `peek`, `on_full`) always get full `FIELDS` tuples. All times are
`time.perf_counter_ns()`. Everything else (spans, files, exporters)
happens later, outside any timed region, in `jitlab.telemetry.spans` / `session` / `export`.

This module imports nothing from OpenTelemetry (nor does anything it imports).
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from contextlib import contextmanager
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Callable, Iterator

from .. import record_layout as _layout
from .. import settings as _settings

# Outcomes, as small ints on the hot path; names are what spans carry in jitlab.cache.result.
HIT, MISS, LOCKED_MISS, FALLBACK, PASSTHROUGH = 0, 1, 2, 3, 4
EVICT = 5  # not a launch: an entry evicted (JITLAB_MAX_ENTRIES), key = its id
OUTCOME_NAMES = ("hit", "miss", "locked_miss", "fallback", "passthrough", "evict")

LEVELS = ("off", "summary", "sampled", "full")

# Field order of the tuples readers get (and of `Record`); `Recorder.records` also holds compact hits
# (`record_layout.COMPACT`). The one definition of both is jitlab.record_layout.
FIELDS = _layout.FIELDS

_get_ident = threading.get_ident
_full_record = _layout.full
_OUTCOME, _REASON = _layout.INDEX["outcome"], _layout.INDEX["reason"]
_COMPACT = len(_layout.COMPACT)  # len of a compact hit tuple: (head, t_enter, t_args, t_exit, thread)
log = logging.getLogger(__name__)


def _append_hit_py(records: list, capacity: int, head: tuple, t_enter: int, t_args: int) -> int:
    """Append a compact hit stamped with t_exit now; 0, or t_exit (nothing appended) when `records`
    already holds `capacity`. The Python twin of hit_record.c's append_hit: same contract, but its check
    and its append are two steps, so threads switched between them can each land one record past
    `capacity` (a soft bound: every record is still kept or counted as dropped)."""
    t_exit = time.perf_counter_ns()
    if len(records) >= capacity:
        return t_exit
    records.append((head, t_enter, t_args, t_exit, _get_ident()))
    return 0


_APPENDER: tuple[Callable, str] | None = None
_APPENDER_LOCK = threading.Lock()


def hit_appender() -> tuple[Callable, str]:
    """(append_hit, what it is): hit_record.c's one-call tail of a traced hit where it builds and its
    clock reads as perf_counter_ns, else `_append_hit_py`. Chosen once, by the first hit path made."""
    global _APPENDER
    if _APPENDER is None:
        with _APPENDER_LOCK:
            if _APPENDER is None:
                _APPENDER = _load_appender()
                log.debug("jitlab: hit records appended by %s", _APPENDER[1])
    return _APPENDER


def _load_appender() -> tuple[Callable, str]:
    from .. import _cbuild

    if not _settings.native_parts().c_code:  # JITLAB_LAUNCHER=triton: no jitlab C code at all
        return _append_hit_py, "python (JITLAB_LAUNCHER=triton)"
    try:
        mod = _cbuild.build("_jitlab_hit_record", Path(__file__).with_name("hit_record.c"), "hit_record",
                            extra=_layout.c_defines())
        a, c, b = time.perf_counter_ns(), mod.now_ns(), time.perf_counter_ns()
        if not a <= c <= b:
            raise RuntimeError(f"its clock is not perf_counter_ns here ({a} <= {c} <= {b} fails)")
        probe: list = []
        if mod.append_hit(probe, 1, (), 1, 2) != 0 or mod.append_hit(probe, 1, (), 1, 2) == 0 or len(probe) != 1:
            raise RuntimeError("append_hit does not keep its contract")
    except Exception as e:  # noqa: BLE001 - the Python twin is exact, only slower
        log.info("jitlab: hit records appended in Python (%s: %s)", type(e).__name__, e)
        return _append_hit_py, f"python ({type(e).__name__})"
    return mod.append_hit, "c"


def _record_class() -> type:
    """`Record`: one launch as the hot path saw it (ns from perf_counter_ns), a dataclass whose fields are
    `record_layout.FIELDS` (kernel, scope and policy are interned string ids or the names themselves; key is
    the per-kernel entry index, -1 if none; t_args: arguments bound; t_exit: launcher returned; thread: the
    launching thread's `threading.get_ident()`; reason: the interned fallback reason, -1 if none)."""
    def arg_update_ns(self) -> int:
        return self.t_args - self.t_enter

    def launch_ns(self) -> int:
        return self.t_exit - self.t_args

    return make_dataclass("Record", [(name, object) for name in _layout.FIELDS],
                          namespace={"arg_update_ns": property(arg_update_ns), "launch_ns": property(launch_ns),
                                     "__doc__": _record_class.__doc__.split("`Record`: ", 1)[1]})


Record = _record_class()


class Recorder:
    """Bounded buffer of launch records.

    Hits are sampled: `full` keeps every hit, `sampled` every `sample_every`-th, `summary` none
    (misses, locked misses, fallbacks and pass-through launches are always kept: the hot path
    records them without asking `wants_hit()`).

    When the buffer holds `capacity` records, the next `record()` either hands the full buffer to
    `on_full(list_of_tuples)` (called once per full buffer, on the launching thread, under a lock;
    the records are taken out of the buffer first) or, without `on_full`, counts the record in
    `dropped`. `on_full` must be quick (a hand-off to a background exporter: `telemetry.worker`);
    when it raises, the chunk is counted in `dropped`. Nothing is lost silently: with any number of
    launching threads, `recorded + dropped` equals the records offered.
    """

    def __init__(
        self,
        level: str = "full",
        capacity: int = 1_000_000,
        sample_every: int = 1,
        on_full: Callable[[list], None] | None = None,
    ):
        if level not in LEVELS:
            raise ValueError(f"trace level must be one of {LEVELS}, got {level!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.level = level
        # the hit path compares len(records) with this as a Py_ssize_t (hit_record.c): keep it sane
        self.capacity = min(int(capacity), _settings.RECORDER_CAPACITY_MAX)
        # [offered, tick, sample_every]: wants_hit() calls, the sampling phase and the rate, as int64s the
        # native dispatcher reads and updates in place too (dispatch.cpp samples without calling
        # wants_hit); never resized
        self._sampling = array("q", [0, 0, 0])
        # summary keeps no hits; sampled keeps every Nth; full keeps all.
        self.sample_every = {"full": 1, "sampled": max(1, int(sample_every)), "summary": 0, "off": 0}[level]
        # The hit path reads this flag and, when set, appends every hit's compact tuple without a
        # wants_hit() call (so `seen` is derived from the records, not counted per launch).
        self.every_hit = self.sample_every == 1
        self.on_full = on_full
        self.records: list[tuple] = []
        self.dropped = 0  # records refused because the buffer was full and there is no on_full
        self.flushes = 0  # times on_full was called
        self.flush_ns = 0  # time spent inside on_full (it runs on the hot path: report it)
        self.taken = 0  # records handed out by drain()/on_full so far
        self._hits_out = 0  # compact hits handed out or dropped
        self._full_buffered = 0  # full-field tuples (record()) in the buffer now
        self._strings: dict[str, int] = {}
        self._names: list[str] = []
        self._lock = threading.Lock()
        # perf_counter_ns -> unix ns, captured once so spans can be placed on the wall clock.
        self.clock_offset_ns = time.time_ns() - time.perf_counter_ns()

    # -- strings (not on the hot path: intern once, at decoration/first launch) ------------------
    def intern(self, s: str) -> int:
        with self._lock:
            i = self._strings.get(s)
            if i is None:
                i = self._strings[s] = len(self._names)
                self._names.append(s)
            return i

    def string(self, i) -> str:
        """The string interned as `i` ("" for -1/None or an unknown id). A str is returned as is:
        `record()` accepts names directly as well as interned ids."""
        if isinstance(i, str):
            return i
        if i is not None and 0 <= i < len(self._names):
            return self._names[i]
        return ""

    @property
    def strings(self) -> list[str]:
        """All interned strings, indexed by id (a copy)."""
        return list(self._names)

    @property
    def sample_every(self) -> int:
        """Keep every Nth hit below level full (1: all, 0: none); read per hit by both hit paths."""
        return self._sampling[2]

    @sample_every.setter
    def sample_every(self, n: int) -> None:
        self._sampling[2] = n

    # -- hot path ---------------------------------------------------------------------------------
    def wants_hit(self) -> bool:
        """Called before timing a hit (below level full): False means this hit is not sampled."""
        s = self._sampling
        s[0] += 1
        n = self.sample_every
        if n == 1:
            return True
        if n == 0:
            return False
        s[1] += 1
        if s[1] >= n:
            s[1] = 0
            return True
        return False

    @property
    def seen(self) -> int:
        """Launches offered for sampling through the hit path (kept or not). Below level full these
        are the wants_hit() calls made at entry; at full, where the hit path calls nothing, they are
        the compact hits (kept or dropped) plus the misses/fallbacks it sent to record()."""
        offered = self._sampling[0]
        if not self.every_hit:
            return offered
        return offered + self._hits_out + len(self.records) - self._full_buffered

    def record(self, *fields, **by_name):
        """One launch with every field: `record(kernel, scope, policy, outcome, key, t_enter, t_args, t_exit,
        compile_ns=0, reason=-1)`, or any field by name (`record_layout.full` builds the tuple)."""
        r = _full_record(*fields, thread=_get_ident(), **by_name)
        if self.every_hit and r[_REASON] != "passthrough" and r[_OUTCOME] != EVICT:  # see `seen` (an eviction is no launch)
            self._sampling[0] += 1
        if len(self.records) >= self.capacity and not self._make_room(False):
            return
        self._full_buffered += 1
        self.records.append(r)

    def record_hit(self, head: tuple, t_enter: int, t_args: int, t_exit: int) -> None:
        """A compact hit: what the hit path calls when the buffer is full."""
        if len(self.records) >= self.capacity and not self._make_room(True):
            return
        self.records.append((head, t_enter, t_args, t_exit, _get_ident()))

    # -- slow path --------------------------------------------------------------------------------
    def _make_room(self, compact: bool) -> bool:
        """The buffer is full: hand it to on_full (True) or count one drop (False). Counters change
        under the lock, so concurrent launches never lose an increment."""
        if self.on_full is None:
            with self._lock:
                self.dropped += 1
                self._hits_out += compact
            return False
        self._flush_full()
        return True

    def _take(self) -> list[tuple]:
        """Take the buffered records (caller holds the lock), as FIELDS tuples.

        The list object itself is never replaced: a launching thread may hold it between reading
        `records` and appending (the C appender, `_append_hit_py`), so the records are copied out
        and deleted in place; whatever is appended meanwhile stays for the next taker. Each of the
        two list operations is one C call under the GIL."""
        recs = self.records
        out = recs[:]
        del recs[: len(out)]
        n_full = sum(1 for r in out if len(r) != _COMPACT)
        self._full_buffered = max(0, self._full_buffered - n_full)
        self.taken += len(out)
        self._hits_out += len(out) - n_full
        return out if n_full == len(out) else self._expand(out)

    @staticmethod
    def _expand(recs: list[tuple]) -> list[tuple]:
        """Compact hits -> FIELDS tuples; full tuples unchanged."""
        expand = _layout.expand
        return [r if len(r) != _COMPACT else expand(r) for r in recs]

    def _flush_full(self) -> None:
        t0 = time.perf_counter_ns()
        with self._lock:
            if len(self.records) < self.capacity:  # another thread flushed meanwhile
                return
            out = self._take()
            self.flushes += 1
        try:  # outside the lock: on_full may wait for the exporter (back-pressure), which drains under it
            self.on_full(out)  # type: ignore[misc]
        except Exception:  # a broken or backlogged sink must never break a launch; count what it lost
            with self._lock:
                self.dropped += len(out)
                self.taken -= len(out)  # not handed out after all: `recorded` excludes them
        with self._lock:
            self.flush_ns += time.perf_counter_ns() - t0

    def drain_raw(self) -> list[tuple]:
        """Take every buffered record as tuples (field order `FIELDS`); the buffer is emptied."""
        with self._lock:
            return self._take()

    def drain(self) -> list[Record]:
        """Take every buffered record as `Record`s; the buffer is emptied."""
        return [Record(*r) for r in self.drain_raw()]

    def peek(self, start: int = 0) -> list[tuple]:
        """The buffered records from position `start` on, as FIELDS tuples, without taking them."""
        return self._expand(self.records[start:])

    @contextmanager
    def keeping_every_hit(self) -> Iterator["Recorder"]:
        """At level sampled, keep every hit inside the block (e.g. a short window profiled with
        torch.profiler, whose launches should all get a span); sampling resumes after it. Below level
        full both hit paths apply `wants_hit()`'s rule per hit to the rate in `_sampling` (the native
        dispatcher reads the same array), so the change is seen at once. No effect at other levels."""
        if self.level != "sampled":
            yield self
            return
        prev, self.sample_every = self.sample_every, 1
        try:
            yield self
        finally:
            self.sample_every, self._sampling[1] = prev, 0

    @property
    def recorded(self) -> int:
        """Records accepted so far (handed out + still buffered); excludes `dropped`."""
        return self.taken + len(self.records)

    def stats(self) -> dict:
        return {
            "level": self.level,
            "sample_every": self.sample_every,
            "capacity": self.capacity,
            "hits_seen": self.seen,
            "recorded": self.recorded,
            "dropped": self.dropped,
            "flushes": self.flushes,
            "flush_ns": self.flush_ns,
            "appender": _APPENDER[1] if _APPENDER is not None else "none (no hit path made)",
        }


@dataclass
class _Active:
    recorder: Recorder | None = None


# The one switch the hot path reads.
ACTIVE = _Active()
# Recorders of open sessions, oldest first (attach/detach): the newest is ACTIVE. Below them all, the
# recorder set with activate() (None unless a program or test set one).
_ATTACHED: list = []
_BASE: list = [None]
_ATTACH_LOCK = threading.Lock()


def _refresh() -> None:
    top = next((r for r in reversed(_ATTACHED) if r.level != "off"), None)
    base = _BASE[0]
    ACTIVE.recorder = top if top is not None else (base if base is not None and base.level != "off" else None)


def activate(rec: Recorder | None) -> Recorder | None:
    """Make `rec` the recorder the jitcache writes to when no session's recorder is attached (None, or a
    recorder at level "off", turns recording off); returns the one active before, so callers can restore it."""
    with _ATTACH_LOCK:
        prev, _BASE[0] = ACTIVE.recorder, rec
        _refresh()
        return prev


def attach(rec: Recorder | None) -> None:
    """A session opens: its recorder becomes the active one (None: a session that records nothing)."""
    if rec is None:
        return
    with _ATTACH_LOCK:
        _ATTACHED.append(rec)
        _refresh()


def detach(rec: Recorder | None) -> None:
    """A session closes: exactly its recorder stops being written to; the newest still attached (else the
    activated one) becomes active, whatever order sessions close in."""
    if rec is None:
        return
    with _ATTACH_LOCK:
        for i in range(len(_ATTACHED) - 1, -1, -1):
            if _ATTACHED[i] is rec:
                del _ATTACHED[i]
                break
        if _BASE[0] is rec:
            _BASE[0] = None
        _refresh()


def reset_after_fork() -> None:
    """In a forked child: no recorder of the parent's stays active; this module's locks start free."""
    global _ATTACH_LOCK, _APPENDER_LOCK
    _ATTACH_LOCK, _APPENDER_LOCK = threading.Lock(), threading.Lock()
    _ATTACHED.clear()
    _BASE[0] = None
    ACTIVE.recorder = None


def register_process_session(start: Callable[[], object]) -> None:
    """Telemetry registers here the function that starts a process's tracing session (`telemetry.process`):
    the core calls it without importing telemetry's other modules, or any extra."""
    _STARTER[0] = start


def ensure_process_session() -> None:
    """Start the process-wide tracing session once, when `JITLAB_TRACE` is not off (called at
    decoration and by `telemetry.span`). A bad JITLAB_* value raises `settings.SettingError` here.

    With tracing off this is one cached attribute read. With it on, the [trace] extra is checked
    (a missing extra is one warning naming it, after which the program runs untraced) and the starter
    telemetry registered (`register_process_session`, done when `jitlab.telemetry` is imported, which
    importing this module does) is called."""
    if _PROCESS[0] or _settings.SETTINGS.trace == "off":
        return
    with _APPENDER_LOCK:
        if _PROCESS[0]:
            return
        _PROCESS[0] = True
    from .._extras import MissingExtra, require

    try:
        require("trace", "opentelemetry.sdk")
    except MissingExtra as e:
        log.warning("jitlab: JITLAB_TRACE=%s, but %s; launches are not traced", _settings.SETTINGS.trace, e)
        return
    if _STARTER[0] is None:  # pragma: no cover - jitlab.telemetry's import registers it
        log.warning("jitlab: JITLAB_TRACE=%s, but no tracing session is registered", _settings.SETTINGS.trace)
        return
    _STARTER[0]()


_STARTER: list = [None]  # the process session's start(), registered by jitlab.telemetry
_PROCESS = [False]  # set once a process session was started (or tried): ensure_process_session is idempotent
