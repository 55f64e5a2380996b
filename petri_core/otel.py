"""OpenTelemetry export of a run (optional extra `petri-core[otel]`).

One trace per run: a span for the run, a child span per cell, a child span per task under its
cell, and a short span per tool call (claim, heartbeat, submit, fail) under its task. Times come
from the event log, so a finished run can be exported at any time, to any OTLP/HTTP endpoint
(Langfuse, SigNoz, Jaeger): `OTEL_EXPORTER_OTLP_ENDPOINT`, or `--endpoint`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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


def export(tree: SpanPlan, endpoint: str | None = None) -> int:
    """Send the span tree to an OTLP/HTTP endpoint; returns the number of spans sent."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.trace import set_span_in_context
    except ImportError:
        raise Rejected("OpenTelemetry is not installed", "pip install 'petri-core[otel]'") from None
    exporter = (
        OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces") if endpoint else OTLPSpanExporter()
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "petri"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("petri")
    count = 0

    def emit(node: SpanPlan, parent: Any) -> None:
        nonlocal count
        span = tracer.start_span(node.name, context=parent, start_time=node.start, attributes=node.attributes)
        for child in node.children:
            emit(child, set_span_in_context(span))
        span.end(end_time=max(node.end, node.start))
        count += 1

    emit(tree, None)
    provider.shutdown()
    return count
