"""OpenTelemetry: spans received by a local OTLP/HTTP collector stand-in."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner
from test_report import finished_scenario

from petri_core.cli import main

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class Collector(BaseHTTPRequestHandler):
    spans: ClassVar[list[Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                Collector.spans.extend(scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def attrs(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value or value.int_value
    return out


def test_spans_have_the_run_cell_task_tool_structure_and_attributes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, run_id = finished_scenario(tmp_path)
    monkeypatch.setenv("PETRI_HOME", str(svc.dish))
    Collector.spans = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(main, ["otel", "export", run_id, "--endpoint", endpoint])
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    spans = Collector.spans
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1 and roots[0].name == f"run {run_id}"
    assert len({s.trace_id for s in spans}) == 1
    cells = [s for s in spans if s.name.startswith("cell ")]
    assert len(cells) == 5 and all(by_id[c.parent_span_id] is roots[0] for c in cells)
    tasks = [s for s in spans if "petri.task_id" in attrs(s)]
    assert len(tasks) == len(svc.log(run_id, types=["task_created"]))
    for task in tasks:
        parent = by_id[task.parent_span_id]
        assert parent.name == f"cell {attrs(task)['petri.task_id'].split('.')[0]}"
    tools = [s for s in spans if s.name in ("petri_claim", "petri_submit")]
    assert tools and all("petri.task_id" in attrs(by_id[t.parent_span_id]) for t in tools)
    evaluator = next(t for t in tasks if attrs(t)["petri.role"] == "evaluator")
    assert (
        attrs(evaluator)["petri.verdict"] == "EVIDENCE_CONFIRMS" and attrs(evaluator)["petri.iteration"] >= 1
    )
    assert attrs(roots[0])["petri.run_state"] == "complete"
    assert f"sent {len(spans)} spans" in result.output
