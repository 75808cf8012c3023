"""The launch record's one definition (jitlab.record_layout): writers build records by field name, so a new
field is one edit there plus its writer (issue 22 item 1)."""

from __future__ import annotations

import dataclasses

import pytest

from jitlab import record_layout as L
from jitlab.telemetry import recorder as R


def test_full_builds_fields_in_order_positionally_and_by_name():
    by_position = L.full("k", "s", "p", R.MISS, 3, 10, 20, 30, 5, "why", thread=7)
    by_name = L.full(kernel="k", scope="s", policy="p", outcome=R.MISS, key=3, t_enter=10, t_args=20, t_exit=30,
                     compile_ns=5, reason="why", thread=7)
    assert by_position == by_name and len(by_name) == len(L.FIELDS)
    assert {n: by_name[i] for n, i in L.INDEX.items()}["thread"] == 7
    defaults = L.full("k", "s", "p", R.HIT, 0, 1, 2, 3, thread=1)
    assert all(defaults[L.INDEX[n]] == v for n, v in L.DEFAULTS.items())
    with pytest.raises(TypeError):
        L.full("k", "s", "p", R.HIT, 0, 1, 2, 3, 0, -1, 99)  # the recorder's own field is keyword-only


def test_head_and_expand_agree_with_full():
    head = L.head("k", "s", "p", R.HIT, 4)
    assert L.expand((head, 1, 2, 3, 9)) == L.full("k", "s", "p", R.HIT, 4, 1, 2, 3, thread=9)


def test_record_class_and_recorder_take_the_layout():
    assert tuple(f.name for f in dataclasses.fields(R.Record)) == L.FIELDS
    rec = R.Recorder("full", capacity=1000)
    rec.record("k", "s", "p", R.FALLBACK, -1, 1, 2, 3, reason="bind:TypeError")
    (r,) = rec.drain()
    assert (r.kernel, r.outcome, r.reason, r.compile_ns, r.launch_ns) == ("k", R.FALLBACK, "bind:TypeError", 0, 1)


def test_a_new_defaulted_field_keeps_every_existing_writer_working():
    """What adding a field costs: the field, with its default, in the one definition; the writers that call
    positionally or by name keep working, and the field lands at its position."""
    fields = L.HEAD + ("extra",) + L.FIELDS[len(L.HEAD):]
    saved = dict(L.DEFAULTS)
    try:
        L.DEFAULTS["extra"] = -1
        full = L._make_writer(fields, "full")
        r = full("k", "s", "p", R.HIT, 0, 1, 2, 3, thread=5)
        assert r[fields.index("extra")] == -1 and r[fields.index("t_exit")] == 3
        assert full("k", "s", "p", R.HIT, 0, 1, 2, 3, extra=8, thread=5)[fields.index("extra")] == 8
    finally:
        L.DEFAULTS.clear()
        L.DEFAULTS.update(saved)


def test_c_defines_name_every_position():
    flags = dict(f[2:].split("=") for f in L.c_defines())
    assert int(flags["JL_REC_LEN"]) == len(L.FIELDS) and int(flags["JL_REC_COMPACT_LEN"]) == len(L.COMPACT)
    assert all(int(flags[f"JL_REC_{n.upper()}"]) == i for n, i in L.INDEX.items())


def test_launch_spans_carry_the_entry_device():
    """The field added through the one definition (record_layout.HEAD `device`) reaches the span."""
    pytest.importorskip("opentelemetry.sdk")
    from jitlab.telemetry.spans import A_DEVICE, SpanBuilder

    builder = SpanBuilder.__new__(SpanBuilder)
    builder.string = lambda x: x
    hit = L.expand((L.head("k", "s", "p", R.HIT, 0, 3), 1, 2, 3, 9))
    fallback = L.full("k", "s", "p", R.FALLBACK, -1, 1, 2, 3, reason="why", thread=9)
    assert builder.launch_attributes(hit)[A_DEVICE] == 3
    assert A_DEVICE not in builder.launch_attributes(fallback)
