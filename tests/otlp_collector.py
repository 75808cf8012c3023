"""A real OpenTelemetry collector for the tests, rotel (pip `rotel`, in the [dev] extra), and a traced
long-running program checked through it; shared by tests/unit (CPU, Triton's interpreter) and tests/gpu.

rotel is started as a plain subprocess (`rotel-agent start`, foreground, its binary ships in the
wheel) on 127.0.0.1 with free ports; it receives OTLP (gRPC and HTTP) and forwards what it receives
(OTLP/gRPC exporter) to `Receiver`, a small OTLP receiver built on grpcio + opentelemetry-proto:
that is how a test sees the spans that went through the collector. `rotel()` skips the test with
the reason when rotel is not installed or does not start.

`live_loop_through_rotel` runs `TRACED_LOOP`, a plain program (a `@jitcache` Triton kernel launched in
an endless loop, traced by environment variables only) against the collector, checks that spans
arrive while it runs, ends it with SIGTERM and checks that the rest arrives: one `jitlab.launch` span
per launch (less the drops the program reports), with the documented attributes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from .support import ADD_ONE, child_env, free_port, wait_port

ROTEL_PIN = "rotel==0.0.1a15"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """The downstream end: collects every span rotel forwards, as (resource attrs, span) pairs."""

    def __init__(self):
        self.lock = threading.Lock()
        self.spans: list = []

    def Export(self, request, context):
        with self.lock:
            for rs in request.resource_spans:
                res = {kv.key: kv.value for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        self.spans.append((res, sp))
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: bytes) -> list:
        with self.lock:
            return [(r, s) for r, s in self.spans if s.trace_id == trace_id]

    def of_service(self, service: str) -> list:
        """The spans whose resource has this service.name."""
        with self.lock:
            return [s for r, s in self.spans if r["service.name"].string_value == service]

    def resources_of(self, service: str) -> list[dict]:
        with self.lock:
            return [r for r, _ in self.spans if r["service.name"].string_value == service]

    def wait(self, trace_id: bytes, n: int, timeout: float = 15.0) -> list:
        end = time.monotonic() + timeout
        got = self.of_trace(trace_id)
        while len(got) < n and time.monotonic() < end:
            time.sleep(0.05)
            got = self.of_trace(trace_id)
        time.sleep(0.1)  # and nothing more than expected arrives
        return self.of_trace(trace_id)


@contextlib.contextmanager
def rotel(tmp: Path) -> Iterator[dict]:
    """rotel on free loopback ports forwarding to a `Receiver`: yields {"grpc", "http" (endpoints),
    "receiver", "proc"}; skips the calling test with the reason when rotel is missing or does not start."""
    spec = importlib.util.find_spec("rotel")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"rotel is not installed (pip install {ROTEL_PIN}, in the [dev] extra)")
    binary = Path(list(spec.submodule_search_locations)[0]) / "rotel-agent"
    if not os.access(binary, os.X_OK):
        pytest.skip(f"rotel's binary is missing or not executable: {binary}")

    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    recv_port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    grpc_port, http_port = free_port(), free_port()
    log_path = tmp / "rotel.log"
    cmd = [
        str(binary), "start",
        "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
        "--exporter", "otlp",
        "--otlp-exporter-endpoint", f"http://127.0.0.1:{recv_port}",
        "--otlp-exporter-protocol", "grpc",
        "--otlp-exporter-compression", "none",
        "--batch-timeout", "50ms",
        "--pid-file", str(tmp / "rotel.pid"),
        "--log-file", str(tmp / "rotel-agent.log"),
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        if not (wait_port(grpc_port, proc) and wait_port(http_port, proc)):
            proc.kill()
            proc.wait()
            pytest.skip(f"rotel did not start (exit {proc.returncode}): {log_path.read_text()[-1000:]}")
        yield {"grpc": f"http://127.0.0.1:{grpc_port}", "http": f"http://127.0.0.1:{http_port}",
               "receiver": receiver, "proc": proc}
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.stop(0)


# A plain program, traced by environment variables only: one @jitcache kernel launched in an endless
# loop (on the GPU when there is one and the interpreter is off), its launch count written after each
# launch, atomically (SIGTERM may land mid-write). It runs until it is signalled.
TRACED_LOOP = textwrap.dedent("""
    import os, pathlib, time
    import torch, triton, triton.language as tl
    from jitlab import jitcache

    {kernel}
    dev = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
    x = torch.arange(256, dtype=torch.float32, device=dev)
    out = torch.empty_like(x)
    n = 0

    def launch():
        global n
        add_one[(1,)](x, out, 256, BLOCK=256)
        n += 1
        pathlib.Path("count.tmp").write_text(str(n))
        pathlib.Path("count.tmp").replace("count")

    launch()
    assert bool((out == x + 1).all())  # (a sync on the GPU)
    pathlib.Path("device").write_text(dev)
    while True:
        launch()
        if dev == "cuda" and n % 200 == 0:
            torch.cuda.synchronize()
        time.sleep(0.002)
