"""The launch record's layout, defined once, by name: Python, C and C++ take positions from here.

A launch record is a tuple. Slow paths (`Recorder.record`) append a full record, fields `FIELDS`. A traced
hit is a compact one, fields `COMPACT`, whose first item is the entry's prebuilt head (`HEAD`). The hit
path does not build that tuple: it writes the head into a preallocated list slot and the numbers
(`HIT_NUMBERS`) as raw int64s into a preallocated array, the recorder's hit block (`HIT_BLOCK_HEADER`
first, then one row per hit; hit_block.h writes it for C and C++, `_append_hit_py` for Python). Tuples
are built off the hot path, when the block is taken, and readers get them expanded to `FIELDS` (`expand`). C sources get the positions as macros (`c_defines()`,
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

# A hit block row: the compact record's numbers, as int64 (thread: the ident's bits, read back unsigned).
HIT_NUMBERS = tuple(name for name in COMPACT if name != "head")
# The block's int64 array starts with these counters, then holds the rows: fill = rows written.
HIT_BLOCK_HEADER = ("fill",)

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

# Hit-block numbers stored as int64 whose value is unsigned (a thread ident is a C unsigned long).
UNSIGNED = frozenset({"thread"})


def _make_expand_row() -> Callable[[tuple, tuple], tuple]:
    """(head, a hit block row's numbers) -> full, as one generated expression (per hit, at export)."""
    parts = []
    for name in FIELDS:
        if name in HEAD:
            parts.append(f"h[{HEAD.index(name)}]")
        elif name in HIT_NUMBERS:
            item = f"n[{HIT_NUMBERS.index(name)}]"
            parts.append(f"({item} & 0xFFFFFFFFFFFFFFFF)" if name in UNSIGNED else item)
        else:
            parts.append(repr(COMPACT_DEFAULTS[name]))
    return eval(f"lambda h, n: ({', '.join(parts)},)")  # noqa: S307 - built from the names above only


expand_row = _make_expand_row()


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
    a compact record), JL_REC_LEN, JL_REC_<FIELD> (position in a full record); for the hit block
    (hit_block.h) JL_HIT_STRIDE (int64s per row), JL_HIT_<NUMBER> (position in a row), JL_HIT_HEADER_LEN
    and JL_HIT_BLOCK_<COUNTER> (position in the header)."""
    out = [f"-DJL_REC_COMPACT_LEN={len(COMPACT)}", f"-DJL_REC_LEN={len(FIELDS)}"]
    out += [f"-DJL_REC_COMPACT_{n.upper()}={i}" for n, i in COMPACT_INDEX.items()]
    out += [f"-DJL_REC_{n.upper()}={i}" for n, i in INDEX.items()]
    out += [f"-DJL_HIT_STRIDE={len(HIT_NUMBERS)}", f"-DJL_HIT_HEADER_LEN={len(HIT_BLOCK_HEADER)}"]
    out += [f"-DJL_HIT_{n.upper()}={i}" for i, n in enumerate(HIT_NUMBERS)]
    out += [f"-DJL_HIT_BLOCK_{n.upper()}={i}" for i, n in enumerate(HIT_BLOCK_HEADER)]
    return tuple(out)
