"""JITLAB_VLLM_POLICY -> one jitlab Policy per vLLM kernel.

    safe | tuned | uniform-layers      a policy of the shipped policies.toml (package data)
    path/to/file.toml:name             a [[policy]] table of your own file (same format)
    off                                the plugin wraps nothing

The format is jitlab.policy's `[[policy]]` tables, plus per-kernel tables `[policy.kernels.<kernel>]`;
@group references resolve against the `[groups.<kernel>]` tables of the shipped file (a file of your
own may add or replace them). The file is read by jitlab.policy, the one reader of policy files.
"""

from __future__ import annotations

from pathlib import Path

from ..policy import Policy, file_groups, merged_fields, policy_of, read_policy_file, sweep_tables, uses_groups

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


def names(path: Path = SHIPPED) -> list[str]:
    return [t["name"] for t in sweep_tables(path)]


def table(path: Path, name: str) -> tuple[dict, dict]:
    """The [[policy]] table called `name` in `path`, and the argument groups per kernel."""
    try:
        doc = read_policy_file(path)
        tables = sweep_tables(path, doc)
    except ValueError as e:
        raise ValueError(f"JITLAB_VLLM_POLICY: {e}") from None
    groups = {**file_groups(SHIPPED), **file_groups(path, doc)}
    for t in tables:
        if t["name"] == name:
            return t, groups
    raise ValueError(f"JITLAB_VLLM_POLICY: no policy {name!r} in {path}; valid choices: {[t['name'] for t in tables]}")


def for_kernel(policy_table: dict, groups: dict, kernel: str) -> Policy:
    """The Policy of one kernel: the table's common fields, overridden by its [policy.kernels.<kernel>]."""
    if uses_groups(merged_fields(policy_table, kernel)) and kernel not in groups:
        return Policy(name=policy_table["name"])  # no groups for this kernel: its safe key
    try:
        return policy_of(policy_table, groups.get(kernel, {}), kernel)
    except ValueError as e:
        raise ValueError(f"JITLAB_VLLM_POLICY: {e}") from None