""").format(kernel=ADD_ONE)

# README "Tracing and Jaeger": the attributes of every jitlab.launch span (jitlab.cache.key: of an
# entry, so not on pass-through launches; jitlab.compile.duration_ns: on a miss)
DOCUMENTED = ("jitlab.kernel", "jitlab.scope", "jitlab.policy", "jitlab.cache.result", "jitlab.arg_update.duration_ns",
              "jitlab.launch.duration_ns", "thread.id")


def _attrs(span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = v.string_value if v.HasField("string_value") else v.int_value if v.HasField("int_value") else (
            v.bool_value if v.HasField("bool_value") else v.double_value)
    return out


def live_loop_through_rotel(collector: dict, tmp_path: Path, *, gpu: bool, protocol: str = "grpc",
                            flush_s: float = 0.2, min_live: int = 10, timeout: float = 120.0) -> dict:
    """Run TRACED_LOOP (`gpu`: on the GPU, through jitlab's hit path; else under the interpreter, jitlab in
    pass-through) with JITLAB_TRACE=full, OTEL_EXPORTER_OTLP_ENDPOINT at `collector` and
    JITLAB_TRACE_FLUSH_S=`flush_s`; check that launch spans arrive downstream in two exports or more while
    it runs, SIGTERM it, and check that the rest arrives: launch spans == launches - reported drops, each
    with the documented attributes. Returns the numbers (and prints them in one line, seen with -s)."""
    service = f"live-loop-{'gpu' if gpu else 'cpu'}-{protocol.replace('/', '-')}-{os.getpid()}-{time.monotonic_ns()}"
    endpoint = collector["grpc"] if protocol == "grpc" else collector["http"]
    env = child_env(interpret=not gpu, JITLAB_TRACE="full", JITLAB_TRACE_FLUSH_S=flush_s,
                    OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
                    OTEL_SERVICE_NAME=service)
    receiver: Receiver = collector["receiver"]

    def launch_spans() -> list:
        return [s for s in receiver.of_service(service) if s.name == "jitlab.launch"]

    t0 = time.monotonic()
    script = tmp_path / "traced_loop.py"  # a file: Triton's @jit reads the kernel's source (not `python -c`)
    script.write_text(TRACED_LOOP)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        end = t0 + timeout
        seen: list[int] = []  # launch spans received, at each change, while the program runs
        while time.monotonic() < end and (len(seen) < 2 or seen[-1] < min_live):
            assert proc.poll() is None, proc.communicate()
            n = len(launch_spans())
            if n and (not seen or n > seen[-1]):
                seen.append(n)
            time.sleep(0.05)
        live = len(launch_spans())
        assert proc.poll() is None, "the program ended by itself"
        assert len(seen) >= 2 and live >= min_live, f"only {seen} launch spans arrived in {timeout:.0f} s while running"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGTERM, err[-3000:]  # the default disposition ends it, after the flush
    device = (tmp_path / "device").read_text()
    assert device == ("cuda" if gpu else "cpu"), device
    n = int((tmp_path / "count").read_text())
    m = re.search(r"launch records = \d+ written \+ (\d+) dropped", err)  # the session's final line
    dropped = int(m.group(1)) if m else 0
    want = (n - dropped, n + 1 - dropped)  # +1: a launch whose count SIGTERM pre-empted
    end = time.monotonic() + 30
    while time.monotonic() < end and len(launch_spans()) < want[0]:
        time.sleep(0.05)
    time.sleep(0.3)  # and nothing more than expected arrives
    spans = launch_spans()
    secs = time.monotonic() - t0
    assert len(spans) in want, (len(spans), n, dropped, err[-2000:])
    assert live < len(spans) and n >= live  # some arrived only after SIGTERM (the last flush)

    # the documented attributes, on every launch span
    attrs = [_attrs(s) for s in spans]
    for s, a in zip(spans, attrs):
        missing = [k for k in DOCUMENTED if k not in a]
        assert not missing, (missing, a)
        assert a["jitlab.kernel"] == "add_one" and a["jitlab.launch.duration_ns"] > 0 and a["thread.id"] > 0
        assert a["jitlab.arg_update.duration_ns"] >= 0 and s.end_time_unix_nano >= s.start_time_unix_nano > 0
    results = [a["jitlab.cache.result"] for a in attrs]
    if gpu:  # the first launch compiles, every other one is a hit through jitlab's hit path
        assert results.count("miss") == 1 and results.count("hit") == len(results) - 1, set(results)
        assert attrs[results.index("miss")]["jitlab.compile.duration_ns"] > 0
        assert all(a["jitlab.cache.key"] == 0 and a["jitlab.scope"] == "global" and a["jitlab.policy"] == "safe"
                   for a in attrs)
    else:  # under the interpreter jitlab passes every launch through to Triton
        assert set(results) == {"fallback"} and {a.get("jitlab.fallback.reason") for a in attrs} == {"passthrough"}
    batches = {s.span_id for s in receiver.of_service(service) if s.name == "jitlab.launches"}
    assert all(s.parent_span_id in batches for s in spans)  # outside any span: under the per-batch span
    res = receiver.resources_of(service)[0]
    assert res["jitlab.clock.offset_ns"].int_value > 0 and res["jitlab.torch.version"].string_value
    summary = {"device": device, "protocol": protocol, "launches": n, "live": live, "after_sigterm": len(spans) - live,
               "spans": len(spans), "dropped": dropped, "exports_seen_live": len(seen), "seconds": round(secs, 1)}
    print(f"\nrotel live ({device}, {protocol}): {n} launches; {live} launch spans received while running "
          f"({len(seen)} deliveries seen), {len(spans) - live} more after SIGTERM, {len(spans)} in all, {dropped} "
          f"dropped; {secs:.1f} s")
    return summary
