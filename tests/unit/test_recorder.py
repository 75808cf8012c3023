"""The hot-path recorder: sampling, overflow (drops or flush), drain, interning, threads."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from jitlab import record_layout as L
from jitlab.telemetry import recorder as R


def _rec(rec: R.Recorder, outcome=R.HIT, n=1, kernel=0):
    for _ in range(n):
        t = time.perf_counter_ns()
        rec.record(kernel, 0, 0, outcome, 0, t, t + 10, t + 30)


def test_levels_and_sampling():
    full = R.Recorder("full")
    assert all(full.wants_hit() for _ in range(10)) and full.seen == 10
    summ = R.Recorder("summary")
    assert not any(summ.wants_hit() for _ in range(10)) and summ.seen == 10
    samp = R.Recorder("sampled", sample_every=4)
    picks = [samp.wants_hit() for _ in range(12)]
    assert picks.count(True) == 3 and picks[3] and picks[7] and picks[11]
    with pytest.raises(ValueError):
        R.Recorder("verbose")


def test_record_fields_and_drain():
    rec = R.Recorder("full")
    k, s, p, why = rec.intern("add"), rec.intern("scope"), rec.intern("safe"), rec.intern("interpreter")
    assert rec.intern("add") == k and rec.string(k) == "add" and rec.string(-1) == "" and rec.string(99) == ""
    rec.record(k, s, p, R.FALLBACK, -1, 100, 150, 400, 0, why)
    rec.record(k, s, p, R.MISS, 3, 500, 600, 900, 12345)
    assert rec.recorded == 2
    out = rec.drain()
    assert rec.buffered == 0 and rec.recorded == 2 and rec.taken == 2
    a, b = out
    assert (a.kernel, a.scope, a.policy, a.outcome, a.key, a.reason) == (k, s, p, R.FALLBACK, -1, why)
    assert a.arg_update_ns == 50 and a.launch_ns == 250 and a.thread == threading.get_ident()
    assert b.compile_ns == 12345 and b.reason == -1
    assert R.OUTCOME_NAMES[b.outcome] == "miss"
    rec.record(k, s, p, R.HIT, 3, 1, 2, 3)
    raw = rec.drain_raw()
    assert len(raw) == 1 and len(raw[0]) == len(R.FIELDS) and raw[0][R.FIELDS.index("key")] == 3


def test_overflow_counts_drops():
    rec = R.Recorder("full", capacity=5)
    _rec(rec, n=12)
    assert rec.buffered == 5 and rec.dropped == 7
    assert rec.stats()["dropped"] == 7 and rec.stats()["recorded"] == 5


def test_overflow_flushes_to_callback():
    chunks = []
    rec = R.Recorder("full", capacity=4, on_full=chunks.append)
    _rec(rec, n=10)
    assert [len(c) for c in chunks] == [4, 4] and rec.buffered == 2
    assert rec.dropped == 0 and rec.flushes == 2 and rec.recorded == 10 and rec.flush_ns >= 0


def test_broken_flush_callback_counts_drops_and_never_raises():
    def boom(chunk):
        raise RuntimeError("sink down")

    rec = R.Recorder("full", capacity=3, on_full=boom)
    _rec(rec, n=7)
    assert rec.dropped == 6 and rec.buffered == 1


def test_thread_ids_recorded():
    rec = R.Recorder("full")
    idents = []
    barrier = threading.Barrier(3)  # all alive at once, so their idents differ

    def work():
        idents.append(threading.get_ident())
        _rec(rec, n=3)
        barrier.wait()

    ts = [threading.Thread(target=work) for _ in range(3)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    got = {r.thread for r in rec.drain()}
    assert got == set(idents) and len(got) == 3


def test_activate_and_off():
    prev = R.activate(None)
    try:
        rec = R.Recorder("full")
        assert R.activate(rec) is None and R.ACTIVE.recorder is rec
        assert R.activate(R.Recorder("off")) is rec and R.ACTIVE.recorder is None
    finally:
        R.activate(prev)


def test_the_hit_appender_writes_what_readers_expand():
    """The path hits take (recorder.hit_appender: hit_record.c or its Python twin; the dispatcher writes
    the same row in C): rows of the hit block with t_exit stamped, expanded to full FIELDS by readers."""
    rec = R.Recorder("full", capacity=3)
    append, _ = R.hit_appender()
    head = L.head("k", "global", "safe", R.HIT, 7)
    for _ in range(3):
        t0 = time.perf_counter_ns()
        assert append(rec.hits, head, t0, t0 + 1) == 0
    assert append(rec.hits, head, 1, 2) > 0  # the block is full: t_exit returned, nothing written
    out = rec.drain()
    assert len(out) == 3 and all(r.kernel == "k" and r.key == 7 and r.outcome == R.HIT for r in out)
    assert all(r.t_enter < r.t_args <= r.t_exit and r.thread == threading.get_ident() for r in out)


def test_recorder_imports_no_opentelemetry():
    code = (
        "import sys, jitlab.telemetry.recorder, jitlab.provenance\n"
        "import jitlab.telemetry as t\n"
        "import jitlab, jitlab.cache  # the core: no OpenTelemetry either\n"
        "jitlab.provenance.provenance()\n"
        "bad = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_compact_hits_read_back_as_fields():
    """The hit path's rows come out of drain/peek/on_full as FIELDS tuples, next to record()'s full
    tuples and record_hit's compact ones, in order."""
    chunks: list = []
    rec = R.Recorder("full", capacity=100, on_full=chunks.append)
    now = time.perf_counter_ns
    head = L.head("k", "s", "p", R.HIT, 2)
    append, _ = R.hit_appender()
    t_before = time.perf_counter_ns()
    for i in range(8):
        a = now()
        b = now()
        assert append(rec.hits, head, a, b) == 0  # what the generated hit path writes
        if i == 3:
            rec.record("k", "s", "p", R.MISS, 3, *[time.perf_counter_ns()] * 3, 77)
    rec.record_hit(head, now(), now(), now())  # what the hit path calls when the buffer is full
    t_after = time.perf_counter_ns()
    assert rec.seen == 10 and rec.flushes == 0
    peeked = rec.peek(7)
    out = rec.drain_raw()
    assert peeked == out[7:] and rec.buffered == 0 and rec.recorded == 10
    i = L.INDEX
    assert [r[i["outcome"]] for r in out] == [R.HIT] * 4 + [R.MISS] + [R.HIT] * 5
    for r in out:
        assert len(r) == len(R.FIELDS) and (r[i["scope"]], r[i["policy"]]) == ("s", "p")
        assert t_before <= r[i["t_enter"]] <= r[i["t_args"]] <= r[i["t_exit"]] <= t_after, (t_before, r, t_after)
    assert [r[i["key"]] for r in out if r[i["outcome"]] == R.HIT] == [2] * 9 and out[4][i["compile_ns"]] == 77

    full = R.Recorder("full", capacity=2, on_full=chunks.append)
    for _ in range(5):
        full.record_hit(head, now(), now(), now())
    assert [len(c) for c in chunks] == [2, 2] and all(len(r) == len(R.FIELDS) for c in chunks for r in c)
    # handed off as taken: the tuples are built by whoever iterates the chunk (the exporter thread)
    assert all(type(c) is R.Chunk for c in chunks) and [r[L.INDEX["key"]] for r in chunks[0]] == [2, 2]
    dropping = R.Recorder("full", capacity=2)
    for _ in range(5):
        dropping.record_hit(head, now(), now(), now())
    assert dropping.dropped == 3 and dropping.seen == 5 and len(dropping.drain()) == 2


