"""Traces from any program, live, on a GPU: a plain program launching a `@jitcache` Triton kernel on
the GPU in an endless loop, traced only by environment variables (`JITLAB_TRACE=full`,
`OTEL_EXPORTER_OTLP_ENDPOINT` at a real collector, rotel, `JITLAB_TRACE_FLUSH_S=0.2`), delivers its
launch spans while it runs; SIGTERM ends it and the rest arrives: one `jitlab.launch` span per launch
(a miss, then hits through jitlab's hit path), with the documented attributes. The check is
tests/otlp_collector.py's `live_loop_through_rotel`, which the CPU suite runs under the interpreter
(tests/unit/test_telemetry_collector.py). With -s it prints one line per protocol: launches, spans
received while running, after SIGTERM, seconds.

rotel travels to the H200 as a wheel (rotel==0.0.1a15, cp312 manylinux_2_34 x86_64); without it the
test is skipped with the reason."""

from __future__ import annotations

import pytest

pytest.importorskip("grpc")
from ..otlp_collector import live_loop_through_rotel, rotel  # noqa: E402 - after the grpc check


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with rotel(tmp_path_factory.mktemp("rotel")) as c:
        yield c


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_gpu_loop_exports_live_through_rotel_then_the_rest_at_sigterm(collector, tmp_path, protocol):
    got = live_loop_through_rotel(collector, tmp_path, gpu=True, protocol=protocol)
    assert got["device"] == "cuda" and got["live"] >= 10 and got["exports_seen_live"] >= 2
    assert got["spans"] + got["dropped"] >= got["launches"] > got["live"]
