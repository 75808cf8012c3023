"""`jitlab-replay`: send OTLP JSON-lines trace files to a running Jaeger or OpenTelemetry collector.

    jitlab-replay traces/launch_overhead-20261129T101500Z-3fa9c1.jsonl
    jitlab-replay 'traces/*.jsonl' --endpoint http://jaeger-host:4318
    jitlab-replay traces/x.jsonl --protobuf        # convert each line to OTLP protobuf first

Each line is POSTed to `<endpoint>/v1/traces` over OTLP/HTTP, as `application/json` (the line
as written, which Jaeger and collectors accept) or, with `--protobuf`, as
`application/x-protobuf` (parsed into `ExportTraceServiceRequest` by `google.protobuf`).

Endpoint: `--endpoint`; else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as-is) or
`OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`) when `OTEL_EXPORTER_OTLP_PROTOCOL` is an
`http/...` protocol; else `http://localhost:4318`. A base URL without a path gets `/v1/traces`.

Exit status: 0 all sent; 1 bad arguments or no such file; 2 a line is not valid OTLP JSON;
3 the collector cannot be reached; 4 the collector rejected a request.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from urllib.parse import urlparse

DEFAULT_ENDPOINT = "http://localhost:4318"
EXIT_OK, EXIT_USAGE, EXIT_INVALID, EXIT_UNREACHABLE, EXIT_REJECTED = 0, 1, 2, 3, 4


#: The Jaeger image the docs and this command's hints name (one place; docs/TRACING.md says the same).
JAEGER_IMAGE = "jaegertracing/jaeger:2.0.0"

def traces_url(endpoint: str | None = None, environ=None) -> str:
    env = os.environ if environ is None else environ
    if not endpoint:
        proto = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "").lower()
        if proto.startswith("http"):
            if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
                return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
            endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        endpoint = endpoint or DEFAULT_ENDPOINT
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    if urlparse(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def _count_spans(doc: dict) -> int:
    return sum(len(ss.get("spans", ())) for rs in doc.get("resourceSpans", ()) for ss in rs.get("scopeSpans", ()))


class ReplayError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def replay(
    paths,
    endpoint: str | None = None,
    protobuf: bool = False,
    timeout: float = 10.0,
    progress=None,
) -> dict:
    """Send every line of the files; returns {"url", "requests", "spans", "rejected_spans", "seconds"}.
    Raises ReplayError (with an exit code) on the first failure. `progress(lines_done, lines_total,
    spans_done)` is called after each request."""
    import requests

    from .load import BadLine, _expand, otlp_json_to_proto_dict, read_documents

    url = traces_url(endpoint)
    files = _expand(paths)
    if not files:
        raise ReplayError(EXIT_USAGE, f"no trace files match {paths!r}")
    lines, bad = [], []
    for f in files:
        if not f.is_file():
            raise ReplayError(EXIT_USAGE, f"no such trace file: {f}")
        lines.extend((f, n, line, doc) for n, line, doc in read_documents(f, bad))  # bad lines: named at the end
    total = len(lines)
    sent_spans = rejected = 0
    t0 = time.perf_counter()
    with requests.Session() as session:
        for i, (f, n, line, doc) in enumerate(lines, 1):
            if protobuf:
                from google.protobuf import json_format
                from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

                msg = trace_service_pb2.ExportTraceServiceRequest()
                try:
                    json_format.ParseDict(otlp_json_to_proto_dict(doc), msg)
                except (json_format.ParseError, ValueError) as e:
                    bad.append(BadLine(str(f), n, f"not valid OTLP: {(str(e).splitlines() or [''])[0][:160]}"))
                    continue
                body, ctype = msg.SerializeToString(), "application/x-protobuf"
            else:
                body, ctype = line.strip().encode("utf-8"), "application/json"
            try:
                r = session.post(url, data=body, headers={"Content-Type": ctype}, timeout=timeout)
            except requests.exceptions.RequestException as e:
                raise ReplayError(
                    EXIT_UNREACHABLE,
                    f"cannot reach the collector at {url}: {type(e).__name__}: {e}\n"
                    "Is Jaeger / an OpenTelemetry collector listening for OTLP/HTTP there? e.g.\n"
                    f"  docker run --rm -p 16686:16686 -p 4317:4317 -p 4318:4318 {JAEGER_IMAGE}\n"
                    "or pass --endpoint http://HOST:4318",
                ) from None
            if not 200 <= r.status_code < 300:
                raise ReplayError(
                    EXIT_REJECTED, f"{f}:{n}: the collector at {url} answered HTTP {r.status_code}: {r.text[:500]}"
                )
            rejected += _rejected(r)
            sent_spans += _count_spans(doc)
            if progress is not None:
                progress(i, total, sent_spans)
    if bad:  # the good lines were sent; the first bad one is named (exit 2)
        more = f" (and {len(bad) - 1} more bad lines)" if len(bad) > 1 else ""
        raise ReplayError(EXIT_INVALID, f"{bad[0]}{more}; the other lines were sent ({sent_spans} spans)")
    return {
        "url": url,
        "requests": total,
        "spans": sent_spans,
        "rejected_spans": rejected,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _rejected(r) -> int:
    """`partialSuccess.rejectedSpans` of an OTLP/HTTP response (JSON or protobuf), 0 if absent."""
    try:
        ctype = r.headers.get("Content-Type", "")
        if "json" in ctype:
            return int((r.json().get("partialSuccess") or {}).get("rejectedSpans", 0))
        if "protobuf" in ctype and r.content:
            from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

            resp = trace_service_pb2.ExportTraceServiceResponse()
            resp.ParseFromString(r.content)
            return int(resp.partial_success.rejected_spans)
    except Exception:
        pass
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="jitlab-replay", description="Send OTLP JSON-lines trace files to a collector over OTLP/HTTP."
    )
    ap.add_argument("files", nargs="+", help="trace files, globs (quoted) or directories of *.jsonl")
    ap.add_argument("--endpoint", help=f"collector OTLP/HTTP base URL or full /v1/traces URL (default {DEFAULT_ENDPOINT})")
    ap.add_argument("--protobuf", action="store_true", help="send application/x-protobuf instead of the JSON lines")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    args = ap.parse_args(argv)

    tty = sys.stderr.isatty()
    last = [0.0]

    def progress(done, total, spans):
        if args.quiet:
            return
        now = time.monotonic()
        if done == total or now - last[0] > (0.2 if tty else 2.0):
            last[0] = now
            msg = f"replayed {done}/{total} lines, {spans} spans"
            print(("\r" + msg) if tty else msg, end="\n" if (done == total or not tty) else "", file=sys.stderr, flush=True)

    try:
        res = replay(args.files, args.endpoint, args.protobuf, args.timeout, progress)
    except ReplayError as e:
        if tty and not args.quiet:
            print(file=sys.stderr)
        print(f"jitlab-replay: error: {e}", file=sys.stderr)
        return e.code
    extra = f", {res['rejected_spans']} rejected by the collector" if res["rejected_spans"] else ""
    print(f"jitlab-replay: sent {res['spans']} spans in {res['requests']} requests to {res['url']} in {res['seconds']} s{extra}")
    return EXIT_OK if not res["rejected_spans"] else EXIT_REJECTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
