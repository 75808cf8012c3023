"""jitlab's cache key: the specialization classes Triton compiles on, as cheap Python values.

For each runtime argument Triton specializes on (notes: triton-launch.md section 3.3):
- int: its range class (i32 / i64 / u64) and, unless `do_not_specialize`, whether it is == 1
  (compiled in as a constexpr) or a multiple of 16 (divisibility hint, unless
  `do_not_specialize_on_alignment`);
- tensor: dtype and whether `data_ptr()` is 16-byte aligned (unless do_not_specialize_on_alignment);
- None: a constexpr None; bool and float: their type.
Our key may be finer than Triton's (that only costs an extra entry), never coarser; the CPU tests
check this against Triton's own binder. The generated hot-path code (guard.py) inlines the common
cases of `spec`; this module is the reference and the slow path.
"""

from __future__ import annotations

import struct
from typing import Any

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
U64_MAX = 2**64 - 1

# int class codes: range * 3 + {0: plain, 1: == 1, 2: multiple of 16}
_RANGE_NAMES = ("i32", "i64", "u64")
_CLASS_NAMES = ("", "==1", "%16==0")


class Unsupported(TypeError):
    """An argument jitlab does not key (tuples, tensor descriptors, ...): the launch falls back to Triton."""


def int_class(v: int, specialize: bool, align: bool) -> int:
    if I32_MIN <= v <= I32_MAX:
        r = 0
    elif 0 <= v - 2**63 <= U64_MAX - 2**63:
        r = 2
    elif I64_MIN <= v <= I64_MAX:
        r = 1
    else:
        raise Unsupported(f"integer {v} does not fit in 64 bits")
    if not specialize:
        return r * 3
    if v == 1:
        return r * 3 + 1
    if align and v % 16 == 0:
        return r * 3 + 2
    return r * 3


def spec(v: Any, specialize: bool = True, align: bool = True) -> Any:
    """The key item of one runtime argument (the generic, slow form)."""
    if v is None:
        return None
    t = type(v)
    if t is bool:
        return "u1"
    if t is int:
        return int_class(v, specialize, align)
    if t is float:
        return "fp32"
    if hasattr(v, "data_ptr") and hasattr(v, "dtype"):
        return (v.dtype, (not v.data_ptr() & 15) if align else True)
    raise Unsupported(f"{t.__name__} arguments are not keyed by jitlab")


class NoInlineTensor:
    """No value has this class: given to the generated hit path as its tensor type, it sends every tensor
    to `spec_with`'s spec (a backend whose tensor key has one more item: HIP)."""


def spec_with(extra: Any) -> Any:
    """keys.spec whose tensor items carry `extra(value)` too (Adapter.tensor_extra: HIP's buffer-ops range bit)."""

    def spec_extra(v: Any, specialize: bool = True, align: bool = True) -> Any:
        item = spec(v, specialize, align)
        return item + (extra(v),) if item.__class__ is tuple else item

    return spec_extra


def constexpr_item(v: Any) -> Any:
    """Key item of a constexpr value. Triton keys constexprs by their text (`str(specialization)`), so
    values that Python calls equal can compile differently: `1`, `True`, `1.0`; `0.0` and `-0.0`;
    `(3, 2)` and `(3.0, 2)`. Our item is never coarser than that text: ints and None are themselves,
    floats their bits (distinct bits have distinct reprs; every NaN reprs as 'nan', so one NaN pattern),
    tuples are keyed element by element, other objects by type, repr and value."""
    t = type(v)
    if t is int or v is None:
        return v
    if t is bool or t is str:
        return (t, v)
    if t is float:
        return (t, float_bits(v))
    if t is tuple:
        return (t, tuple(constexpr_item(x) for x in v))
    hash(v)  # unhashable constexprs fall back to Triton (TypeError)
    return (t, repr(v), v)


def options_item(options: dict) -> tuple:
    """Key item of the launch options (num_warps=..., num_stages=...). Triton keys them by their text
    (`str(options)`), so `4`, `4.0`, `True` and `np.int64(4)` are four keys to it (four binaries, or
    its own error): each value is keyed by type and value as a constexpr is, never by `==`."""
    return tuple((k, constexpr_item(v)) for k, v in options.items())


_NAN_BITS = 0x7FF8000000000000


def float_bits(v: float) -> int:
    """The IEEE-754 bits of `v`, every NaN as one pattern (what native_key.h compares in C)."""
    return _NAN_BITS if v != v else int.from_bytes(struct.pack("<d", v), "little")


def describe(item: Any, kind: str = "runtime") -> str:
    """Human-readable key item, for LockedMiss and verify messages. `kind` is the key position's kind
    (codegen.KeyLayout): runtime, constexpr, options, state or device."""
    if kind == "device":
        return f"device {item}"
    if kind == "options":
        return "{" + ", ".join(f"{k!r}: {describe(v, 'constexpr')}" for k, v in item) + "}" if item else "no options"
    if kind == "constexpr":
        if item is None or type(item) is int:
            return repr(item)
        if item[0] is float:
            return repr(struct.unpack("<d", item[1].to_bytes(8, "little"))[0])
        if len(item) == 3:  # (type, repr, value)
            return item[1]
        return repr(item[1])
    if kind == "state":
        return repr(item)
    if item is None:
        return "None"
    if type(item) is int:
        r, c = divmod(item, 3)
        return f"{_RANGE_NAMES[r]}{' ' + _CLASS_NAMES[c] if c else ''}"
    if isinstance(item, tuple) and len(item) == 2 and hasattr(item[0], "is_floating_point"):
        return f"tensor {item[0]}{'' if item[1] else ' misaligned'}"
    return repr(item)
