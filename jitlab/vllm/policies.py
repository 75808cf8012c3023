"""JITLAB_VLLM_POLICY -> one jitlab Policy per vLLM kernel.

    safe | tuned | uniform-layers      a policy of the shipped policies.toml (package data)
    path/to/file.toml:name             a [[policy]] table of your own file (same format)
    off                                the plugin wraps nothing

The format is experiments/launch_overhead.toml's (jitlab.bench.policies), plus per-kernel tables
`[policy.kernels.<kernel>]`; @group references resolve against the `[groups.<kernel>]` tables of
the shipped file (a file of your own may add or replace them).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import SimpleNamespace

from ..policy import Policy

SHIPPED = Path(__file__).with_name("policies.toml")
OFF = "off"


def parse(spec: str) -> tuple[Path, str] | None:
    """(TOML file, policy name), or None for "off". ValueError (one line) on a malformed value."""
    spec = spec.strip() or "safe"
    if spec == OFF:
        return None
    path, sep, name = spec.rpartition(":")
    if not sep:
        return SHIPPED, spec
    if not path.endswith(".toml") or not name:
        raise ValueError(f"JITLAB_VLLM_POLICY must be 'off', a policy name or 'file.toml:name', got {spec!r}")
    return Path(path), name


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"JITLAB_VLLM_POLICY: cannot read {path}: {e}") from None


def names(path: Path = SHIPPED) -> list[str]:
    return [t.get("name", "?") for t in _read(path).get("policy", [])]


def table(path: Path, name: str) -> tuple[dict, dict]:
    """The [[policy]] table called `name` in `path`, and the argument groups per kernel."""
    from ..bench.policies import load_sweep

    try:
        tables = load_sweep(path)
    except OSError as e:
        raise ValueError(f"JITLAB_VLLM_POLICY: cannot read {path}: {e}") from None
    groups = {**_read(SHIPPED).get("groups", {}), **_read(path).get("groups", {})}
    for t in tables:
        if t["name"] == name:
            return t, groups
    raise ValueError(f"JITLAB_VLLM_POLICY: no policy {name!r} in {path}; valid choices: {[t['name'] for t in tables]}")


def for_kernel(policy_table: dict, groups: dict, kernel: str) -> Policy:
    """The Policy of one kernel: the table's common fields, overridden by its [policy.kernels.<kernel>]."""
    from ..bench.policies import GROUPS, policy_for

    fields = {k: v for k, v in policy_table.items() if k != "kernels"}
    fields.update(policy_table.get("kernels", {}).get(kernel, {}))
    uses_groups = any(isinstance(v, str) and v.startswith("@") for k, v in fields.items() if k != "name")
    if uses_groups and kernel not in groups:
        return Policy(name=fields["name"])  # no groups for this kernel: its safe key
    case = SimpleNamespace(**{g: tuple(groups.get(kernel, {}).get(g, ())) for g in GROUPS})
    try:
        return policy_for(fields, case)
    except TypeError as e:
        raise ValueError(f"JITLAB_VLLM_POLICY: policy {fields['name']!r}, kernel {kernel}: {e}") from None