def test_seen_counts_launches_offered_at_each_level():
    full, sampled = R.Recorder("full"), R.Recorder("sampled", sample_every=4)
    for rec in (full, sampled):
        for _ in range(10):
            if rec.every_hit or rec.wants_hit():
                rec.record_hit(L.head("k", 0, 0, R.HIT, 0), 1, 2, 3)
        rec.record("k", 0, 0, R.FALLBACK, -1, 1, 1, 2, 0, "passthrough")  # not through the hit path
    assert full.seen == 10 and sampled.seen == 10
    assert len(full.drain()) == 11 and len(sampled.drain()) == 2 + 1


def _appenders():
    fn, what = R.hit_appender()
    return [pytest.param(R._append_hit_py, id="python")] + (
        [pytest.param(fn, id="c")] if what == "c" else [pytest.param(None, id="c", marks=pytest.mark.skip(what))])


@pytest.mark.parametrize("append_hit", _appenders())
def test_append_hit_contract(append_hit):
    """hit_record.c's append_hit and its Python twin: write rows until the block is full, then write nothing
    and return t_exit; t_exit is perf_counter_ns, the thread is threading.get_ident(). take_hits (C and
    Python) hands the rows out once and empties the block."""
    _, take_c, what = R._hit_functions()
    hits = R.new_hit_block(3)
    head = L.head("k", "s", "p", R.HIT, 0)
    a = time.perf_counter_ns()
    assert [append_hit(hits, head, 10, 20) for _ in range(3)] == [0, 0, 0]
    t_exit = append_hit(hits, head, 10, 20)
    b = time.perf_counter_ns()
    assert a <= t_exit <= b and hits[1][0] == 3
    take = R._take_hits_py if append_hit is R._append_hit_py else take_c
    with hits[2]:
        heads, rows = take(hits)
        assert take(hits) is None and hits[1][0] == 0
    recs = R.HitRows(heads, rows).expand()
    assert heads == [head] * 3 and len(recs) == 3
    for r in recs:
        got = dict(zip(L.FIELDS, r))
        assert (got["t_enter"], got["t_args"]) == (10, 20) and a <= got["t_exit"] <= t_exit
        assert got["thread"] == threading.get_ident()
    box = R.new_hit_block(1)
    th = threading.Thread(target=lambda: append_hit(box, head, 1, 2))
    th.start()
    th.join()
    assert dict(zip(L.FIELDS, R.HitRows(*take(box)).expand()[0]))["thread"] == th.ident
    if append_hit is not R._append_hit_py:  # the C one refuses what it cannot write to
        for bad in ((), ([None], R.array("q", [0, 0])), ([None], [0] * 5)):  # not a block, too short, no buffer
            with pytest.raises(TypeError):
                append_hit(bad, head, 1, 2)


