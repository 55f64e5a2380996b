"""`petri demo`: the whole workflow, offline, with a scripted agent — a simulation, labelled as one.

A built-in scripted agent plays every role for a bundled claim about a fictional town, against
bundled pages served on 127.0.0.1, through the real service and the real MCP tools (an
in-process MCP client). It shows decomposition, research with verified citations, a failed
convergence and its iteration, a stall resolved as a human would, and the verdicts bottom-up.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio

from ..errors import PetriError
from ..service import Service
from .script import CLAIM, GUIDANCE, STALL_REASON, Cite, citation, plan

PAGES = Path(__file__).parent / "pages"
Say = Callable[[str], None]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Silence the access log."""


@contextmanager
def serve_pages() -> Iterator[str]:
    """The bundled pages on an ephemeral 127.0.0.1 port; yields the base URL."""
    handler = functools.partial(_Quiet, directory=str(PAGES))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class ScriptedAgent:
    """Plays every role with fixed judgement; every state change goes through the MCP tools."""

    def __init__(self, client: Any, base: str, say: Say) -> None:
        self.client = client
        self.base = base
        self.say = say
        self.pages: dict[str, dict[str, Any]] = {}

    async def call(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.client.call_tool(tool, args)
        if result.is_error:
            raise PetriError(f"the demo's scripted agent was refused by {tool}: {result.content[0].text}")
        data: dict[str, Any] = result.structured_content
        return data

    async def fetch(self, page: str) -> dict[str, Any]:
        if page not in self.pages:
            self.pages[page] = await self.call("petri_fetch", {"url": f"{self.base}/{page}.html"})
            got = self.pages[page]
            self.say(
                f"      fetched {page}.html → {got['source_id']} “{got['title']}” (published {got['published']})"
            )
        return self.pages[page]

    async def cite(self, cite: Cite) -> dict[str, Any]:
        return citation(cite, await self.fetch(cite.page))

    async def work(self, task: dict[str, Any]) -> None:
        claim = await self.call("petri_claim", {"task_id": task["task_id"], "worker": task["agent"]})
        context = claim["context"]
        text, iteration = context["cell"]["claim"], context["cell"]["iteration"]
        result = await self.decide(task, text, iteration, context)
        if result is None:
            reason = STALL_REASON
            await self.call(
                "petri_fail",
                {"task_id": task["task_id"], "lease": claim["lease"], "reason": reason, "retryable": False},
            )
            self.say(f"    {task['agent']} on {task['cell_id']}: gave the task back — {reason}")
            return
        out = await self.call(
            "petri_submit", {"task_id": task["task_id"], "lease": claim["lease"], "result": result}
        )
        verdict = result.get("verdict") or (
            "atomic"
            if result.get("atomic")
            else f"{len(result.get('children', []))} sub-claims"
            if "children" in result
            else ("debate turn answered" if task["kind"] == "debate" else "summary and directive written")
        )
        cites = len(result.get("citations", []))
        extra = f", {cites} verified citation(s)" if cites else ""
        self.say(
            f"    {task['agent']} on {task['cell_id']} (iteration {iteration}): {verdict}{extra} "
            f"→ cell {out['cell_state']}"
        )

    async def decide(
        self, task: dict[str, Any], text: str, iteration: int, context: dict[str, Any]
    ) -> dict[str, Any] | None:
        todo = plan(task["role"], task["kind"], text, iteration, context.get("directive"))
        if todo.lookup:
            shared = await self.call("petri_cells", {"text": todo.lookup})
            self.say(
                f"    petri-decomposer looked for shared premises: {len(shared['cells'])} similar cell(s)"
            )
        if todo.fail:
            return None
        citations = [await self.cite(c) for c in todo.cites]
        return {**todo.result, "citations": citations} if citations else dict(todo.result)


async def _run(svc: Service, base: str, say: Say) -> str:
    from mcp import Client

    from ..mcp_server import build

    async with Client(build(svc), mode="legacy") as client:
        agent = ScriptedAgent(client, base, say)
        start = await agent.call("petri_start", {"claim": CLAIM, "preset": "standard"})
        run_id = str(start["run_id"])
        resolved: set[str] = set()
        say(f"  petri_start → run {run_id}, root cell {start['root_cell_id']}")
        while True:
            nxt = await agent.call("petri_next", {"run_id": run_id, "limit": 20})
            if nxt["done"]:
                return run_id
            if nxt["tasks"]:
                say(
                    f"  petri_next → {len(nxt['tasks'])} task(s): "
                    + ", ".join(f"{t['agent']}@{t['cell_id']}" for t in nxt["tasks"])
                )
                async with anyio.create_task_group() as group:
                    for task in nxt["tasks"]:
                        group.start_soon(agent.work, task)
                continue
            if nxt["needs_human"]:
                for item in nxt["needs_human"]:
                    if item["cell_id"] in resolved:
                        raise PetriError(f"the demo script expected {item['cell_id']} to be resolved once")
                    resolved.add(item["cell_id"])
                    say(f"  needs a human: {item['cell_id']}: {item['reason']}")
                    say(
                        f'  [simulated human] petri resolve {item["cell_id"]} --requeue --guidance "{GUIDANCE}"'
                    )
                    svc.resolve(item["cell_id"], "requeue", guidance=GUIDANCE)
                continue
            raise PetriError(f"the demo is stuck: {nxt['hint']}")


def run_demo(dish: Path, say: Say = print) -> str:
    """Run the scripted demo into `dish`; returns the run id."""
    import logging

    from ..fetch import FetchPolicy

    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    svc = Service(dish, fetch_policy=FetchPolicy(allow_private=True))
    say("SIMULATION — a scripted agent plays every role; no language model is involved.")
    say(f"Claim: {CLAIM}")
    with serve_pages() as base:
        say(f"Bundled pages served at {base} (a fictional town; the pages are fixtures).")
        try:
            return anyio.run(_run, svc, base, say)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The first real error inside nested task-group exception groups."""
    for exc in group.exceptions:
        return _first_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
    return group
