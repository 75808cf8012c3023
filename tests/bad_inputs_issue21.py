# Run: PYTHONPATH=$PWD python tests/bad_inputs_issue21.py [-v]   (CPU, fake adapter; prints the table of issue 21's closing note)
"""Bad inputs of issue 21's classes (items 6-13) plus others, tried on this branch: each row is
(class, input, verdict, what happened). Verdicts: clear (one line naming what is wrong / Triton's own
error / the documented behaviour), wrong (a wrong result), crash (crash or hang)."""
import dataclasses, json, os, subprocess, sys, tempfile, threading, time, warnings
from pathlib import Path
import numpy as np, torch, pytest
from tests.unit.conftest import FakeAdapter
from jitlab._triton import adapter as adapter_mod, native
from jitlab import jitcache, settings, Policy
import jitlab
from tests.unit.kernels_for_tests import add_one
from tests.unit.test_hardening import triton_parse_options

rows = []
def row(cls, inp, verdict, what):
    rows.append((cls, inp, verdict, what.splitlines()[0][:110] if what else ""))

fake = FakeAdapter()
compile_ = fake.compile
def compile(fn, grid, args, kwargs):
    triton_parse_options({k: v for k, v in kwargs.items() if k not in fn.arg_names})
    return compile_(fn, grid, args, kwargs)
fake.compile = compile
adapter_mod._ADAPTER, adapter_mod._REASON = fake, None
native.DISPATCH.get(wait=True)
x, y = torch.empty(64), torch.empty(64)

def one_line(e): return "\n" not in str(e).strip()

# -- launch options (item 9): compare with Triton's parse_options on a fresh key, both launchers
for launcher in ("python", "auto"):
    settings.SETTINGS = dataclasses.replace(settings.SETTINGS, launcher=launcher)
    for opt in [dict(num_warps=4.0), dict(num_warps=True), dict(num_warps=np.int64(4)), dict(num_stages=2.0),
                dict(num_warps="4"), dict(num_warps=[4]), dict(num_warps=None), dict(num_warps=3), dict(num_warps=-4),
                dict(num_stages=np.float32(2)), dict(bogus_option=1)]:
        k = jitcache(add_one)
        base = {list(opt)[0]: 4 if "warps" in list(opt)[0] else 2} if "bogus" not in str(opt) else {}
        k[(1,)](x, y, 64, **base); k[(1,)](x, y, 64, **base)
        try:
            triton_parse_options(opt); triton = None
        except Exception as e:
            triton = type(e)
        n = len(fake.compiles)
        try:
            for _ in range(2):
                k[(1,)](x, y, 64, **opt)
            got = None
        except Exception as e:
            got = type(e)
        compiled = len(fake.compiles) > n or k.counters().get("fallback", 0) > 0
        if triton is not None:
            # a value the key cannot hold goes to Triton's run() (which raises its own error; the fake's does not parse options)
            ok = got is triton or (got is None and k.counters().get("fallback", 0) > 0)
            row("launch options", f"{launcher}: {opt}", "clear" if ok else "wrong", f"Triton raises {triton.__name__}; jitlab raises {got and got.__name__}")
        else:
            ok = got is None and compiled
            row("launch options", f"{launcher}: {opt}", "clear" if ok else "wrong", f"Triton compiles its own; jitlab {'compiled its own entry / went to Triton' if compiled else 'REUSED'}")
settings.SETTINGS = dataclasses.replace(settings.SETTINGS, launcher="auto")

# -- settings
for var, val in [("JITLAB_MAX_ENTRIES", "0"), ("JITLAB_MAX_ENTRIES", "-3"), ("JITLAB_MAX_ENTRIES", "abc"),
                 ("JITLAB_MAX_ENTRIES", "1e3"), ("JITLAB_MAX_SCOPES", "0"), ("JITLAB_MAX_SCOPES", "x"),
                 ("JITLAB_TRACE_FOLLOW_SYMLINKS", "maybe")]:
    os.environ[var] = val
    s = settings.Settings()
    try:
        if "FOLLOW" in var:
            s.trace_follow_symlinks
        else:
            settings.SETTINGS = s
            n = len(fake.compiles)
            jitcache(add_one)
        row("settings", f"{var}={val}", "wrong", "accepted")
    except settings.SettingError as e:
        row("settings", f"{var}={val}", "clear" if one_line(e) and var in str(e) and len(fake.compiles) == n else "wrong", str(e))
    del os.environ[var]
settings.SETTINGS = settings.Settings()

