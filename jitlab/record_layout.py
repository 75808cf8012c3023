"""The launch record's layout, defined once, by name: Python, C and C++ take positions from here.

A launch record is a tuple. Slow paths (`Recorder.record`) append a full record, fields `FIELDS`. A traced
hit appends a compact one, fields `COMPACT`, whose first item is the entry's prebuilt head (`HEAD`); the
hit path writes it in C (telemetry/hit_record.c, _triton/dispatch.cpp) or Python (`_append_hit_py`), and
readers get it expanded to `FIELDS` (`expand`). C sources get the positions as macros (`c_defines()`,
passed to the compiler by `jitlab._cbuild` builds; the sources refuse to build without them), so adding
a field is one edit here plus its writer: the writers build records by field name (`full`, `head`).

Standard library only, no jitlab imports: the core, `_triton` and telemetry all read it.
"""

from __future__ import annotations

from typing import Callable

# The entry's prebuilt head: the part of a hit's record that is the same for every hit of one entry.
HEAD = ("kernel", "scope", "policy", "outcome", "key", "device")
# A compact (hit) record: the head, then what each hit stamps.
COMPACT = ("head", "t_enter", "t_args", "t_exit", "thread")
# A full record, as readers get every record.
FIELDS = HEAD + ("t_enter", "t_args", "t_exit", "compile_ns", "thread", "reason")
# Values of the fields a writer may leave out, in the order writers take them positionally after the
# required ones: a new field goes last here, so positional writers keep working.
DEFAULTS = {"compile_ns": 0, "reason": -1, "device": -1}
COMPACT_DEFAULTS = {name: value for name, value in DEFAULTS.items() if name not in HEAD and name not in COMPACT}
# Written by the recorder itself (the launching thread), never by a caller.
RECORDER_FIELDS = ("thread",)

INDEX = {name: i for i, name in enumerate(FIELDS)}  # position of each field in a full record
COMPACT_INDEX = {name: i for i, name in enumerate(COMPACT)}


def _make_expand() -> Callable[[tuple], tuple]:
    """compact -> full, as one generated expression (this runs per record at export: keep it one tuple build)."""
    parts = []
    for name in FIELDS:
        if name in HEAD:
            parts.append(f"r[{COMPACT_INDEX['head']}][{HEAD.index(name)}]")
        elif name in COMPACT_INDEX:
            parts.append(f"r[{COMPACT_INDEX[name]}]")
        else:
            parts.append(repr(COMPACT_DEFAULTS[name]))
    return eval(f"lambda r: ({', '.join(parts)},)")  # noqa: S307 - built from the names above only


expand = _make_expand()


def _make_writer(fields: tuple[str, ...], name: str) -> Callable[..., tuple]:
    """A function building a tuple of `fields` in their order from arguments by name: the ones without a
    default first, positionally or by keyword, then the defaulted ones (DEFAULTS), then the recorder's own
    (keyword only). Adding a field with a default keeps every existing caller working."""
    required = [f for f in fields if f not in DEFAULTS and f not in RECORDER_FIELDS]
    optional = [f"{f}={DEFAULTS[f]!r}" for f in DEFAULTS if f in fields]
    own = [f for f in fields if f in RECORDER_FIELDS]
    params = ", ".join(required + optional + (["*", *own] if own else []))
    code = f"def {name}({params}):\n    return ({', '.join(fields)},)\n"
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - built from the field names above only
    return namespace[name]


full = _make_writer(FIELDS, "full")  # a full record: full(kernel, scope, ..., reason=-1, *, thread)
head = _make_writer(HEAD, "head")  # an entry's prebuilt head: head(kernel, scope, policy, outcome, key)


def c_defines() -> tuple[str, ...]:
    """Compiler flags defining the layout for C/C++: JL_REC_COMPACT_LEN, JL_REC_COMPACT_<FIELD> (position in
    a compact record), JL_REC_LEN, JL_REC_<FIELD> (position in a full record)."""
    out = [f"-DJL_REC_COMPACT_LEN={len(COMPACT)}", f"-DJL_REC_LEN={len(FIELDS)}"]
    out += [f"-DJL_REC_COMPACT_{n.upper()}={i}" for n, i in COMPACT_INDEX.items()]
    out += [f"-DJL_REC_{n.upper()}={i}" for n, i in INDEX.items()]
    return tuple(out)
