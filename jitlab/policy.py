"""Policies: which of Triton's checks a jitcache keeps. Data, so a sweep is a list of them.

The default `Policy()` keeps every check Triton makes (safe: results bitwise equal to plain
Triton for any sequence of calls). Each field below relaxes one check by name; its comment
says when that is unsafe.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
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
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty str, got {self.name!r}")
        object.__setattr__(self, "check_keys", _names(self.check_keys, "check_keys"))
        object.__setattr__(self, "check_specialization", _names(self.check_specialization, "check_specialization"))
        object.__setattr__(self, "assume_const", _names(self.assume_const, "assume_const") or ())
        for flag in ("cache_launch_grid", "static"):  # 1 or "yes" would read as true: say so instead
            if type(getattr(self, flag)) is not bool:
                raise ValueError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        if type(self.verify) is not int or self.verify < 0:
            raise ValueError(f"verify must be a non-negative int, got {self.verify!r}")

    @property
    def relaxed(self) -> bool:
        return (self.check_keys is not None or self.check_specialization is not None
                or bool(self.assume_const) or self.cache_launch_grid)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Policy":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown policy field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    @classmethod
    def load(cls, path: str | Path) -> dict[str, "Policy"]:
        """The policies of a TOML file in the experiments' format (`[[policy]]` tables with a name),
        by name. Tables that refer to a workload's argument groups (`"@strides"`) need a workload:
        load those through `jitlab.bench.policies`."""
        with open(path, "rb") as f:
            try:
                tables = tomllib.load(f).get("policy")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); a policy file is UTF-8 TOML") from None
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"{path}: invalid TOML: {e}") from None
        if not isinstance(tables, list) or not tables:
            raise ValueError(f"{path}: expected one or more [[policy]] tables")
        out: dict[str, Policy] = {}
        for t in tables:
            if not isinstance(t.get("name"), str):
                raise ValueError(f"{path}: every [[policy]] needs a name, got {t}")
            if t["name"] in out:
                raise ValueError(f"{path}: two [[policy]] tables are named {t['name']!r}; each name must be unique")
            refs = [k for k, v in t.items() if isinstance(v, str) and v.startswith("@")]
            if refs:
                raise ValueError(f"{path}: policy {t['name']!r} refers to workload groups in {refs}; "
                                 "load it with jitlab.bench.policies for a workload")
            try:
                out[t["name"]] = cls.from_dict(t)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}: policy {t['name']!r}: {e}") from None
        return out

    @classmethod
    def named(cls, spec: "Policy | str") -> "Policy":
        """`policy=` of jitcache: a Policy, "safe", or "path.toml:name" (a policy of a TOML file)."""
        if isinstance(spec, Policy):
            return spec
        if not isinstance(spec, str):
            raise ValueError(f"policy must be a jitlab.Policy or a policy name, got {type(spec).__name__} {spec!r}")
        if spec == SAFE.name:
            return SAFE
        path, sep, name = spec.rpartition(":")
        if not sep or not path.endswith(".toml"):
            raise ValueError(f"policy {spec!r}: a name is 'safe' or 'path/to/policies.toml:name'")
        policies = cls.load(path)
        if name not in policies:
            raise ValueError(f"policy {name!r} is not in {path}; valid choices: {sorted(policies)}")
        return policies[name]

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
