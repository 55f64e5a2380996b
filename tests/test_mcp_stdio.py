"""The real server as a subprocess over stdio: a short scenario, concurrency over one pipe, and
two server processes racing on one dish."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from helpers import ARTICLE, free_port, passing
from mcp import Client, StdioServerParameters

from petri_core.service import Service

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def server(home: Path) -> StdioServerParameters:
    env = {**os.environ, "PETRI_HOME": str(home)}
    return StdioServerParameters(command=sys.executable, args=["-m", "petri_core", "mcp"], env=env)


async def call(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
    assert result.structured_content is not None
    return result.structured_content


def seed_source(home: Path) -> str:
    import hashlib

    svc = Service(home)
    digest = hashlib.sha256(ARTICLE.encode()).hexdigest()
    return svc.add_source(
        url="https://example.org/r",
        final_url="https://example.org/r",
        status=200,
        content_type="text/html",
        fetched_at=svc.now(),
        content_hash=digest,
        title="R",
        author=None,
        published="2026-01-01",
        text=ARTICLE,
    ).source_id


async def test_a_short_scenario_over_real_stdio_with_concurrent_calls_on_one_pipe(tmp_path: Path) -> None:
    home = tmp_path / ".petri"
    src = seed_source(home)
    ok = passing(src)
    async with Client(server(home), mode="legacy") as client:
        assert client.protocol_version == "2025-11-25"
        start = await call(
            client, "petri_start", {"claim": "Heat pumps cut household emissions", "preset": "quick"}
        )
        results: list[dict[str, Any]] = []

        async def status() -> None:
            results.append(await call(client, "petri_status", {}))

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(status)
        assert len(results) == 6 and all(r["runs"][0]["run_id"] == start["run_id"] for r in results)
        while True:
            nxt = await call(client, "petri_next", {"run_id": start["run_id"]})
            if nxt["done"]:
                break
            for task in nxt["tasks"]:
                claim = await call(
                    client, "petri_claim", {"task_id": task["task_id"], "worker": task["agent"]}
                )
                result = (
                    {"atomic": True, "bedrock_reason": "measurable"}
                    if task["kind"] == "decompose"
                    else ok[task["role"]]
                )
                await call(
                    client,
                    "petri_submit",
                    {"task_id": task["task_id"], "lease": claim["lease"], "result": result},
                )
    final = Service(home).status(start["run_id"])["runs"][0]
    assert (final["state"], final["root_state"]) == ("complete", "validated")
    assert Service(home).verify().ok


async def test_two_server_processes_never_lease_one_task_twice(tmp_path: Path) -> None:
    home = tmp_path / ".petri"
    svc = Service(home)
    runs = []
    for claim in ("Heat pumps cut emissions", "Solar payback is short", "Wind is cheap", "EVs are cleaner"):
        run = svc.start(claim, preset="quick")
        runs.append(run.run_id)
        task = run.tasks[0].task_id
        lease = svc.claim(task, "seed").lease
        svc.submit(
            task,
            lease,
            {
                "atomic": False,
                "children": [
                    {
                        "text": f"{claim}: evidence number {i} holds",
                        "atomic": True,
                        "bedrock_reason": "measured",
                    }
                    for i in range(1, 5)
                ],
            },
        )
    ready = [t.task_id for run_id in runs for t in svc.next(run_id, limit=50).tasks]
    assert len(ready) == 16
    wins: dict[str, list[str]] = {"a": [], "b": []}
    losses: list[str] = []

    async def racer(name: str) -> None:
        async with Client(server(home), mode="legacy") as client:
            for task_id in ready:
                result = await client.call_tool(
                    "petri_claim", {"task_id": task_id, "worker": f"server-{name}"}
                )
                if result.is_error:
                    losses.append(result.content[0].text)  # type: ignore[union-attr]
                else:
                    wins[name].append(task_id)

    async with anyio.create_task_group() as tg:
        tg.start_soon(racer, "a")
        tg.start_soon(racer, "b")
    claimed = wins["a"] + wins["b"]
    assert sorted(claimed) == sorted(ready), "every task leased exactly once"
    assert len(losses) == len(ready) and all(
        "rejected: " in m and "is leased by server-" in m for m in losses
    )
    events = svc.log(types=["task_claimed"])
    assert len(events) == len(ready) + 4 and len({e["task_id"] for e in events}) == len(ready) + 4
    assert json.dumps(svc.verify().problems) == "[]"


async def test_streamable_http_on_loopback(tmp_path: Path) -> None:
    import socket
    import subprocess

    port = free_port()
    env = {**os.environ, "PETRI_HOME": str(tmp_path / ".petri")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "petri_core", "mcp", "--http", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                await anyio.sleep(0.1)
        for mode in ("legacy", "auto"):
            async with Client(f"http://127.0.0.1:{port}/mcp", mode=mode) as client:
                start = await call(client, "petri_start", {"claim": f"HTTP works in {mode} mode"})
                assert start["tasks"][0]["agent"] == "petri-decomposer"
        # A web page cannot reach the server through the user's browser: a rebound host name or a
        # foreign origin is refused before any tool runs (the SDK's DNS-rebinding protection, on
        # for a loopback bind).
        start_call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "petri_start", "arguments": {"claim": "A page in a browser tab started this"}},
        }
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        async with httpx2.AsyncClient() as web:
            url = f"http://127.0.0.1:{port}/mcp"
            rebound = await web.post(
                url, json=start_call, headers={**headers, "Host": f"evil.example:{port}"}
            )
            foreign = await web.post(
                url, json=start_call, headers={**headers, "Origin": "https://evil.example"}
            )
        assert (rebound.status_code, foreign.status_code) == (421, 403)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert len(Service(tmp_path / ".petri").status()["runs"]) == 2


def test_http_on_a_taken_or_impossible_port_fails_in_one_line(tmp_path: Path) -> None:
    import socket
    import subprocess

    env = {**os.environ, "PETRI_HOME": str(tmp_path / ".petri")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [sys.executable, "-m", "petri_core", "mcp", "--http", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert busy.returncode == 1 and busy.stdout == ""
    assert (
        busy.stderr
        == f"Error: cannot serve on 127.0.0.1:{port}: Address already in use; choose a free port: --http PORT\n"
    )
    wild = subprocess.run(
        [sys.executable, "-m", "petri_core", "mcp", "--http", "99999"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wild.returncode == 2 and "Traceback" not in wild.stderr
    assert "Invalid value for '--http': 99999 is not in the range 1<=x<=65535" in wild.stderr
