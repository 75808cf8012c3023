"""Policies: which of Triton's checks a jitcache keeps. Data, so a sweep is a list of them.

The default `Policy()` keeps every check Triton makes (safe: results bitwise equal to plain
Triton for any sequence of calls). Each field below relaxes one check by name; its comment
says when that is unsafe.

Policy files (TOML) are read here and only here: `[[policy]]` tables (a sweep, or the policies of
`policy="file.toml:name"`), or one `[policy.<kernel>]` table per kernel. A name list is a TOML array
of argument names, or a string of terms joined by `+` (add) and `-` (remove), left to right: a term
is an argument name or a reference to an argument group of the kernel's workload, one of
@strides, @scales, @fixed_per_model, @varying_constexprs, @varying_ints (`jitlab.kernels.Case`).
A removal that removes nothing is an error. A table may carry `[policy.kernels.<kernel>]` overrides
(the vLLM plugin's files), and a file may define `[groups.<kernel>]` tables.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

#: The argument groups a name list may refer to as `@<group>` (the fields of jitlab.kernels.Case).
GROUPS = ("strides", "scales", "fixed_per_model", "varying_constexprs", "varying_ints")


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
    def load(cls, path: str | Path, groups: Any = None) -> dict[str, "Policy"]:
        """The policies of a `[[policy]]` file, by name; `@group` references resolve against `groups`
        (see `policy_of`)."""
        return {t["name"]: policy_of(t, groups) for t in sweep_tables(path)}

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
        tables = {t["name"]: t for t in sweep_tables(path)}
        if name not in tables:
            raise ValueError(f"policy {name!r} is not in {path}; valid choices: {sorted(tables)}")
        return policy_of(tables[name])

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


# ------------------------------------------------------------------------------------- policy files

def read_policy_file(path: str | Path) -> dict:
    """The TOML document of a policy file; ValueError (one line naming the file) if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ValueError(f"cannot read policies from {path}: {e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); a policy file is UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: invalid TOML: {e}") from None


def sweep_tables(path: str | Path, doc: dict | None = None) -> list[dict]:
    """The `[[policy]]` tables of a file, in order, each with a name."""
    tables = (read_policy_file(path) if doc is None else doc).get("policy")
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"{path}: expected one or more [[policy]] tables")
    seen: set[str] = set()
    for t in tables:
        if not isinstance(t.get("name"), str):
            raise ValueError(f"{path}: every [[policy]] needs a name, got {t}")
        if t["name"] in seen:
            raise ValueError(f"{path}: two [[policy]] tables are named {t['name']!r}; each name must be unique")
        seen.add(t["name"])
    return tables


def per_kernel_tables(path: str | Path, kernels: Iterable[str]) -> dict[str, dict]:
    """The `[policy.<kernel>]` tables of a file; exactly one per name in `kernels`."""
    tables = read_policy_file(path).get("policy")
    want = sorted(kernels)
    if not isinstance(tables, dict) or sorted(tables) != want:
        got = sorted(tables) if isinstance(tables, dict) else tables
        raise ValueError(f"{path}: expected one [policy.<kernel>] table for each of {want}, got {got}")
    return tables


def file_groups(path: str | Path, doc: dict | None = None) -> dict[str, dict]:
    """The `[groups.<kernel>]` tables of a file: {kernel: {group: [argument names]}}."""
    return dict((read_policy_file(path) if doc is None else doc).get("groups", {}))


def _group(groups: Any, name: str) -> tuple[str, ...]:
    return tuple(groups.get(name, ()) if isinstance(groups, Mapping) else getattr(groups, name))


def resolve_names(value: Any, groups: Any, field: str) -> Any:
    """A name list of a table: a list stays as it is; a string of `+`/`-` terms becomes a tuple of
    argument names, its `@group` terms read from `groups` (a Case, or a mapping group -> names)."""
    if not isinstance(value, str):
        return value
    tokens = re.split(r"\s*([+-])\s*", value.strip())
    tokens = tokens[1:] if tokens[0] == "" else ["+"] + tokens  # a leading sign, or an implicit +
    names: list[str] = []
    for sign, term in zip(tokens[::2], tokens[1::2]):
        if term.startswith("@"):
            if term[1:] not in GROUPS:
                raise ValueError(f"policy field {field}: {term!r} is not one of {['@' + g for g in GROUPS]}")
            if groups is None:
                raise ValueError(f"policy field {field}: {term!r} refers to workload groups, which need a "
                                 "workload (jitlab.kernels.Case) or a [groups.<kernel>] table to resolve")
            terms = list(_group(groups, term[1:]))
        elif term.isidentifier():
            terms = [term]
        else:
            raise ValueError(f"policy field {field}: {term!r} is neither an argument name nor an @group in {value!r}")
        if sign == "+":
            names += [n for n in terms if n not in names]
        elif not set(terms) & set(names):
            raise ValueError(f"policy field {field}: '-{term}' removes nothing from {names}")
        else:
            names = [n for n in names if n not in terms]
    return tuple(names)


def uses_groups(table: dict) -> bool:
    return any(isinstance(v, str) and "@" in v for k, v in table.items() if k != "name")


def merged_fields(table: dict, kernel: str | None = None) -> dict:
    """A table's fields for one kernel: its common fields overridden by its `[policy.kernels.<kernel>]`."""
    fields_ = {k: v for k, v in table.items() if k != "kernels"}
    if kernel is not None:
        fields_.update(table.get("kernels", {}).get(kernel, {}))
    return fields_


def policy_of(table: dict, groups: Any = None, kernel: str | None = None) -> Policy:
    """The concrete Policy of one table (for `kernel`, with its overrides), its name lists resolved
    against `groups`. ValueError naming the policy on a bad field."""
    fields_ = merged_fields(table, kernel)
    name = fields_.get("name", "?")
    try:
        return Policy.from_dict({k: (v if k == "name" else resolve_names(v, groups, k)) for k, v in fields_.items()})
    except (TypeError, ValueError) as e:
        raise ValueError(f"policy {name!r}" + (f", kernel {kernel}" if kernel else "") + f": {e}") from None
