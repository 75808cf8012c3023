"""Issue 21, items 6-8 (trace files and exports): gRPC's 4 MiB limit, symlinked trace paths, truncated lines."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from jitlab.telemetry import chrome, replay
from jitlab.telemetry.load import load_traces


def span_doc(i: int) -> dict:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "jitlab"}}]},
        "scopeSpans": [{"scope": {"name": "jitlab"}, "spans": [{
            "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": f"{i + 1:016x}", "name": "jitlab.launch",
            "kind": 1, "startTimeUnixNano": str(10**18 + 1000 * i), "endTimeUnixNano": str(10**18 + 1000 * i + 500),
            "attributes": [{"key": "jitlab.kernel", "value": {"stringValue": "k"}},
                           {"key": "jitlab.cache.result", "value": {"stringValue": "hit"}}]}]}]}]}


@pytest.fixture
def truncated(tmp_path) -> Path:
    """11 good lines, then line 12 cut short with no newline (what a full disk leaves)."""
    f = tmp_path / "run.jsonl"
    lines = [json.dumps(span_doc(i)) for i in range(12)]
    f.write_text("\n".join(lines[:11]) + "\n" + lines[11][:200])
    return f


# -- item 8: every reader loads the good lines and names the bad one ---------------------------------------------
def test_load_traces_keeps_good_lines_and_names_the_bad_one(truncated):
    with pytest.warns(RuntimeWarning, match=r"run\.jsonl:12: not JSON .*truncated"):
        df = load_traces(truncated)
    assert len(df) == 11 and df.attrs["bad_lines"][0].startswith(f"{truncated}:12:")


def test_load_traces_names_non_utf8_and_foreign_lines(tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_bytes(json.dumps(span_doc(0)).encode() + b"\n\xff\xfe\n" + b'{"a": 1}\n' + json.dumps(span_doc(1)).encode() + b"\n")
    with pytest.warns(RuntimeWarning) as w:
        df = load_traces(f)
    assert len(df) == 2
    assert [str(m.message).split(": ", 2)[1] for m in w] == [f"{f}:2", f"{f}:3"]
    assert "not UTF-8" in str(w[0].message) and "no resourceSpans" in str(w[1].message)


def test_export_keeps_good_lines_and_names_the_bad_one(truncated, tmp_path, capsys):
    out = tmp_path / "chrome.json"
    assert chrome.main([str(truncated), "--chrome", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{truncated}:12: not JSON" in err and len(err.strip().splitlines()) == 1
    events = json.loads(out.read_text())["traceEvents"]
    assert sum(e.get("cat") == "jitlab.launch" for e in events) == 11


def test_export_of_only_bad_lines_is_one_line_exit_2(tmp_path, capsys):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"resourceSpans": [')
    assert chrome.main([str(f), "--chrome", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"jitlab-export: {f}:1: not JSON") and "\n" not in err


@contextlib.contextmanager
def http_sink():
    got = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", got
    finally:
        srv.shutdown()


def test_replay_sends_good_lines_and_names_the_bad_one(truncated, capsys):
    with http_sink() as (url, got):
        assert replay.main([str(truncated), "--endpoint", url, "-q"]) == replay.EXIT_INVALID
    assert len(got) == 11
    err = capsys.readouterr().err.strip()
    assert f"{truncated}:12: not JSON" in err and "\n" not in err


def test_one_line_reader():
    """load_traces, jitlab-export and jitlab-replay read lines through telemetry.load.read_documents only."""
    src = {m: Path(m.__file__).read_text() for m in (chrome, replay)}
    assert all("open(" not in s or "read_documents" in s for s in src.values())
    assert "json.loads(line)" not in src[replay]


def test_report_keeps_good_lines_and_names_the_bad_one(truncated, capsys):
    from jitlab.bench import report

    df = report.load(str(truncated))
    assert len(df) == 11
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"warning: {truncated}:12: not JSON") and "\n" not in err
