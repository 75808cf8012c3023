"""Programs the any-program experiment runs: one ad-hoc script, or a manifest of unmodified files.

A manifest is a TOML file (`experiments/programs/triton_tutorials.toml`) naming files kept, unmodified
and not committed, in a folder beside it, with the sha256 and size of each, and how each is run:

    folder = "triton_tutorials"                  # relative to the manifest
    repository = "https://github.com/triton-lang/triton"
    tag = "v3.6.0"
    obtain = "git clone ... && cp ..."            # one line: how a user gets the files
    requires = ["matplotlib"]                    # modules the programs need (checked before running)
    [cut]                                        # optional: run = "script" programs start under
    points = 2                                   # jitlab.bench.short_bench (benchmarks cut to their
    rep_ms = 10                                  # first `points` x values, do_bench capped), unless
    warmup_ms = 5                                # the run asks for them whole (--full)
    [compare]                                    # the output rule (jitlab.bench.outputs.Rule)
    stop_at = '...'
    mask = ['...']
    [[program]]
    name = "vector-add"
    file = "01-vector-add.py"
    path = "python/tutorials/01-vector-add.py"   # in the repository
    commit = "..."                                # the repository commit the file was taken from
    sha256 = "..."
    size = 5644
    run = "script"                                # python FILE ARGS | "pytest": python -m pytest -q FILE ARGS
    args = []
    cut_args = []                                 # appended to args when the manifest's cut applies
                                                  # (pytest programs: a -k selection, say)
    quick = true                                  # part of a --quick run

`load()` reads it; `verify()` refuses (ManifestError, one line naming the file) when a file is
missing or differs from its recorded hash, so a run always measures the files the manifest names.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import short_bench
from .outputs import Rule
from .short_bench import Cut

RUNNERS = ("script", "pytest")
#: How `run = "pytest"` starts a file: quiet, no cache folder left behind, and warnings left to Python
#: (stderr) instead of pytest's summary on stdout, where jitlab's own warnings would read as a difference.
PYTEST_ARGS = ("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:warnings")


class ManifestError(ValueError):
    """A manifest that cannot be used, or a program file missing or modified (one line)."""


@dataclass(frozen=True)
class Program:
    name: str
    file: Path  # absolute
    args: tuple[str, ...] = ()
    run: str = "script"
    sha256: str | None = None  # None: an ad-hoc script, not checked
    size: int | None = None
    commit: str | None = None
    path: str | None = None  # in the repository
    quick: bool = False
    cut: Cut | None = None  # set: its benchmarks run cut (see with_cut)
    cut_args: tuple[str, ...] = ()  # appended to args when cut

    def argv(self) -> list[str]:
        """What follows the Python interpreter on the command line."""
        if self.run == "pytest":
            lead = list(PYTEST_ARGS)
        else:
            lead = [*short_bench.MODULE, *self.cut.argv()] if self.cut else []
        return [*lead, str(self.file), *self.args, *(self.cut_args if self.cut else ())]

    def cut_description(self) -> str:
        """How this program's benchmarks are cut, for tables and traces ("" when run whole)."""
        if not self.cut:
            return ""
        parts = ([self.cut.describe()] if self.run == "script" else []) + \
            ([f"extra arguments {' '.join(self.cut_args)}"] if self.cut_args else [])
        return "; ".join(parts) or "nothing to cut"


