"""Policy sweeps as data: TOML tables whose name lists may refer to a workload's argument groups.

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

References: @strides, @scales, @fixed_per_model, @varying_constexprs, @varying_ints, joined with '+'.
A new policy is a new table: no code.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ..kernels.case import Case
from ..policy import Policy

GROUPS = ("strides", "scales", "fixed_per_model", "varying_constexprs", "varying_ints")


def load_sweep(path: str | Path) -> list[dict]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    tables = data.get("policy")
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"{path}: expected one or more [[policy]] tables")
    for t in tables:
        if "name" not in t:
            raise ValueError(f"{path}: every [[policy]] needs a name, got {t}")
    return tables


def _resolve(value: Any, case: Case, field: str) -> Any:
    if not isinstance(value, str):
        return value
    names: list[str] = []
    for ref in value.split("+"):
        ref = ref.strip()
        if not ref.startswith("@") or ref[1:] not in GROUPS:
            raise ValueError(f"policy field {field}: {ref!r} is not one of {['@' + g for g in GROUPS]}")
        names += [n for n in getattr(case, ref[1:]) if n not in names]
    return tuple(names)


def policy_for(table: dict, case: Case) -> Policy:
    """The concrete Policy of a sweep entry for one workload (its @groups resolved)."""
    fields = {k: (v if k == "name" else _resolve(v, case, k)) for k, v in table.items()}
    return Policy.from_dict(fields)