def test_c_appender_where_a_compiler_is(monkeypatch):
    from jitlab import _cbuild, settings

    if _cbuild.compiler() is None:
        pytest.skip("no C compiler: the Python twin is used")
    assert R.hit_appender()[1] == "c"
    monkeypatch.setenv("JITLAB_LAUNCHER", "triton")  # "no jitlab C code at all"
    settings.reload()
    try:
        assert R._load_appender() == (R._append_hit_py, R._take_hits_py, "python (JITLAB_LAUNCHER=triton)")
    finally:
        monkeypatch.delenv("JITLAB_LAUNCHER")
        settings.reload()


def _hammer(rec: R.Recorder, append_hit, threads: int, per_thread: int) -> None:
    """`threads` threads launching through the generated hit path's tail (guard.py _LAUNCH_TEMPLATE):
    the appender, then record_hit when it reports a full buffer; every 16th launch is a miss (record())."""
    head = L.head("k", "s", "p", R.HIT, 0)
    go = threading.Event()

    def launch_loop():
        go.wait()
        for i in range(per_thread):
            t0 = time.perf_counter_ns()
            if i % 16 == 0:
                rec.record("k", "s", "p", R.MISS, 0, t0, t0, t0 + 1, 5)
                continue
            x = append_hit(rec.hits, head, t0, t0 + 1)
            if x:
                rec.record_hit(head, t0, t0 + 1, x)

    ths = [threading.Thread(target=launch_loop) for _ in range(threads)]
    for t in ths:
        t.start()
    go.set()
    for t in ths:
        t.join()


@pytest.mark.parametrize("on_full", ["flush", "drop"])
@pytest.mark.parametrize("append_hit", _appenders())
def test_records_plus_dropped_equal_launches_under_threads(append_hit, on_full):
    """8 threads, a switch interval of 1 µs (a thread switch between almost any two bytecodes), a small
    buffer that fills hundreds of times: every launch is either handed out or counted as dropped."""
    taken: list = []
    lost = [0]

    def hand_off(chunk):  # what the exporter worker does, refusing every 5th buffer (a backlog)
        if len(taken) % 5 == 4:
            lost[0] += len(chunk)
            taken.append([])
            raise RuntimeError("backlog")
        taken.append(chunk)

    rec = R.Recorder("full", capacity=97, on_full=hand_off if on_full == "flush" else None)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        _hammer(rec, append_hit, threads=8, per_thread=20_000)
    finally:
        sys.setswitchinterval(old)
    n = 8 * 20_000
    rest = rec.drain_raw()
    got = sum(len(c) for c in taken) + len(rest)
    assert got + rec.dropped == n, (got, rec.dropped, n)
    assert rec.recorded + rec.dropped == n
    if on_full == "flush":
        assert rec.dropped == lost[0] > 0 and rec.flushes > 100
    else:  # exact for both writers: the C one holds the GIL, the Python one the block's lock
        assert got == 97 and rec.dropped == n - 97
    assert all(len(r) == len(R.FIELDS) for c in taken for r in c) and all(len(r) == len(R.FIELDS) for r in rest)


