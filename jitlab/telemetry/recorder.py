"""Per-launch records kept as plain integers: the only telemetry module the hot path touches.

The jitcache's generated hit path reads `recorder.ACTIVE.recorder`; when it is not None and the
hit is kept (`every_hit`, or `wants_hit()` for sampling) it reads `perf_counter_ns()` twice
(entry, arguments ready) and, after the launch, calls `hit_appender()`'s function, which stamps
t_exit and writes one row into the recorder's preallocated hit block (`hits`: the entry's prebuilt
head `(kernel, scope, policy, HIT, key, device)` into a list slot, t_enter, t_args, t_exit and the thread
as int64s; jitlab/hit_block.h). No object is allocated: tuples are built when the block is taken, off
the hot path. At level full that is all it does: no Recorder method call and no counter (see `seen`). Misses, locked misses, fallbacks and
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

# Field order of the tuples readers get (and of `Record`); the buffer also holds compact hits
# (`record_layout.COMPACT`) and hit block rows (`HIT_NUMBERS`). The one definition of all is jitlab.record_layout.
FIELDS = _layout.FIELDS

_get_ident = threading.get_ident
_full_record = _layout.full
_OUTCOME, _REASON = _layout.INDEX["outcome"], _layout.INDEX["reason"]
_COMPACT = len(_layout.COMPACT)  # len of a compact hit tuple: (head, t_enter, t_args, t_exit, thread)
log = logging.getLogger(__name__)

# The hit block (jitlab/hit_block.h): rows per block. A traced hit writes one row, with no allocation; a full
# block costs the hit that finds it full one Python call (record_hit), which takes the rows out.
HIT_BLOCK_ROWS = 4096
_FILL = _layout.HIT_BLOCK_HEADER.index("fill")
_HEADER, _STRIDE = len(_layout.HIT_BLOCK_HEADER), len(_layout.HIT_NUMBERS)


def new_hit_block(rows: int) -> tuple[list, array, threading.Lock]:
    """(heads, nums, lock): `rows` head slots, the int64 header and rows, and the lock the Python writer and
    every taker hold (C writers need none: they hold the GIL and run no Python code while writing)."""
    return [None] * rows, array("q", bytes(8 * (_HEADER + rows * _STRIDE))), threading.Lock()


def _append_hit_py(hits: tuple, head: tuple, t_enter: int, t_args: int) -> int:
    """Write a hit stamped with t_exit now into the hit block `hits`; 0, or t_exit (nothing written) when the
    block is full. The Python twin of hit_record.c's append_hit (same contract, slower: it takes the
    block's lock, since its reads and writes are separate steps)."""
    t_exit = time.perf_counter_ns()
    heads, nums, lock = hits
    ident = _get_ident()
    numbers = {"t_enter": t_enter, "t_args": t_args, "t_exit": t_exit,
               "thread": ident - (1 << 64) if ident >= 1 << 63 else ident}
    with lock:
        i = nums[_FILL]
        if i >= len(heads):
            return t_exit
        j = _HEADER + i * _STRIDE
        nums[j:j + _STRIDE] = array("q", [numbers[name] for name in _layout.HIT_NUMBERS])
        heads[i] = head
        nums[_FILL] = i + 1
    return 0


def _take_hits_py(hits: tuple) -> tuple[list, bytes] | None:
    """hit_record.c's take_hits in Python: the rows written and the block emptied. The caller holds the
    block's lock, and only the Python writer writes (the C ones write only where take_hits is C)."""
    heads, nums, _ = hits
    n = nums[_FILL]
    if not n:
        return None
    out = heads[:n], nums[_HEADER:_HEADER + n * _STRIDE].tobytes()
    nums[_FILL] = 0
    return out


class HitRows:
    """Rows taken out of a hit block: the heads and the rows' int64s, turned into tuples only when read."""

    __slots__ = ("heads", "rows")

    def __init__(self, heads: list, rows: bytes):
        self.heads, self.rows = heads, rows

    def __len__(self) -> int:
        return len(self.heads)

    def first(self, n: int) -> "HitRows":
        return HitRows(self.heads[:n], self.rows[:n * _STRIDE * 8])

    def expand(self) -> list[tuple]:
        """FIELDS tuples (record_layout.expand_row), in the order the hits were written."""
        nums = array("q")
        nums.frombytes(self.rows)
        it = iter(nums)
        return list(map(_layout.expand_row, self.heads, zip(*[it] * _STRIDE)))


