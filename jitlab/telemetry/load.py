"""Load OTLP JSON-lines trace files into a pandas DataFrame (one row per span), for notebooks.

Each line is parsed by `google.protobuf.json_format` into
`opentelemetry.proto.trace.v1.trace_pb2.TracesData`. One difference between OTLP/JSON and the
plain protobuf JSON mapping is handled first, as the OTLP spec prescribes: trace and span IDs
are hex strings in OTLP/JSON, base64 in protobuf JSON (`otlp_json_to_proto_dict`).

`read_documents` is the one line-reader of trace files (load_traces, jitlab-export, jitlab-replay): a
line that is not an OTLP JSON document (the truncated last line of a full disk, bytes that are not
UTF-8) is skipped and named by file and line number; the good lines are read.
"""

from __future__ import annotations

import base64
import glob as _glob
import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from .._extras import require

# The [trace] extra's modules, named in one line when missing (load_traces with the core install alone).
json_format = require("trace", "google.protobuf.json_format")
trace_pb2 = require("trace", "opentelemetry.proto.trace.v1.trace_pb2")

_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
BASE_COLUMNS = [
    "trace_id", "span_id", "parent_id", "name", "kind", "start_ns", "end_ns", "duration_ns", "service",
    "status_code", "status_message", "scope", "file", "line",
]


def _hex_to_b64(v):
    if isinstance(v, str) and v:
        try:
            return base64.b64encode(bytes.fromhex(v)).decode("ascii")
        except ValueError:
            return v  # already base64 (a protobuf-JSON file): leave it
    return v


def otlp_json_to_proto_dict(doc: dict) -> dict:
    """An OTLP/JSON traces document (`TracesData` / `ExportTraceServiceRequest` shape) with the
    hex trace/span IDs of its spans and links turned, in place, into the base64 that the protobuf
    JSON mapping expects. Returns `doc`."""
    for rs in doc.get("resourceSpans") or ():
        for ss in rs.get("scopeSpans") or ():
            for sp in ss.get("spans") or ():
                for k in _ID_KEYS:
                    if k in sp:
                        sp[k] = _hex_to_b64(sp[k])
                for link in sp.get("links") or ():
                    for k in _ID_KEYS:
                        if k in link:
                            link[k] = _hex_to_b64(link[k])
    return doc


def parse_line(line: str | bytes) -> trace_pb2.TracesData:
    """One OTLP JSON line -> `TracesData` (raises `json_format.ParseError`/`ValueError` if invalid)."""
    return _parse_doc(json.loads(line))


def _parse_doc(doc: dict) -> trace_pb2.TracesData:
    msg = trace_pb2.TracesData()
    json_format.ParseDict(otlp_json_to_proto_dict(doc), msg)
    return msg


class BadLine(NamedTuple):
    """A line of a trace file that is not an OTLP JSON traces document; str() is one line: `path:line: why`."""

    path: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.why}"


class BadTraceLine(ValueError):
    """A reader asked to stop at the first bad line (`bad=None`): the message names the file and line."""

    def __init__(self, bad: BadLine):
        super().__init__(str(bad))
        self.bad = bad


def _first_line(e: Exception) -> str:
    return ((str(e).splitlines() or [type(e).__name__])[0])[:160]


def read_documents(path: str | os.PathLike, bad: list[BadLine] | None = None) -> Iterator[tuple[int, str, dict]]:
    """(line number, text, document) for each non-empty line of one trace file that is a JSON OTLP traces
    document (an object with resourceSpans). Any other line is appended to `bad` and skipped, or, with
    `bad=None`, raises BadTraceLine naming it."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
                doc = json.loads(text)
            except UnicodeDecodeError as e:
                why = f"not UTF-8 text (byte {e.start} of the line)"
            except ValueError as e:
                cut = "" if raw.endswith(b"\n") else "; the file's last line has no newline: truncated (disk full?)"
                why = f"not JSON ({_first_line(e)}){cut}"
            else:
                if isinstance(doc, dict) and "resourceSpans" in doc:
                    yield n, text, doc
                    continue
                why = "not an OTLP traces document (no resourceSpans)"
            _bad(BadLine(str(path), n, why), bad)


def _bad(b: BadLine, bad: list[BadLine] | None) -> None:
    if bad is None:
        raise BadTraceLine(b)
    bad.append(b)


def iter_traces_data(path: str | os.PathLike, bad: list[BadLine] | None = None
                     ) -> Iterator[tuple[int, trace_pb2.TracesData]]:
    """(line number, TracesData) for each good line of one file (`read_documents`; bad lines as there)."""
    for n, _, doc in read_documents(path, bad):
        try:
            data = _parse_doc(doc)
        except (json_format.ParseError, ValueError, TypeError) as e:
            _bad(BadLine(str(path), n, f"not valid OTLP ({_first_line(e)})"), bad)
            continue
        yield n, data


def any_value(v):
    """`AnyValue` -> Python (str/bool/int/float/bytes/list/dict/None)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