def test_record_layout_is_the_one_definition_every_writer_follows():
    """Python and C appenders write hit rows in record_layout.HIT_NUMBERS' order; readers get FIELDS."""
    from jitlab import record_layout as L

    assert R.FIELDS is L.FIELDS and set(L.HEAD) < set(L.FIELDS)
    defines = dict(d[2:].split("=") for d in L.c_defines())
    assert {k: int(v) for k, v in defines.items() if k.startswith("JL_REC_COMPACT_") and k != "JL_REC_COMPACT_LEN"} \
        == {f"JL_REC_COMPACT_{n.upper()}": i for i, n in enumerate(L.COMPACT)}
    head = L.head("k", "s", "p", R.HIT, 7)
    for append in {R.hit_appender()[0], R._append_hit_py}:
        rec = R.Recorder("full", capacity=10)
        assert append(rec.hits, head, 100, 150) == 0
        (full,) = rec.drain_raw()
        got = dict(zip(L.FIELDS, full))
        assert {k: got[k] for k in L.HEAD} == dict(zip(L.HEAD, head)), (append, full)
        assert (got["t_enter"], got["t_args"], got["compile_ns"], got["reason"]) == (100, 150, 0, -1)
        assert got["t_exit"] >= 150 and got["thread"] == threading.get_ident()


@pytest.mark.parametrize("append_hit", _appenders())
def test_a_traced_hit_allocates_no_tracked_object(append_hit):
    """The hot path's record is integers written into the preallocated block: 1,000 traced hits create no
    object the garbage collector tracks (a tuple per hit would add 1,000 to generation 0's count), so the
    collector has nothing more to count or traverse with tracing at full. The Python twin allocates
    (its lock, its row) but frees it at once: it adds no tuple that stays."""
    import gc

    rec = R.Recorder("full", capacity=100_000)
    head = L.head("k", "s", "p", R.HIT, 0)
    hits = rec.hits
    for _ in range(10):  # warm: the first calls may intern or cache
        append_hit(hits, head, 1, 2)
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(1000):
            append_hit(hits, head, 1, 2)
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert rec.in_block == 1010 and rec.buffered == 1010
    if append_hit is not R._append_hit_py:
        assert grown < 10, f"{grown} tracked objects allocated by 1,000 traced hits"
    assert len(rec.drain_raw()) == 1010


def test_drop_mode_keeps_exactly_capacity_when_record_races_past_it():
    """record() appends without the lock when the block is empty, so threads at the boundary can land
    records past `capacity`; without on_full the taker drops the newest down to `capacity`, counted."""
    rec = R.Recorder("full", capacity=3)
    head = L.head("k", "s", "p", R.HIT, 0)
    rec.record_hit(head, 1, 2, 3)  # a compact hit, then rows taken from the block (as a full block does)
    rec._buffer.append(R.HitRows([head, head], bytes(8 * len(L.HIT_NUMBERS) * 2)))
    rec._extra_rows, rec._hits_listed = 1, 3
    rec._buffer.append(L.full("k", "s", "p", R.MISS, 0, 1, 2, 3, thread=1))  # two records raced in past capacity
    out = rec.drain_raw()
    assert len(out) == 3 and rec.dropped == 1 and rec.recorded + rec.dropped == 4, (len(out), rec.dropped)
    assert [r[L.INDEX["outcome"]] for r in out] == [R.HIT] * 3 and rec.seen == 3
    rec = R.Recorder("full", capacity=2)
    rec._buffer.extend([L.full("k", "s", "p", R.MISS, i, 1, 2, 3, thread=1) for i in range(4)])
    assert [r[L.INDEX["key"]] for r in rec.drain_raw()] == [0, 1] and rec.dropped == 2