def _expand(recs: list) -> list[tuple]:
    """Buffered records -> FIELDS tuples: HitRows and compact hits expanded, full tuples unchanged."""
    expand, out = _layout.expand, []
    for r in recs:
        if isinstance(r, HitRows):
            out.extend(r.expand())
        else:
            out.append(r if len(r) != _COMPACT else expand(r))
    return out


def _keep_first(items: list, n: int) -> None:
    """Cut buffered items (tuples, HitRows) to their first `n` records, in place."""
    total = sum(len(r) if isinstance(r, HitRows) else 1 for r in items)
    while total > n:
        last = items[-1]
        size = len(last) if isinstance(last, HitRows) else 1
        if size > total - n:
            items[-1] = last.first(size - (total - n))
            return
        items.pop()
        total -= size


class Chunk:
    """A full buffer handed to `on_full`: its records, as FIELDS tuples when iterated. Taking it costs the
    launching thread no tuple building; the exporter thread that iterates it builds them."""

    __slots__ = ("_items", "_n")

    def __init__(self, items: list, n: int):
        self._items, self._n = items, n

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[tuple]:
        return iter(_expand(self._items))

    def __repr__(self) -> str:
        return f"Chunk({self._n} records)"


_APPENDER: tuple[Callable, Callable, str] | None = None
_APPENDER_LOCK = threading.Lock()


def hit_appender() -> tuple[Callable, str]:
    """(append_hit, what it is): hit_record.c's one-call tail of a traced hit where it builds and its
    clock reads as perf_counter_ns, else `_append_hit_py`. Chosen once, by the first recorder or hit path."""
    append, _, what = _hit_functions()
    return append, what


def _hit_functions() -> tuple[Callable, Callable, str]:
    """(append_hit, take_hits, what): both from hit_record.c, or both the Python twins."""
    global _APPENDER
    if _APPENDER is None:
        with _APPENDER_LOCK:
            if _APPENDER is None:
                _APPENDER = _load_appender()
                log.debug("jitlab: hit records appended by %s", _APPENDER[2])
    return _APPENDER


