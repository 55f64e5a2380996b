"""The MCP server: the whole scenario through the tools alone, both protocol eras; every rejection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Clock, add_article, cite, passing
from mcp import Client
from test_scenario import A1, A2, ROOT, A, B, scenario_policy

from petri_core.mcp_server import INSTRUCTIONS, build
from petri_core.models import ClaimOut, TaskOut
from petri_core.service import Service

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["legacy", "auto"])
async def tools(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Client, Service]]:
    svc = Service(tmp_path / ".petri", clock=Clock())
    async with Client(build(svc), mode=request.param) as client:
        yield client, svc


async def call(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
    assert result.structured_content is not None
    text = result.content[0].text  # type: ignore[union-attr]
    assert json.loads(text) == result.structured_content  # content and structuredContent agree
    assert "\n" not in text, text  # compact JSON: the text is what the model reads
    return result.structured_content


async def reject(client: Client, svc: Service, name: str, args: dict[str, Any], *fragments: str) -> str:
    before = svc.log()
    result = await client.call_tool(name, args)
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "rejected: " in text, text
    for fragment in fragments:
        assert fragment in text, text
    assert svc.log() == before, "a rejected tool call changed the dish"
    return text


async def drain(client: Client, run_id: str, policy: Any) -> int:
    played = 0
    while True:
        nxt = await call(client, "petri_next", {"run_id": run_id, "limit": 50})
        if not nxt["tasks"]:
            return played
        for task in nxt["tasks"]:
            claim = await call(client, "petri_claim", {"task_id": task["task_id"], "worker": task["agent"]})
            result = policy(TaskOut(**task), ClaimOut(**claim))
            out = await call(
                client,
                "petri_submit",
                {"task_id": task["task_id"], "lease": claim["lease"], "result": result},
            )
            assert out["accepted"] is True
            played += 1


async def test_the_whole_scenario_runs_through_the_tools_alone(tools: tuple[Client, Service]) -> None:
    client, svc = tools
    source = add_article(svc)
    assert client.instructions == INSTRUCTIONS
    start = await call(client, "petri_start", {"claim": ROOT, "preset": "standard"})
    played = await drain(client, start["run_id"], scenario_policy(source.source_id))
    nxt = await call(client, "petri_next", {"run_id": start["run_id"]})
    assert nxt["done"] is False and nxt["tasks"] == []
    stalled = nxt["needs_human"][0]["cell_id"]
    assert svc.open().cell(stalled).text == B
    svc.resolve(stalled, "requeue", guidance="look for public funding rounds")  # the human, via the CLI
    played += await drain(client, start["run_id"], scenario_policy(source.source_id))
    final = await call(client, "petri_next", {"run_id": start["run_id"]})
    assert final["done"] is True and "petri report" in final["hint"]
    states = {c.text: c.state for c in svc.open().cells(start["run_id"])}
    assert states == {ROOT: "validated", A: "inconclusive", A1: "validated", A2: "validated", B: "validated"}
    status = await call(client, "petri_status", {"run_id": start["run_id"]})
    assert status["runs"][0]["state"] == "complete" and status["runs"][0]["tasks"] == {"done": played}
    assert svc.verify().ok


async def test_tool_list_is_lean_annotated_and_complete(tools: tuple[Client, Service]) -> None:
    client, _ = tools
    listed = {t.name: t for t in (await client.list_tools()).tools}
    assert set(listed) == {
        "petri_start",
        "petri_next",
        "petri_claim",
        "petri_heartbeat",
        "petri_submit",
        "petri_fail",
        "petri_cells",
        "petri_status",
        "petri_fetch",
        "petri_search",
    }
    for tool in listed.values():
        text = json.dumps(tool.input_schema)
        assert '"title"' not in text and "$defs" not in text and "$ref" not in text
        assert tool.input_schema["additionalProperties"] is False
        assert tool.description and "\n" not in tool.description
    assert listed["petri_cells"].annotations.read_only_hint is True  # type: ignore[union-attr]
    assert listed["petri_status"].annotations.read_only_hint is True  # type: ignore[union-attr]
    assert listed["petri_submit"].annotations.read_only_hint is False  # type: ignore[union-attr]
    fetched = listed["petri_fetch"].output_schema or {}
    assert {"title", "published", "untrusted", "text"} <= set(fetched["properties"])  # field names kept
    assert fetched["properties"]["title"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    clar = listed["petri_start"].input_schema["properties"]["clarifications"]
    assert clar["type"] == "array" and set(clar["items"]["properties"]) == {"question", "answer"}


@pytest.fixture
async def claimed(tools: tuple[Client, Service]) -> tuple[Client, Service, str, str, str]:
    client, svc = tools
    source = add_article(svc)
    start = await call(
        client, "petri_start", {"claim": "Heat pumps cut household heating emissions", "preset": "quick"}
    )
    task = start["tasks"][0]["task_id"]
    claim = await call(client, "petri_claim", {"task_id": task, "worker": "petri-decomposer"})
    await call(
        client,
        "petri_submit",
        {
            "task_id": task,
            "lease": claim["lease"],
            "result": {"atomic": True, "bedrock_reason": "one measurable effect"},
        },
    )
    inv = (await call(client, "petri_next", {}))["tasks"][0]["task_id"]
    lease = (await call(client, "petri_claim", {"task_id": inv, "worker": "petri-investigator"}))["lease"]
    return client, svc, inv, lease, source.source_id


async def test_rejections_name_the_fix_and_change_nothing(
    claimed: tuple[Client, Service, str, str, str],
) -> None:
    client, svc, task, lease, src = claimed
    good = passing(src)["investigator"]
    await reject(
        client,
        svc,
        "petri_submit",
        {"task_id": task, "lease": lease, "result": good, "role": "x"},
        "unknown argument(s) role for petri_submit",
        "allowed arguments: lease, result, task_id",
    )
    await reject(
        client,
        svc,
        "petri_submit",
        {"task_id": "nope.i1.x", "lease": lease, "result": good},
        "no task 'nope.i1.x'",
        "take task ids from petri_next",
    )
    await reject(
        client,
        svc,
        "petri_submit",
        {"task_id": task, "lease": "1.stale", "result": good},
        "lease '1.stale' is stale",
        "call petri_next",
    )
    await reject(
        client,
        svc,
        "petri_submit",
        {"task_id": task, "lease": lease, "result": {"verdict": "STRONG_CASE", "summary": "s"}},
        "not in the investigator's vocabulary",
        "use one of: EVIDENCE_SUFFICIENT",
    )
    await reject(
        client,
        svc,
        "petri_submit",
        {
            "task_id": task,
            "lease": lease,
            "result": {"verdict": "EVIDENCE_SUFFICIENT", "summary": "s", "citations": [cite(src, "trail")]},
        },
        "needs at least 2 citations",
        "fetch sources with petri_fetch",
    )
    bad = {**cite(src, "trail"), "quote": "open-weight models beat the best proprietary models by a year"}
    await reject(
        client,
        svc,
        "petri_submit",
        {
            "task_id": task,
            "lease": lease,
            "result": {
                "verdict": "EVIDENCE_SUFFICIENT",
                "summary": "s",
                "citations": [bad, cite(src, "labs")],
            },
        },
        "the quote is not in source",
        "closest passage",
        "quote the source verbatim",
    )
    await reject(
        client,
        svc,
        "petri_submit",
        {"task_id": task, "lease": lease, "result": "EVIDENCE_SUFFICIENT"},
        "invalid arguments for petri_submit: result",
    )
    await reject(
        client,
        svc,
        "petri_claim",
        {"task_id": task, "worker": "petri-skeptic"},
        "is for petri-investigator, not petri-skeptic",
    )
    await call(client, "petri_submit", {"task_id": task, "lease": lease, "result": good})
    # wrong state: the investigator's task is done; its cell moved on to critique
    await reject(
        client,
        svc,
        "petri_claim",
        {"task_id": task, "worker": "petri-investigator"},
        "was already submitted",
        "call petri_next",
    )


async def test_fail_and_heartbeat_through_the_tools(claimed: tuple[Client, Service, str, str, str]) -> None:
    client, svc, task, lease, _ = claimed
    beat = await call(client, "petri_heartbeat", {"task_id": task, "lease": lease})
    assert beat["lease"] == lease
    out = await call(
        client, "petri_fail", {"task_id": task, "lease": lease, "reason": "rate limited", "retry_after": 30}
    )
    assert out["task_status"] == "ready" and out["attempt"] == 2
    assert svc.open().task(task).ready_at == out["ready_at"]


async def test_petri_cells_finds_shared_premises(claimed: tuple[Client, Service, str, str, str]) -> None:
    client, _, _, _, _ = claimed
    found = await call(client, "petri_cells", {"text": "heat pumps reduce household heating emissions"})
    assert found["cells"][0]["cell_id"].endswith("-0-01") and found["cells"][0]["score"] > 0.4