# -- policy files
tmp = Path(tempfile.mkdtemp())
cases = {"duplicate names": b'[[policy]]\nname="a"\n[[policy]]\nname="a"\n', "invalid TOML": b'[[policy]\nname="a"\n',
         "non-UTF-8": b'[[policy]]\nname="\xff"\n', "empty file": b"", "no name": b"[[policy]]\nverify=1\n",
         "unknown field": b'[[policy]]\nname="a"\nfoo=1\n', "flag as int": b'[[policy]]\nname="a"\ncache_launch_grid=1\n',
         "name missing from file": b'[[policy]]\nname="b"\n', "verify negative": b'[[policy]]\nname="a"\nverify=-1\n',
         "list of ints": b'[[policy]]\nname="a"\ncheck_keys=[1]\n', "unknown arg": b'[[policy]]\nname="a"\ncheck_keys=["nope"]\n'}
for what, content in cases.items():
    f = tmp / f"{what.replace(' ', '_')}.toml"
    f.write_bytes(content)
    try:
        jitcache(policy=f"{f}:a")(add_one)
        row("policy file", what, "wrong", "accepted")
    except ValueError as e:
        row("policy file", what, "clear" if one_line(e) and (str(f) in str(e) or "jitcache(add_one)" in str(e)) else "wrong", str(e))
for what, spec in [("missing file", f"{tmp}/none.toml:a"), ("directory", f"{tmp}:a"), ("no .toml", "x:a"), ("not str", 3)]:
    try:
        jitcache(policy=spec)(add_one); row("policy file", what, "wrong", "accepted")
    except (ValueError, OSError) as e:
        row("policy file", what, "clear" if one_line(e) else "wrong", f"{type(e).__name__}: {e}")

# -- keyword relaxations named
for kw in [dict(check_keys=["BLOCK"]), dict(assume_const=["n"]), dict(cache_launch_grid=True), dict(check_specialization=[])]:
    k = jitcache(**kw)(add_one)
    row("policy name", str(kw), "clear" if k.policy.name != "safe" else "wrong", repr(k))

# -- grids
def grids():
    calls = []
    def once(m):
        calls.append(1)
        if len(calls) == 1: raise ValueError("transient")
        return (1,)
    def always(m): raise ValueError("grid")
    return [("raises once at prepare (cache_launch_grid)", once, True), ("always raises at prepare", always, True),
            ("raises on a hit", always, False), ("returns an int", lambda m: 5, False), ("4 dims", lambda m: (1, 1, 1, 1), False),
            ("float dims", lambda m: (1.0,), False), ("returns None", lambda m: None, False)]
for launcher in ("python", "auto"):
    settings.SETTINGS = dataclasses.replace(settings.SETTINGS, launcher=launcher)
    for what, g, cached in grids():
        k = jitcache(cache_launch_grid=cached)(add_one)
        if not cached:
            k[(1,)](x, y, 64)
        outcomes = []
        for _ in range(3):
            try:
                k[g](x, y, 64); outcomes.append("ok")
            except Exception as e:
                outcomes.append(type(e).__name__)
        # Triton: calls the grid once per launch, after its cache lookup; errors are the grid's / len()'s
        tri = []
        for _ in range(3):
            try:
                gg = g({"x_ptr": x, "out_ptr": y, "n": 64, "BLOCK": 128}); len(gg); gg[0]
                tri.append("ok")
            except Exception as e:
                tri.append(type(e).__name__)
        c = k.counters()
        same = outcomes == tri or (what.startswith("raises once") and outcomes == ["ValueError", "ok", "ok"])
        row("grid", f"{launcher}: {what}", "clear" if same and not c.get("fallback") else "wrong",
            f"jitlab {outcomes}, Triton {tri}, counters hit={c['hit']} miss={c['miss']} fallback={c['fallback']} prepare_failed={c['prepare_failed']}")

# -- scopes and growth
settings.SETTINGS = dataclasses.replace(settings.SETTINGS, launcher="auto", max_entries=4, max_scopes=3)
k = jitcache(add_one)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    for b in (16, 32, 64, 128, 256, 512):
        k[(1,)](x, y, 64, BLOCK=b)
    for i in range(5):
        with jitlab.scope(f"req{i}"):
            k[(1,)](x, y, 64)
c = k.counters()
row("growth", "6 keys, JITLAB_MAX_ENTRIES=4", "clear" if c["entries"] == 4 and c["evict"] == 2 else "wrong", f"entries={c['entries']} evict={c['evict']}")
row("growth", "5 scopes, JITLAB_MAX_SCOPES=3", "clear" if any("JITLAB_MAX_SCOPES" in str(m.message) for m in w) else "wrong", "warned")
settings.SETTINGS = settings.Settings()
for name in ("", 3, None):
    try:
        with jitlab.scope(name): pass
        row("scope", repr(name), "wrong", "accepted")
    except ValueError as e:
        row("scope", f"scope({name!r})", "clear" if one_line(e) else "wrong", str(e))

