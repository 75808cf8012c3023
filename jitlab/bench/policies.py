"""Policies as data: TOML tables whose name lists may refer to a workload's argument groups.

The launch-overhead sweep (`experiments/launch_overhead.toml`) is a list of `[[policy]]` tables:

    [[policy]]
    name = "const-strides"
    assume_const = "@strides"            # resolved per workload from Case.strides
    [[policy]]
    name = "seed"
    check_keys = "@varying_constexprs"
    check_specialization = "@varying_ints"
    assume_const = "@fixed_per_model"
    cache_launch_grid = true
    static = true

The e2e decode loop's tuned policies (`experiments/e2e_decode.toml`) are one `[policy.<kernel>]`
table per kernel it launches.

A name list is a TOML array of argument names, or a string of terms joined by `+` (add) and `-`
(remove), left to right: a term is an argument name or a group reference, one of @strides, @scales,
@fixed_per_model, @varying_constexprs, @varying_ints. A removal that removes nothing is an error.
A new policy is a new table: no code.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Iterable

from ..kernels.case import Case
from ..policy import Policy

GROUPS = ("strides", "scales", "fixed_per_model", "varying_constexprs", "varying_ints")


def _load(path: str | Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"cannot read policies from {path}: {e}") from e


def load_sweep(path: str | Path) -> list[dict]:
    """The `[[policy]]` tables of a sweep file, in order."""
    tables = _load(path).get("policy")
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"{path}: expected one or more [[policy]] tables")
    for t in tables:
        if "name" not in t:
            raise ValueError(f"{path}: every [[policy]] needs a name, got {t}")
    return tables


def load_per_kernel(path: str | Path, kernels: Iterable[str]) -> dict[str, dict]:
    """The `[policy.<kernel>]` tables of a per-kernel file; exactly one per name in `kernels`."""
    tables = _load(path).get("policy")
    want = list(kernels)
    if not isinstance(tables, dict) or sorted(tables) != sorted(want):
        got = sorted(tables) if isinstance(tables, dict) else tables
        raise ValueError(f"{path}: expected one [policy.<kernel>] table for each of {sorted(want)}, got {got}")
    return tables


def _resolve(value: Any, case: Case, field: str) -> Any:
    if not isinstance(value, str):
        return value
    tokens = re.split(r"\s*([+-])\s*", value.strip())
    if tokens[0] == "":  # a leading sign
        tokens = tokens[1:]
    else:
        tokens = ["+"] + tokens
    names: list[str] = []
    for sign, term in zip(tokens[::2], tokens[1::2]):
        if term.startswith("@"):
            if term[1:] not in GROUPS:
                raise ValueError(f"policy field {field}: {term!r} is not one of {['@' + g for g in GROUPS]}")
            terms = list(getattr(case, term[1:]))
        elif term.isidentifier():
            terms = [term]
        else:
            raise ValueError(f"policy field {field}: {term!r} is neither an argument name nor an @group in {value!r}")
        if sign == "+":
            names += [n for n in terms if n not in names]
        elif not set(terms) & set(names):
            raise ValueError(f"policy field {field}: '-{term}' removes nothing from {names} ({case.name})")
        else:
            names = [n for n in names if n not in terms]
    return tuple(names)


def policy_for(table: dict, case: Case) -> Policy:
    """The concrete Policy of a table for one workload or kernel (its name lists resolved)."""
    fields = {k: (v if k == "name" else _resolve(v, case, k)) for k, v in table.items()}
    return Policy.from_dict(fields)
