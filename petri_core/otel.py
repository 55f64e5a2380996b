"""OpenTelemetry export of a run (optional extra `petri-core[otel]`).

One trace per run: a span for the run, a child span per cell, a child span per task under its
cell, and a short span per tool call (claim, heartbeat, submit, fail) under its task. Times come
from the event log, so a finished run can be exported at any time, to any OTLP/HTTP endpoint
(Langfuse, SigNoz, Jaeger): `OTEL_EXPORTER_OTLP_ENDPOINT`, or `--endpoint`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import Rejected
from .models import Event

TOOL_EVENTS = {
    "task_claimed": "petri_claim",
    "lease_renewed": "petri_heartbeat",
    "task_submitted": "petri_submit",
    "task_failed": "petri_fail",
}
TASK_END = ("task_completed", "task_cancelled", "task_stalled")


def _ns(at: str) -> int:
    return int(datetime.fromisoformat(at).timestamp() * 1_000_000_000)


@dataclass
class SpanPlan:
    """A span to emit: name, times, attributes, children (pure data, testable without the SDK)."""

    name: str
    start: int
    end: int
    attributes: dict[str, Any] = field(default_factory=dict)
    children: list[SpanPlan] = field(default_factory=list)


def plan(run: dict[str, Any], events: Iterable[Event]) -> SpanPlan:
    """The span tree of a run, from its events."""
    events = list(events)
    if not events:
        raise Rejected(f"run {run['run_id']} has no events", "export a run that has started")
    root = SpanPlan(
        f"run {run['run_id']}",
        _ns(events[0].at),
        _ns(events[-1].at),
        {
            "petri.run_id": run["run_id"],
            "petri.claim": run["claim"],
            "petri.preset": run["preset"],
            "petri.run_state": run["state"],
        },
    )
    cells: dict[str, SpanPlan] = {}
    tasks: dict[str, SpanPlan] = {}
    for e in events:
        t = _ns(e.at)
        if e.type == "cell_created" and e.cell_id:
            cells[e.cell_id] = SpanPlan(
                f"cell {e.cell_id}",
                t,
                t,
                {
                    "petri.cell_id": e.cell_id,
                    "petri.level": e.payload["level"],
                    "petri.claim": e.payload["text"],
                },
            )
            root.children.append(cells[e.cell_id])
        cell = cells.get(e.cell_id or "")
        if cell is not None:
            cell.end = max(cell.end, t)
            if e.type == "cell_state_changed":
                cell.attributes["petri.state"] = e.payload["to"]
                if "iteration" in e.payload.get("fields", {}):
                    cell.attributes["petri.iteration"] = e.payload["fields"]["iteration"]
        if e.type == "task_created" and e.task_id and cell is not None:
            tasks[e.task_id] = SpanPlan(
                f"{e.payload['role']} {e.task_id}",
                t,
                t,
                {
                    "petri.task_id": e.task_id,
                    "petri.role": e.payload["role"],
                    "petri.kind": e.payload["kind"],
                    "petri.iteration": e.payload["iteration"],
                },
            )
            cell.children.append(tasks[e.task_id])
        task = tasks.get(e.task_id or "")
        if task is None:
            continue
        task.end = max(task.end, t)
        if e.type in TOOL_EVENTS:
            attrs = {"petri.tool": TOOL_EVENTS[e.type], "petri.actor": e.actor}
            task.children.append(SpanPlan(TOOL_EVENTS[e.type], t, t, attrs))
        if e.type == "verdict_recorded":
            task.attributes["petri.verdict"] = e.payload["verdict"]
        if e.type == "usage_recorded":
            for key in ("input_tokens", "output_tokens", "cost_usd"):
                if key in e.payload:
                    task.attributes[f"petri.{key}"] = e.payload[key]
        if e.type in TASK_END:
            task.attributes["petri.status"] = e.type.removeprefix("task_")
    return root


BATCH = 512  # spans per OTLP request, as the SDK's batch processor sends them
EXPORTER_LOG = "opentelemetry.exporter.otlp"


def traces_url(endpoint: str | None) -> str:
    """Where the spans go: `--endpoint` (a base URL), else the OTLP variables, as the SDK reads them."""
    if endpoint:
        return f"{endpoint.rstrip('/')}/v1/traces"
    if url := os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return url
    return f"{os.environ.get('OTEL_EXPORTER_OTLP_ENDPOINT', 'http://localhost:4318').rstrip('/')}/v1/traces"


def shown(url: str) -> str:
    """The URL as it may be printed: without user, password or query, which can hold a key."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _Said(logging.Handler):
    """Keeps what the exporter logs, so its retries do not flood the terminal and its last word can
    explain a failure."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _why(messages: list[str]) -> str:
    """The reason in what the exporter logged for one failed batch: its last specific message (the
    final "due to timeout, max retries or shutdown" names none), trimmed."""
    specific = [m for m in messages if "max retries or shutdown" not in m] or messages or ["no reply"]
    why = specific[-1].removeprefix("Transient error ").split(" encountered while exporting")[0]
    return why if len(why) <= 300 else f"{why[:299]}…"


@contextmanager
def _exporter_log() -> Iterator[_Said]:
    log = logging.getLogger(EXPORTER_LOG)
    said, propagate = _Said(), log.propagate
    log.addHandler(said)
    log.propagate = False
    try:
        yield said
    finally:
        log.removeHandler(said)
        log.propagate = propagate


def export(tree: SpanPlan, endpoint: str | None = None, timeout: float = 10.0) -> int:
    """Send the span tree to an OTLP/HTTP endpoint; returns the number of spans sent.

    The spans are made in memory first, then sent in batches; each batch may take `timeout` seconds,
    retries included (the SDK's own backoff). The first batch that fails ends the export with a
    `Rejected` that says where, why and how many spans had been sent: a run is never reported as
    exported when it was not."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.trace import set_span_in_context
    except ImportError:
        raise Rejected("OpenTelemetry is not installed", "pip install 'petri-core[otel]'") from None
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "petri"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("petri")

    def emit(node: SpanPlan, parent: Any) -> None:
        span = tracer.start_span(node.name, context=parent, start_time=node.start, attributes=node.attributes)
        for child in node.children:
            emit(child, set_span_in_context(span))
        span.end(end_time=max(node.end, node.start))

    emit(tree, None)
    spans = memory.get_finished_spans()
    provider.shutdown()
    url = traces_url(endpoint)
    exporter = OTLPSpanExporter(endpoint=url, timeout=timeout)
    sent = 0
    try:
        with _exporter_log() as said:
            for start in range(0, len(spans), BATCH):
                batch, mark = spans[start : start + BATCH], len(said.messages)
                if exporter.export(batch) is not SpanExportResult.SUCCESS:
                    raise Rejected(
                        f"could not send the trace to {shown(url)} ({_why(said.messages[mark:])}); "
                        f"{sent} of {len(spans)} spans were sent",
                        "start an OTLP/HTTP collector there, or pass --endpoint URL "
                        "(or set OTEL_EXPORTER_OTLP_ENDPOINT); --timeout SECONDS waits longer",
                    )
                sent += len(batch)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    return sent
