"""The command line's own failure (its own module, so subcommands raise it without importing the package
that imports them: no import circle)."""

from __future__ import annotations


class CliError(Exception):
    """A failure of the command line itself: one line, exit 2."""