def _load_appender() -> tuple[Callable, Callable, str]:
    from .. import _cbuild

    if not _settings.native_parts().c_code:  # JITLAB_LAUNCHER=triton: no jitlab C code at all
        return _append_hit_py, _take_hits_py, "python (JITLAB_LAUNCHER=triton)"
    try:
        src = Path(__file__).with_name("hit_record.c")
        header = Path(_layout.__file__).with_name("hit_block.h")
        mod = _cbuild.build("_jitlab_hit_record", src, "hit_record", headers=(header,),
                            include_dirs=(str(header.parent),), extra=_layout.c_defines())
        a, c, b = time.perf_counter_ns(), mod.now_ns(), time.perf_counter_ns()
        if not a <= c <= b:
            raise RuntimeError(f"its clock is not perf_counter_ns here ({a} <= {c} <= {b} fails)")
        probe = new_hit_block(1)
        if mod.append_hit(probe, (), 1, 2) != 0 or mod.append_hit(probe, (), 1, 2) == 0 \
                or mod.take_hits(probe)[0] != [()] or mod.take_hits(probe) is not None:
            raise RuntimeError("append_hit/take_hits do not keep their contract")
    except Exception as e:  # noqa: BLE001 - the Python twin is exact, only slower
        log.info("jitlab: hit records appended in Python (%s: %s)", type(e).__name__, e)
        return _append_hit_py, _take_hits_py, f"python ({type(e).__name__})"
    return mod.append_hit, mod.take_hits, "c"


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

    Traced hits are written into the hit block `hits` (`HIT_BLOCK_ROWS` rows of raw int64s and head slots,
    preallocated); the rest (`record()`) and the block's rows, once taken out, queue in the buffer in
    launch order. Readers (`drain_raw`, `drain`, `peek`, `on_full`) always get full `FIELDS` tuples.

    When the buffer holds `capacity` records, the next `record()` or full block either hands the buffer
    to `on_full(chunk)` (a `Chunk`: its len() and, iterated, its FIELDS tuples, built by whoever iterates;
    called once per full buffer, on the launching thread; the records are taken out first, and a chunk
    may exceed `capacity` by up to one block) or, without `on_full`, counts
    what does not fit in `dropped` (the newest records are the ones dropped). `on_full` must be quick (a
    hand-off to a background exporter: `telemetry.worker`); when it raises, the chunk is counted in
    `dropped`. Nothing is lost silently: with any number of launching threads, `recorded + dropped`
    equals the records offered, once the block is taken (every reader takes it).
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
        self.capacity = min(int(capacity), _settings.RECORDER_CAPACITY_MAX)
        # [offered, tick, sample_every]: wants_hit() calls, the sampling phase and the rate, as int64s the
        # native dispatcher reads and updates in place too (dispatch.cpp samples without calling
        # wants_hit); never resized
        self._sampling = array("q", [0, 0, 0])
        # summary keeps no hits; sampled keeps every Nth; full keeps all.
        self.sample_every = {"full": 1, "sampled": max(1, int(sample_every)), "summary": 0, "off": 0}[level]
        # The hit path reads this flag and, when set, writes every hit without a wants_hit() call (so
        # `seen` is derived from the records, not counted per launch).
        self.every_hit = self.sample_every == 1
        self.on_full = on_full
        # The hit block both hit paths write (jitlab/hit_block.h), and whether C writes it: the dispatcher
        # writes rows itself only where the taker is C too (else it calls record_hit).
        # (summary keeps no hits: one row, never written)
        self.hits = new_hit_block(min(self.capacity, HIT_BLOCK_ROWS) if level in ("sampled", "full") else 1)
        self._block_nums = self.hits[1]
        if level == "off":
            self.c_hits = False
            self._take_hits = _take_hits_py
        else:
            _, self._take_hits, what = _hit_functions()
            self.c_hits = what == "c"
        # Full tuples (record), compact tuples (record_hit) and HitRows, in launch order. The list object is
        # never replaced: record() appends a full tuple without the lock when the hit block is empty (a
        # pass-through launch under `observe` costs what it did), so takers copy out and delete in place.
        self._buffer: list = []
        self._extra_rows = 0  # sum of len(rows) - 1 over the HitRows in _buffer (changed under the lock)
        self._hits_listed = 0  # hits in _buffer: compact tuples and rows (changed under the lock)
        self.dropped = 0  # records refused because the buffer was full and there is no on_full
        self.flushes = 0  # times on_full was called
        self.flush_ns = 0  # time spent inside on_full (it runs on the hot path: report it)
        self.taken = 0  # records handed out by drain()/on_full so far
        self._hits_out = 0  # hits handed out or dropped
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
    def in_block(self) -> int:
        """Hits written into the hit block and not taken out yet."""
        return self._block_nums[_FILL]

    @property
    def buffered(self) -> int:
        """Records held now (the buffer and the hit block): `peek(buffered)` starts after them."""
        return self._listed + self.in_block

    @property
    def _listed(self) -> int:
        """Records in the buffer (a HitRows counts its rows)."""
        return len(self._buffer) + self._extra_rows

    @property
    def seen(self) -> int:
        """Launches offered for sampling through the hit path (kept or not). Below level full these
        are the wants_hit() calls made at entry; at full, where the hit path calls nothing, they are
        the hits (kept or dropped) plus the misses/fallbacks it sent to record()."""
        offered = self._sampling[0]
        if not self.every_hit:
            return offered
        return offered + self._hits_out + self._hits_listed + self.in_block

    def record(self, *fields, **by_name):
        """One launch with every field: `record(kernel, scope, policy, outcome, key, t_enter, t_args, t_exit,
        compile_ns=0, reason=-1)`, or any field by name (`record_layout.full` builds the tuple)."""
        r = _full_record(*fields, thread=_get_ident(), **by_name)
        if self.every_hit and r[_REASON] != "passthrough" and r[_OUTCOME] != EVICT:  # see `seen` (an eviction is no launch)
            self._sampling[0] += 1
        buf = self._buffer
        if not self._block_nums[_FILL] and len(buf) + self._extra_rows < self.capacity:  # nothing to take first
            buf.append(r)  # no lock: one C call under the GIL (a racing thread may land one past capacity)
            return
        self._add(r, False)

    def record_hit(self, head: tuple, t_enter: int, t_args: int, t_exit: int) -> None:
        """A hit the hit path could not write into the block (it is full): take the block, then keep the hit."""
        self._add((head, t_enter, t_args, t_exit, _get_ident()), True)

    # -- slow path --------------------------------------------------------------------------------
    def _add(self, r: tuple, hit: bool) -> None:
        """Queue `r` after the block's rows (taken first, so the buffer stays in launch order); when the
        buffer is full, hand it to on_full first, or count `r` as dropped. Counters change under the lock,
        so concurrent launches never lose an increment."""
        with self._lock:
            self._take_block()
            if self._listed < self.capacity:
                self._append(r, hit)
                return
            if self.on_full is None:
                self.dropped += 1
                self._hits_out += hit
                return
            out = Chunk(*self._take())
            self.flushes += 1
        self._hand_off(out)
        with self._lock:
            self._append(r, hit)  # (another thread may have filled the buffer again meanwhile: one past it)

    def _append(self, r: tuple, hit: bool) -> None:
        self._buffer.append(r)
        self._hits_listed += hit

    def _take_block(self) -> None:
        """Move the hit block's rows to the buffer (caller holds the recorder's lock). Without on_full, rows
        past `capacity` are counted as dropped, so `capacity` bounds the buffer as it did for each record."""
        with self.hits[2]:
            taken = self._take_hits(self.hits)
        if taken is None:
            return
        rows = HitRows(*taken)
        n = len(rows)
        room = self.capacity - self._listed
        if self.on_full is None and n > room:
            keep = max(0, room)
            self.dropped += n - keep
            self._hits_out += n - keep
            if not keep:
                return
            rows, n = rows.first(keep), keep
        self._buffer.append(rows)
        self._extra_rows += n - 1
        self._hits_listed += n

    def _take(self) -> tuple[list, int]:
        """Take every buffered record (caller holds the lock), as they are buffered, and their number.

        The hit block is taken in one step no writer can enter (take_hits); only
        holders of the lock add HitRows and compact hits to it. No tuple is built here: this runs on a
        launching thread when the buffer is full (the records become tuples where they are read: `Chunk`,
        `drain_raw`). A full tuple appended without the lock meanwhile lands after the copy and stays."""
        self._take_block()
        buf = self._buffer
        out = buf[:]
        del buf[:len(out)]
        n = len(out) + self._extra_rows  # every HitRows and compact hit is in `out` (added under the lock)
        if self.on_full is None and n > self.capacity:  # record()s that raced past capacity: the newest go
            self.dropped += n - self.capacity
            n = self.capacity
            _keep_first(out, n)
        self.taken += n
        self._hits_out += self._hits_listed
        self._extra_rows = self._hits_listed = 0
        return out, n

    def _hand_off(self, out: "Chunk") -> None:
        t0 = time.perf_counter_ns()
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
            out, _ = self._take()
        return _expand(out)

    def drain(self) -> list[Record]:
        """Take every buffered record as `Record`s; the buffer is emptied."""
        return [Record(*r) for r in self.drain_raw()]

    def peek(self, start: int = 0) -> list[tuple]:
        """The buffered records from position `start` on, as FIELDS tuples, without taking them."""
        with self._lock:
            self._take_block()
            recs = list(self._buffer)
        return _expand(recs)[start:]

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
        """Records accepted so far (handed out + still buffered or in the block); excludes `dropped`."""
        return self.taken + self.buffered

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
            "appender": _APPENDER[2] if _APPENDER is not None else "none (no hit path made)",
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
