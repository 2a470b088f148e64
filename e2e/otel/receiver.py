"""A minimal OTLP/HTTP trace receiver for the tests, built on the official protobuf
definitions (the `opentelemetry-proto` package).

Accepts `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`, answers an empty
`ExportTraceServiceResponse`, and appends every span as one JSON line to --out:
trace and span ids in hex, name, kind, status, the span's attributes, its resource's
attributes, and the request's headers (so a test can check what the exporter sent).

Usage: receiver.py --port PORT --out FILE
"""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

LOCK = threading.Lock()


def value(v):
    """An AnyValue as plain JSON."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind is None:
        return None
    return getattr(v, kind)


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def make_handler(out):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                self.send_error(404 if self.path != "/v1/traces" else 415)
                return
            req = ExportTraceServiceRequest()
            try:
                req.ParseFromString(body)
            except Exception as e:  # noqa: BLE001: any parse failure is the client's
                self.send_error(400, str(e))
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            lines = []
            for rs in req.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        lines.append(
                            json.dumps(
                                {
                                    "trace_id": s.trace_id.hex(),
                                    "span_id": s.span_id.hex(),
                                    "parent_span_id": s.parent_span_id.hex(),
                                    "name": s.name,
                                    "kind": s.kind,
                                    "status_code": s.status.code,
                                    "status_message": s.status.message,
                                    "start_ns": s.start_time_unix_nano,
                                    "end_ns": s.end_time_unix_nano,
                                    "attributes": attributes(s.attributes),
                                    "resource": resource,
                                    "scope": ss.scope.name,
                                    "headers": headers,
                                }
                            )
                        )
            with LOCK, open(out, "a", encoding="utf-8") as f:
                for line in lines:
                    f.write(line + "\n")
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(a.out)).serve_forever()


if __name__ == "__main__":
    main()
