"""`petri demo`: the whole workflow, offline, with a scripted agent — a simulation, labelled as one.

A built-in scripted agent plays every role for a bundled claim about a fictional town, against
bundled pages served on 127.0.0.1, through the real service and the real MCP tools (an
in-process MCP client). It shows decomposition, research with verified citations, a failed
convergence and its iteration, a stall resolved as a human would, and the verdicts bottom-up.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio

from ..errors import PetriError
from ..service import Service

PAGES = Path(__file__).parent / "pages"
CLAIM = "Riverton's 2025 bike lanes cut downtown car traffic by a fifth"
COUNTS = "Downtown car counts fell by about a fifth after the lanes opened in 2025"
CAUSE = "The fall in downtown car traffic was caused by the bike lanes rather than other changes"
MOVED = "Car traffic merely moved from downtown to the ring road and neighbouring streets"
GUIDANCE = "Use the city's open-data counts for the ring road and residential streets"
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


def sentence(text: str, *needles: str) -> str:
    """The sentence of a fetched page that holds every needle (the agent quotes what it read)."""
    for part in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
        if all(n.lower() in part.lower() for n in needles):
            return part.strip()
    raise LookupError(f"no sentence with {needles!r} in the page")


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

    async def cite(self, page: str, stance: str, level: int, *needles: str) -> dict[str, Any]:
        got = await self.fetch(page)
        quote = sentence(got["text"], *needles)
        return {
            "source_id": got["source_id"],
            "quote": quote,
            "stance": stance,
            "level": level,
            "finding": f"{got['title']}: {quote[:80]}",
        }

    async def work(self, task: dict[str, Any]) -> None:
        claim = await self.call("petri_claim", {"task_id": task["task_id"], "worker": task["agent"]})
        context = claim["context"]
        text, iteration = context["cell"]["claim"], context["cell"]["iteration"]
        result = await self.decide(task, text, iteration, context)
        if result is None:
            reason = "the only source on displaced traffic is a paywalled newspaper archive"
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
        role, kind = task["role"], task["kind"]
        if kind == "decompose":
            shared = await self.call("petri_cells", {"text": COUNTS})
            self.say(
                f"    petri-decomposer looked for shared premises: {len(shared['cells'])} similar cell(s)"
            )
            return {
                "atomic": False,
                "children": [
                    {
                        "text": COUNTS,
                        "relation": "supports",
                        "atomic": True,
                        "bedrock_reason": "a measured count, checkable against the city's traffic data",
                    },
                    {
                        "text": CAUSE,
                        "relation": "supports",
                        "atomic": True,
                        "bedrock_reason": "a causal question answered by one controlled comparison",
                    },
                    {
                        "text": MOVED,
                        "relation": "rebuts",
                        "atomic": True,
                        "bedrock_reason": "a measured count on the surrounding roads",
                    },
                ],
            }
        if kind == "debate":
            return {"response": f"The {role} has weighed the argument; the measured counts still stand."}
        if role == "cell-lead":
            return {
                "summary": f"Iteration {iteration}: the skeptic showed the bridge closure may explain the drop.",
                "directive": context.get("directive", "Address the skeptic's objection."),
            }
        return await self.assess(role, text, iteration)

    async def assess(self, role: str, text: str, iteration: int) -> dict[str, Any] | None:
        if text == MOVED and role == "investigator" and iteration == 1:
            return None  # a stall: the agent honestly gives the task back for a human
        if role == "investigator":
            if text == MOVED:
                return {
                    "verdict": "EVIDENCE_CONTRADICTS",
                    "summary": "Counts on the surrounding roads did not rise.",
                    "citations": [
                        await self.cite("ring-road-counts", "contradicts", 1, "ring road averaged"),
                        await self.cite("transport-study", "contradicts", 3, "did not rise"),
                    ],
                }
            if text == CAUSE and iteration >= 2:
                return {
                    "verdict": "EVIDENCE_SUFFICIENT",
                    "summary": "A controlled study isolates the lanes' effect.",
                    "citations": [
                        await self.cite("transport-study", "supports", 3, "After adjusting"),
                        await self.cite("transport-study", "supports", 3, "robust to excluding"),
                    ],
                }
            page = "traffic-report" if text in (COUNTS, CLAIM) else "transport-study"
            return {
                "verdict": "EVIDENCE_SUFFICIENT",
                "summary": "Primary measurements support the claim.",
                "citations": [
                    await self.cite("traffic-report", "supports", 1, "fell from 41,200"),
                    await self.cite(
                        page,
                        "supports",
                        1 if page == "traffic-report" else 3,
                        "opened in March" if page == "traffic-report" else "After adjusting",
                    ),
                ],
            }
        if role == "freshness-checker":
            return {"verdict": "EVIDENCE_CURRENT", "summary": "Every cited source was published in 2025."}
        if role == "skeptic":
            if text == CAUSE and iteration == 1:
                return {
                    "verdict": "CRITICAL_FLAW_FOUND",
                    "summary": "The Old Mill Bridge closure diverted traffic in the same months; the lanes may "
                    "not be the cause.",
                    "citations": [
                        await self.cite("bridge-closure", "contradicts", 4, "diverting an estimated")
                    ],
                }
            return {
                "verdict": "ARGUMENT_WITHSTANDS_CRITIQUE",
                "summary": "No objection survives the evidence.",
            }
        if role == "champion":
            if text == MOVED:
                return {"verdict": "CANNOT_DEFEND", "summary": "Only an opinion blog supports displacement."}
            return {
                "verdict": "STRONG_CASE",
                "summary": "Measured counts and a controlled study agree.",
                "citations": [await self.cite("traffic-report", "supports", 1, "fell from 41,200")],
            }
        if role == "red-team":
            return {
                "verdict": "WEAK_DISPROVAL_CASE",
                "summary": "A driver's blog claims traffic moved to side streets.",
                "citations": [await self.cite("opinion-blog", "contradicts", 6, "side streets")],
            }
        if role == "evaluator":
            return {
                "verdict": "EVIDENCE_REFUTES" if text == MOVED else "EVIDENCE_CONFIRMS",
                "summary": "Weighed the measured counts, the controlled study and the objections.",
            }
        raise LookupError(f"the demo script has no part for {role}")


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
