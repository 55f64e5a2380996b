"""A long-lived worker process for the crash trials: one burst of claims and submissions per command.

python tests/reliability/_crash_worker.py service|mcp NAME
    prints `ready`, then reads one JSON command per line from stdin:
    {"dish": DIR, "source_id": ID, "run_ids": [...], "seed": N}. For each it claims and submits
    ready tasks (through the service, or through the MCP server hosted in this process with the
    in-process client) until its runs are done or nothing has been ready for a while, printing
    `claimed TASK LEASE` / `submitted TASK LEASE` after each commit and `idle` at the end.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))

from _proc_worker import policy

from petri_core.errors import Rejected
from petri_core.models import ClaimOut, TaskOut
from petri_core.service import Service

IDLE_S = 0.4


def say(line: str) -> None:
    print(line, flush=True)


class ServiceDoor:
    """Claims and submissions straight through the service."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    async def next(self, run_id: str) -> tuple[bool, list[TaskOut]]:
        nxt = self.svc.next(run_id, limit=5)
        return nxt.done, nxt.tasks

    async def claim(self, task_id: str, worker: str) -> ClaimOut:
        return self.svc.claim(task_id, worker)

    async def submit(self, task_id: str, lease: str, result: dict[str, Any]) -> None:
        self.svc.submit(task_id, lease, result)


class McpDoor:
    """The same calls as tool calls to the MCP server running in this process."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def _call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.client.call_tool(name, args)
        if result.is_error:
            text = result.content[0].text
            if text.startswith("rejected: "):
                raise Rejected(text, "")
            raise RuntimeError(text)
        out: dict[str, Any] = result.structured_content
        return out

    async def next(self, run_id: str) -> tuple[bool, list[TaskOut]]:
        nxt = await self._call("petri_next", {"run_id": run_id, "limit": 5})
        return nxt["done"], [TaskOut(**t) for t in nxt["tasks"]]

    async def claim(self, task_id: str, worker: str) -> ClaimOut:
        return ClaimOut(**await self._call("petri_claim", {"task_id": task_id, "worker": worker}))

    async def submit(self, task_id: str, lease: str, result: dict[str, Any]) -> None:
        await self._call("petri_submit", {"task_id": task_id, "lease": lease, "result": result})


async def burst(door: Any, name: str, command: dict[str, Any]) -> None:
    rng = random.Random(f"{name}-{command['seed']}")
    play = policy(command["source_id"])
    run_ids: list[str] = command["run_ids"]
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < IDLE_S:
        offered: list[TaskOut] = []
        done = True
        for run_id in rng.sample(run_ids, len(run_ids)):
            finished, tasks = await door.next(run_id)
            done = done and finished
            if tasks:
                offered = tasks
                break
        if done:
            return
        if not offered:
            time.sleep(0.01)
            continue
        quiet_since = time.monotonic()
        task = rng.choice(offered[:2])  # few choices: the workers collide on purpose
        try:
            claim = await door.claim(task.task_id, name)
        except Rejected:
            continue
        say(f"claimed {task.task_id} {claim.lease}")
        time.sleep(rng.uniform(0.02, 0.05))  # the agent's work between claim and submit
        await door.submit(task.task_id, claim.lease, play(task, claim))
        say(f"submitted {task.task_id} {claim.lease}")


async def serve_commands(mode: str, name: str) -> None:
    if mode == "mcp":  # imported before `ready`: a service worker never pays for it
        from mcp import Client

        from petri_core.mcp_server import build
    say("ready")
    for line in sys.stdin:
        command = json.loads(line)
        svc = Service(Path(command["dish"]))
        if mode == "mcp":
            async with Client(build(svc), mode="legacy") as client:
                await burst(McpDoor(client), name, command)
        else:
            await burst(ServiceDoor(svc), name, command)
        say("idle")


if __name__ == "__main__":
    import anyio

    anyio.run(serve_commands, sys.argv[1], sys.argv[2])
