"""OpenTelemetry: spans received by a local OTLP/HTTP collector stand-in."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner
from helpers import free_port
from test_report import finished_scenario

from petri_core.cli import main
from petri_core.errors import Rejected
from petri_core.otel import SpanPlan, export, plan, shown, traces_url

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class Collector(BaseHTTPRequestHandler):
    """Keeps the spans of each request it accepts; answers `statuses` in turn (then 200)."""

    spans: ClassVar[list[Any]] = []
    requests: ClassVar[list[int]] = []  # spans per request, accepted or not
    statuses: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        got = [
            span
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        Collector.requests.append(len(got))
        status = Collector.statuses.pop(0) if Collector.statuses else 200
        if status == 200:
            Collector.spans.extend(got)
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    """A local OTLP/HTTP collector stand-in; yields its base URL."""
    Collector.spans, Collector.requests, Collector.statuses = [], [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def attrs(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value or value.int_value
    return out


def test_spans_have_the_run_cell_task_tool_structure_and_attributes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector: str
) -> None:
    svc, run_id = finished_scenario(tmp_path)
    monkeypatch.setenv("PETRI_HOME", str(svc.dish))
    result = CliRunner().invoke(main, ["otel", "export", run_id, "--endpoint", collector])
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
    assert result.stdout == f"sent {len(spans)} spans for run {run_id} to {collector}/v1/traces\n"
    assert Collector.requests == [len(spans)]  # under one batch: one request
    sent = len(spans)
    again = CliRunner().invoke(main, ["otel", "export", run_id, "--endpoint", collector, "--json"])
    assert json.loads(again.stdout) == {"run_id": run_id, "spans": sent, "endpoint": f"{collector}/v1/traces"}
    assert Collector.requests == [sent, sent]


def test_an_unreachable_collector_fails_the_export_with_its_reason_and_no_retry_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens: the export fails within its timeout and says so. (It used to print "sent N
    spans" after retrying every span for seconds, each retry logged to the terminal.)"""
    svc, run_id = finished_scenario(tmp_path)
    monkeypatch.setenv("PETRI_HOME", str(svc.dish))
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["otel", "export", run_id, "--endpoint", url, "--timeout", "1.5"])
    assert result.exit_code == 1
    assert result.stdout == ""
    with svc.open(create=False) as st, st.read():
        total = len(list(_walk(plan(st.run(run_id).model_dump(), st.events(run_id=run_id)))))
    assert result.stderr.startswith(f"Error: could not send the trace to {url}/v1/traces (")
    assert "Connection refused" in result.stderr or "connect" in result.stderr.lower()
    assert f"; 0 of {total} spans were sent; start an OTLP/HTTP collector there" in result.stderr
    assert "Transient error" not in result.stderr and "retrying in" not in result.stderr


def _walk(node: SpanPlan) -> Iterator[SpanPlan]:
    yield node
    for child in node.children:
        yield from _walk(child)


def wide_tree(leaves: int) -> SpanPlan:
    root = SpanPlan("run wide", 1_000, 2_000, {"petri.run_id": "wide"})
    root.children = [SpanPlan(f"cell c{i}", 1_000 + i, 1_500 + i) for i in range(leaves)]
    return root


def test_a_large_run_goes_in_batches_and_a_refused_batch_says_how_many_were_sent(collector: str) -> None:
    assert export(wide_tree(1_100), collector) == 1_101
    assert Collector.requests == [512, 512, 77] and len(Collector.spans) == 1_101
    Collector.spans, Collector.requests, Collector.statuses = [], [], [200, 400]
    with pytest.raises(Rejected) as refused:
        export(wide_tree(1_100), collector, timeout=2)
    assert Collector.requests == [512, 512]  # a 400 is not retried, and nothing after it is sent
    assert "code: 400" in str(refused.value) and "; 512 of 1101 spans were sent" in str(refused.value)


def test_the_endpoint_follows_the_otlp_variables_as_the_sdk_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert traces_url(None) == "http://localhost:4318/v1/traces"
    assert traces_url("http://127.0.0.1:9/base/") == "http://127.0.0.1:9/base/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert traces_url(None) == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:1/custom")
    assert traces_url(None) == "http://traces:1/custom"
    assert traces_url("http://flag:2") == "http://flag:2/v1/traces"


def test_a_url_is_printed_without_its_credentials() -> None:
    assert shown("https://pk:sk-secret@cloud.example:443/api/v1/traces?key=sk-2") == (
        "https://cloud.example:443/api/v1/traces"
    )
    assert shown("http://[::1]:4318/v1/traces") == "http://[::1]:4318/v1/traces"
    assert shown("http://localhost/v1/traces") == "http://localhost/v1/traces"


def test_a_refusal_names_the_collector_without_its_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, run_id = finished_scenario(tmp_path)
    monkeypatch.setenv("PETRI_HOME", str(svc.dish))
    url = f"http://user:sk-secret@127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["otel", "export", run_id, "--endpoint", url, "--timeout", "0.5"])
    assert result.exit_code == 1 and "sk-secret" not in result.output
    assert result.stderr.startswith(
        f"Error: could not send the trace to http://127.0.0.1:{url.rsplit(':', 1)[1]}/v1/traces"
    )
