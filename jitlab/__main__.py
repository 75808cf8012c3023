"""`python -m jitlab ...`: the `jitlab` command (jitlab.cli)."""

from jitlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