def _expand(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        s = str(p)
        if any(c in s for c in "*?["):
            out.extend(Path(x) for x in sorted(_glob.glob(s, recursive=True)))
        elif Path(s).is_dir():
            out.extend(sorted(Path(s).glob("*.jsonl")))
        else:
            out.append(Path(s))
    return out


def iter_spans(paths, bad: list[BadLine] | None = None) -> Iterator[dict]:
    """One dict per span (the rows of `load_traces`); bad lines as in `read_documents`."""
    for path in _expand(paths):
        for n, data in iter_traces_data(path, bad):
            for rs in data.resource_spans:
                res = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
                service = res.get("service.name")
                res_cols = {f"resource.{k}": v for k, v in res.items()}
                for ss in rs.scope_spans:
                    scope = ss.scope.name
                    for sp in ss.spans:
                        row = {
                            "trace_id": sp.trace_id.hex(),
                            "span_id": sp.span_id.hex(),
                            "parent_id": sp.parent_span_id.hex() or None,
                            "name": sp.name,
                            "kind": sp.kind,
                            "start_ns": int(sp.start_time_unix_nano),
                            "end_ns": int(sp.end_time_unix_nano),
                            "duration_ns": int(sp.end_time_unix_nano) - int(sp.start_time_unix_nano),
                            "service": service,
                            "status_code": sp.status.code,
                            "status_message": sp.status.message or None,
                            "scope": scope,
                            "file": str(path),
                            "line": n,
                        }
                        for kv in sp.attributes:
                            row[kv.key] = any_value(kv.value)
                        row.update(res_cols)
                        yield row


def load_traces(paths: str | os.PathLike | Iterable[str | os.PathLike]):
    """Trace files (paths, globs such as "traces/*.jsonl", or directories) -> DataFrame, one row
    per span: trace_id, span_id, parent_id (hex; None for roots), name, kind, start_ns, end_ns,
    duration_ns (int64 unix ns), service, status_code, status_message, scope, file, line, then
    every span attribute as its own column (e.g. "jitlab.launch.duration_ns", nullable Int64 when
    integral) and every resource attribute as "resource.<key>". A line that is not an OTLP JSON document
    (a truncated last line) is skipped with a warning naming it; `df.attrs["bad_lines"]` lists them."""
    pd = require("lab", "pandas")

    cols: dict[str, list] = {c: [] for c in BASE_COLUMNS}
    n = 0
    bad: list[BadLine] = []
    for row in iter_spans(paths, bad):
        for k, v in row.items():
            col = cols.get(k)
            if col is None:
                col = cols[k] = [None] * n
            col.append(v)
        n += 1
        for col in cols.values():
            if len(col) < n:
                col.append(None)
    data = {}
    for k, vals in cols.items():
        present = [v for v in vals if v is not None]
        if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            data[k] = pd.array(vals, dtype="int64" if len(present) == n else "Int64")
        else:
            data[k] = vals
    order = [c for c in cols if not c.startswith("resource.")] + [c for c in cols if c.startswith("resource.")]
    df = pd.DataFrame(data, columns=order)
    for b in bad:
        warnings.warn(f"jitlab: {b}; line skipped", RuntimeWarning, stacklevel=2)
    df.attrs["bad_lines"] = [str(b) for b in bad]
    return df


read_traces = load_traces
