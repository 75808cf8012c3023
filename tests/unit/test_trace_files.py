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


# -- item 6: gRPC's 4 MiB message limit ---------------------------------------------------------------------------
def launch_spans(n: int, kernel: str):
    """`n` jitlab.launch spans as the span builder makes them, for a kernel named `kernel`."""
    from opentelemetry.sdk.resources import Resource

    from jitlab.telemetry import spans as S

    provider, collector = S.collecting_provider(Resource({"service.name": "jitlab"}))
    b = S.SpanBuilder(provider.get_tracer(S.SCOPE_NAME), 0)
    root = S.Frame("run", S.RUN_SPAN, 0, 1)
    from jitlab import record_layout as L

    b.add_launches([L.full(kernel, "global", "safe", 0, 3, 10 + i, 11 + i, 12 + i, thread=1) for i in range(n)],
                   [root], root)
    b.end_frame(root, 10 + n)
    return collector.take()


def test_long_attribute_values_are_capped_with_a_marker():
    from jitlab.telemetry import spans as S

    n = S.MAX_ATTRIBUTE_CHARS + 5000
    got = launch_spans(1, "k" * n)[0]
    name = got.attributes[S.A_KERNEL]
    assert len(name) <= S.MAX_ATTRIBUTE_CHARS and name.startswith("kkk")
    assert name.endswith(f"...[+{n - S.MAX_ATTRIBUTE_CHARS + 24} chars]")
    assert S.clean_attributes({"config": "x" * 10**7})["config"].endswith("chars]")
    # a run's summary rows (JSON the notebooks parse) stay whole up to the frame limit
    results = "[" + ",".join(['{"variant": "jitcache:safe", "median_us": 5.0}'] * 2000) + "]"
    assert len(results) > S.MAX_ATTRIBUTE_CHARS and S.clean_attributes({"jitlab.results": results})["jitlab.results"] == results


@pytest.mark.parametrize("cap", [True, False])
def test_batches_split_under_grpc_message_limit(cap):
    """2,048 spans of a 2,500-character kernel name (the issue's case: 5.76 MB in one batch), or 1,024 of a
    100,000-character one (capped), reach a real gRPC OTLP receiver (4 MiB limit): batches are split by size."""
    import grpc
    from concurrent import futures

    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    from jitlab.telemetry import export, spans as S

    from ..otlp_collector import Receiver
    from ..support import free_port

    spans = launch_spans(1024, "k" * 100_000) if cap else launch_spans(2048, "k" * 2500)
    recv = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(recv, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        sink = export.SpanSink([export.Target("grpc", f"http://127.0.0.1:{port}",
                                              export.make_otlp_exporter(f"http://127.0.0.1:{port}", "grpc", 10))])
        sink.export(spans)
        sink.shutdown()
    finally:
        server.stop(0)
    t = sink.targets[0]
    assert (t.sent, t.unsent, t.failed) == (len(spans), 0, False), t.error
    assert len(recv.spans) == len(spans)


# -- item 7: trace paths that are symbolic links ------------------------------------------------------------------
@pytest.fixture
def follow(monkeypatch):
    import dataclasses

    from jitlab import settings

    def set_follow(on: bool):
        monkeypatch.setattr(settings, "SETTINGS", dataclasses.replace(settings.SETTINGS, trace_follow_symlinks=on))

    set_follow(False)
    return set_follow


@pytest.mark.parametrize("dangling", [False, True])
def test_symlinked_trace_path_is_refused_in_one_line(tmp_path, follow, dangling):
    from jitlab.telemetry import export

    target = tmp_path / "elsewhere.txt"
    if not dangling:
        target.write_text("precious\n")
    link = tmp_path / "trace.jsonl"
    link.symlink_to(target)
    with pytest.raises(export.TraceTargetError, match="symbolic link") as e:
        export.SpanSink.standard(link, otlp=False, strict=True)
    assert "\n" not in str(e.value) and "JITLAB_TRACE_FOLLOW_SYMLINKS" in str(e.value)
    assert target.exists() != dangling and (dangling or target.read_text() == "precious\n")


def test_symlinked_trace_path_in_a_run_raises_and_a_session_warns(tmp_path, follow, caplog, clean_otel_env):
    from jitlab import telemetry
    from jitlab.telemetry import export

    link = tmp_path / "t.jsonl"
    link.symlink_to(tmp_path / "target.jsonl")
    with pytest.raises(export.TraceTargetError, match="symbolic link"):
        with telemetry.Run(experiment="x", level="full", trace_file=link, otlp=False):
            pass
    with caplog.at_level("WARNING", logger="jitlab.telemetry"):
        sink = export.SpanSink.standard(link, otlp=False)
    assert sink.targets == [] and any("symbolic link" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "target.jsonl").exists()


def test_symlink_put_in_place_after_the_check_is_not_followed(tmp_path, follow):
    from jitlab.telemetry import export

    path, target = tmp_path / "t.jsonl", tmp_path / "target.txt"
    sink = export.SpanSink.standard(path, otlp=False, strict=True)  # checked: a plain new file
    target.write_text("precious\n")
    path.symlink_to(target)
    sink.export(launch_spans(3, "k"))
    t = sink.targets[0]
    assert t.failed and "symbolic link" in t.error and target.read_text() == "precious\n"


def test_symlinked_trace_path_when_the_user_opts_in(tmp_path, follow):
    from jitlab.telemetry import export

    follow(True)
    target = tmp_path / "real.jsonl"
    link = tmp_path / "t.jsonl"
    link.symlink_to(target)
    sink = export.SpanSink.standard(link, otlp=False, strict=True)
    sink.export(launch_spans(3, "k"))
    sink.shutdown()
    assert sink.targets[0].sent == 4 and len(load_traces(target)) == 4


def test_new_trace_file_is_created_and_appended(tmp_path, follow):
    from jitlab.telemetry import export

    path = tmp_path / "d" / "t.jsonl"
    for _ in range(2):
        sink = export.SpanSink.standard(path, otlp=False, strict=True)
        sink.export(launch_spans(2, "k"))
        sink.shutdown()
    assert len(load_traces(path)) == 6 and not path.is_symlink()
