"""The only errors jitlab adds to Triton's: the ones a policy asks for."""

from __future__ import annotations


class LockedMiss(RuntimeError):
    """A static (locked) cache saw a launch that matches none of its prepared entries."""

    def __init__(self, kernel: str, scope: str, differences: list[str]):
        self.kernel, self.scope, self.differences = kernel, scope, differences
        detail = "\n  ".join(differences) if differences else "no entries were prepared before the lock"
        super().__init__(
            f"{kernel}: locked cache (scope {scope!r}) has no entry for this launch; "
            f"it differs from the cached entries in:\n  {detail}"
        )


class AssumptionViolated(RuntimeError):
    """verify=N found that a relaxed assumption of the policy no longer holds."""

    def __init__(self, kernel: str, argument: str, assumption: str, detail: str):
        self.kernel, self.argument, self.assumption = kernel, argument, assumption
        super().__init__(f"{kernel}: argument {argument!r} violates {assumption}: {detail}")