# -- trace paths
from jitlab.telemetry import export
d = Path(tempfile.mkdtemp())
(d / "t.txt").write_text("x\n"); (d / "sub").mkdir()
for what, make in [("symlink to a file", lambda p: p.symlink_to(d / "t.txt")), ("dangling symlink", lambda p: p.symlink_to(d / "nothere")),
                   ("symlink to a directory", lambda p: p.symlink_to(d / "sub")), ("a directory", lambda p: p.mkdir()),
                   ("under a file", None)]:
    p = d / f"{what.replace(' ', '_')}.jsonl"
    if make: make(p)
    else: p = d / "t.txt" / "x.jsonl"
    try:
        export.SpanSink.standard(p, otlp=False, strict=True)
        row("trace path", what, "wrong", "accepted")
    except export.TraceTargetError as e:
        ok = one_line(e) and (d / "t.txt").read_text() == "x\n" and not (d / "nothere").exists()
        row("trace path", what, "clear" if ok else "wrong", str(e))

# -- trace files to the readers
from jitlab.telemetry import chrome, replay, load
from jitlab.bench import report
from tests.unit.test_trace_files import span_doc
good = json.dumps(span_doc(0))
files = {"truncated last line": good + "\n" + good[:100], "non-UTF-8 line": None, "foreign JSON line": good + '\n{"a":1}\n',
         "bad ids (not OTLP)": json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 5}]}]}]}) + "\n" + good + "\n",
         "empty": "", "only a bad line": "{", "binary": None}
for what, text in files.items():
    f = d / f"{what.replace(' ', '_')}.jsonl"
    if what == "non-UTF-8 line": f.write_bytes(good.encode() + b"\n\xff\xfe\n")
    elif what == "binary": f.write_bytes(b"\xff\x00" * 50)
    else: f.write_text(text)
    # load_traces
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            df = load.load_traces(f); res = f"{len(df)} rows, {len(w)} warnings: {w[0].message if w else ''}"
            line = ":1:" if what.startswith("bad ids") else ":2:"
            ok = (len(df) == 1 and any(line in str(m.message) for m in w)) or (len(df) == 0 and (what in ("empty",) or w))
        except Exception as e:
            res, ok = f"{type(e).__name__}: {e}", False
    row("trace file: load_traces", what, "clear" if ok else "wrong", res)
    for tool, fn in [("jitlab-export", lambda: chrome.main([str(f), "--chrome", str(d / "o.json")])),
                     ("jitlab-report", lambda: report.main([str(f)]))]:
        import io, contextlib
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = fn()
            except SystemExit as e:
                rc = e.code
            except Exception as e:
                rc = f"{type(e).__name__}: {e}"
        e = err.getvalue().strip()
        ok = isinstance(rc, int) and (rc == 2 and len(e.splitlines()) == 1 or rc == 0 and ((":1:" if what.startswith("bad ids") else ":2:") in e or not e))
        row(f"trace file: {tool}", what, "clear" if ok else "wrong", f"exit {rc}: {e}")

# -- long attributes (item 6)
from jitlab.telemetry import spans as S
from tests.unit.test_trace_files import launch_spans
sp = launch_spans(2048, "k" * 2500)
sizes = [sum(export.span_bytes(s) for s in b) for _, b in export.SpanSink()._batches(sp)]
row("long attributes", "2,500-char kernel name x 2,048 spans", "clear" if max(sizes) < 4 << 20 else "wrong", f"{len(sizes)} batches, largest estimated {max(sizes)} B")
row("long attributes", "10 MB run attribute", "clear" if len(S.clean_attributes({"a": "x" * 10**7})["a"]) <= S.MAX_FRAME_ATTRIBUTE_CHARS else "wrong", "capped with a marker")

import collections
print("| class | tried | clear error | wrong result | crash or hang |\n|---|---|---|---|---|")
by = collections.defaultdict(collections.Counter)
for c, _, v, _ in rows: by[c][v] += 1
for c, n in by.items(): print(f"| {c} | {sum(n.values())} | {n['clear']} | {n['wrong']} | {n['crash']} |")
tot = collections.Counter(v for _, _, v, _ in rows)
print(f"| all | {len(rows)} | {tot['clear']} | {tot['wrong']} | {tot['crash']} |")
print()
for r in rows:
    if r[2] != "clear": print("NOT CLEAR:", r)
if "-v" in sys.argv:
    for r in rows: print(r)