@dataclass(frozen=True)
class Manifest:
    path: Path
    folder: Path
    repository: str
    tag: str
    obtain: str
    rule: Rule
    programs: tuple[Program, ...] = field(default_factory=tuple)
    requires: tuple[str, ...] = ()  # modules the programs import beyond torch and triton
    cut: Cut | None = None  # the [cut] table: how the programs' benchmarks are cut by default

    def where_to_get(self) -> str:
        return (f"put Triton's tutorials ({self.repository} at tag {self.tag}) unmodified in {self.folder}: "
                f"{self.obtain} (see {self.path.parent / 'README.md'})")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def load(path: str | Path) -> Manifest:
    """The manifest at `path` (ManifestError, one line, when it is missing or malformed)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ManifestError(f"{p}: cannot read the manifest ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"{p}: not valid TOML ({e})") from None
    try:
        folder = (p.parent / doc["folder"]).resolve()
        cmp = doc.get("compare", {})
        rule = Rule(stop_at=cmp.get("stop_at"), mask=tuple(cmp.get("mask", ())))
        cut = None
        if "cut" in doc:
            c = doc["cut"]
            unknown = set(c) - {"points", "rep_ms", "warmup_ms"}
            if unknown:
                raise ManifestError(f"{p}: [cut] has {', '.join(sorted(unknown))}; valid: points, rep_ms, warmup_ms")
            try:
                cut = Cut(int(c.get("points", Cut.points)), float(c.get("rep_ms", Cut.rep_ms)),
                          float(c.get("warmup_ms", Cut.warmup_ms)))
            except (TypeError, ValueError) as e:
                raise ManifestError(f"{p}: [cut]: {e}") from None
        programs = []
        for t in doc["program"]:
            run = t.get("run", "script")
            if run not in RUNNERS:
                raise ManifestError(f"{p}: program {t.get('name')!r}: run = {run!r}; valid: {', '.join(RUNNERS)}")
            programs.append(Program(name=t["name"], file=folder / t["file"], args=tuple(t.get("args", ())),
                                    run=run, sha256=t["sha256"], size=int(t["size"]), commit=t.get("commit"),
                                    path=t.get("path"), quick=bool(t.get("quick", False)),
                                    cut_args=tuple(t.get("cut_args", ()))))
        return Manifest(p, folder, doc["repository"], doc["tag"], doc["obtain"], rule, tuple(programs),
                        tuple(doc.get("requires", ())), cut)
    except KeyError as e:
        raise ManifestError(f"{p}: missing key {e.args[0]!r} (see the docstring of jitlab/bench/programs.py)") from None
    except re.error as e:
        raise ManifestError(f"{p}: [compare] holds an invalid regular expression ({e})") from None


def verify(manifest: Manifest, programs: tuple[Program, ...] | None = None) -> tuple[Program, ...]:
    """`programs` (default: all of the manifest's) after checking each file's size and sha256 against
    the manifest. ManifestError, one line, names the first file that is missing or differs; with no
    file present at all it says where to get them."""
    import importlib.util

    programs = manifest.programs if programs is None else programs
    absent = [m for m in manifest.requires if importlib.util.find_spec(m) is None]
    if absent:
        raise ManifestError(f"the programs of {manifest.path.name} need {', '.join(absent)} "
                            f"(not importable here): pip install {' '.join(absent)}")
    if not any(pr.file.exists() for pr in manifest.programs):
        raise ManifestError(f"no program files in {manifest.folder}: {manifest.where_to_get()}")
    for pr in programs:
        if not pr.file.is_file():
            raise ManifestError(f"{pr.file}: missing; {manifest.where_to_get()}")
        size, digest = pr.file.stat().st_size, sha256_of(pr.file)
        if (pr.size is not None and size != pr.size) or digest != pr.sha256:
            raise ManifestError(f"{pr.file}: differs from the manifest (sha256 {digest[:12]}..., {size} bytes; "
                                f"expected {pr.sha256[:12]}..., {pr.size} bytes): use the unmodified file "
                                f"({manifest.tag}), or record a new one in {manifest.path}")
    return programs


def select(manifest: Manifest, names: str | None, quick: bool) -> tuple[Program, ...]:
    """The manifest's programs named in `names` (comma-separated), else its quick ones with `quick`, else all."""
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        known = {pr.name: pr for pr in manifest.programs}
        bad = [n for n in wanted if n not in known]
        if bad:
            raise ManifestError(f"unknown program(s) {', '.join(bad)}; the manifest has {', '.join(known)}")
        return tuple(known[n] for n in wanted)
    return tuple(pr for pr in manifest.programs if pr.quick) if quick else manifest.programs


def with_cut(manifest: Manifest, programs: tuple[Program, ...], full: bool) -> tuple[Program, ...]:
    """`programs` set to run under the manifest's [cut] (none with `full`, or when it has none)."""
    cut = None if full else manifest.cut
    return tuple(replace(pr, cut=cut) for pr in programs)


def script(path: str | Path, args: list[str] | tuple[str, ...] = ()) -> Program:
    """An ad-hoc program (`any_program.py SCRIPT ARGS`): run as `python SCRIPT ARGS`, not hash-checked."""
    p = Path(path).resolve()
    if not p.is_file():
        raise ManifestError(f"{path}: no such program file")
    return Program(name=p.stem, file=p, args=tuple(args))


def extract(manifest: Manifest, clone: str | Path) -> list[Path]:
    """Copy each program file out of a git clone of the manifest's repository, at its recorded commit
    (`git show <commit>:<path>`), into the manifest's folder; then verify them all."""
    import subprocess

    manifest.folder.mkdir(parents=True, exist_ok=True)
    written = []
    for pr in manifest.programs:
        if not pr.commit or not pr.path:
            raise ManifestError(f"{manifest.path}: program {pr.name!r} records no commit/path to extract")
        p = subprocess.run(["git", "-C", str(clone), "show", f"{pr.commit}:{pr.path}"], capture_output=True)
        if p.returncode != 0:
            why = (p.stderr.decode(errors="replace").strip().splitlines() or ["git failed"])[-1]
            raise ManifestError(f"{clone}: cannot extract {pr.path} at {pr.commit[:12]} ({why}); "
                                f"a full clone of {manifest.repository} is needed")
        pr.file.write_bytes(p.stdout)
        written.append(pr.file)
    verify(manifest)
    return written


def manifest_lines(manifest: Manifest) -> str:
    """The sha256/size lines of the files present now, in manifest form: what to paste after checking
    that the files are the unmodified ones of the tag (no hash is ever recorded automatically)."""
    out = []
    for pr in manifest.programs:
        if pr.file.is_file():
            out.append(f'# {pr.name}\nsha256 = "{sha256_of(pr.file)}"\nsize = {pr.file.stat().st_size}')
        else:
            out.append(f"# {pr.name}: {pr.file} missing")
    return "\n".join(out)
