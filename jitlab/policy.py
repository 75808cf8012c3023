"""Policies: which of Triton's checks a jitcache keeps. Data, so a sweep is a list of them.

The default `Policy()` keeps every check Triton makes (safe: results bitwise equal to plain
Triton for any sequence of calls). Each field below relaxes one check by name; its comment
says when that is unsafe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable


def _names(value: Any, field_name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError(f"{field_name} must be a list of argument names, got {type(value).__name__} {value!r}")
    for v in value:
        if not isinstance(v, str):
            raise ValueError(f"{field_name} must hold argument names (str), got {v!r}")
    return tuple(value)


@dataclass(frozen=True)
class Policy:
    name: str = "safe"
    #: Constexprs that index the cache (None = all). Unsafe when an unlisted constexpr changes:
    #: the entry compiled for its first value is reused.
    check_keys: tuple[str, ...] | None = None
    #: Runtime arguments whose specialization is checked (None = all): for ints the ==1 / %16 / i32-i64-u64
    #: class, for tensors dtype, 16-byte alignment and None-ness. Unsafe when an unlisted int becomes 1
    #: (compiled in as a constant), a pointer loses alignment, a dtype changes, or None becomes a tensor.
    check_specialization: tuple[str, ...] | None = None
    #: Runtime arguments frozen at the value seen when the entry was prepared: never read again.
    #: Unsafe when the value changes (strides of a new tensor layout, a per-layer scale tensor).
    assume_const: tuple[str, ...] = ()
    #: Reuse the grid evaluated at prepare time. Unsafe when the grid depends on arguments that change
    #: (batch size, number of tokens) for the same cache entry.
    cache_launch_grid: bool = False
    #: Static mode: a CacheLock; after lock(), a miss raises LockedMiss instead of compiling.
    static: bool = False
    #: Re-derive Triton's full key on every Nth hit and raise AssumptionViolated on a mismatch (0 = off).
    verify: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "check_keys", _names(self.check_keys, "check_keys"))
        object.__setattr__(self, "check_specialization", _names(self.check_specialization, "check_specialization"))
        object.__setattr__(self, "assume_const", _names(self.assume_const, "assume_const") or ())
        if not isinstance(self.verify, int) or self.verify < 0:
            raise ValueError(f"verify must be a non-negative int, got {self.verify!r}")

    @property
    def relaxed(self) -> bool:
        return (self.check_keys is not None or self.check_specialization is not None
                or bool(self.assume_const) or self.cache_launch_grid)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Policy":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    def replace(self, **changes: Any) -> "Policy":
        return Policy.from_dict({**self.to_dict(), **changes})

    def validate(self, kernel: str, constexprs: Iterable[str], runtime: Iterable[str]) -> None:
        """ValueError naming the kernel, the bad name and the valid choices (at decoration time)."""
        constexprs, runtime = list(constexprs), list(runtime)
        checks = (("check_keys", self.check_keys, constexprs, runtime, "a runtime argument"),
                  ("check_specialization", self.check_specialization, runtime, constexprs, "a constexpr"),
                  ("assume_const", self.assume_const, runtime, constexprs, "a constexpr"))
        for field_name, names, valid, other, other_kind in checks:
            for n in names or ():
                if n in valid:
                    continue
                why = f"{n!r} is {other_kind}" if n in other else f"unknown argument {n!r}"
                raise ValueError(f"jitcache({kernel}): {field_name}: {why}; valid choices: {sorted(valid)}")
        both = set(self.assume_const) & set(self.check_specialization or ())
        if both:
            raise ValueError(f"jitcache({kernel}): {sorted(both)} cannot be both assume_const and check_specialization")


SAFE = Policy()
