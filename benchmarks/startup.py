"""P6: `petri mcp` from spawn to its first tools/list answer and first tool call, and `petri --help`,
as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from petri_core.service import Service

from .common import Row, Sizes, petri_command, run_petri, spread, timed

MCP_LIMIT_S = 1.0
HELP_LIMIT_S = 0.3


async def first_answers(dish: Path) -> tuple[float, float]:
    """Seconds from spawning `petri mcp` to the reply of its first tools/list (initialize included),
    and on to the reply of a first tool call (`petri_status`), which needs the MCP SDK loaded."""
    command = petri_command()
    params = StdioServerParameters(
        command=command[0], args=[*command[1:], "mcp"], env={**os.environ, "PETRI_HOME": str(dish)}
    )
    start = time.perf_counter()
    async with Client(params, mode="legacy") as client:
        tools = await client.list_tools()
        listed = time.perf_counter() - start
        status = await client.call_tool("petri_status", {})
        called = time.perf_counter() - start
    if not tools.tools or status.is_error:
        raise RuntimeError(f"petri mcp listed no tools or failed petri_status: {status}")
    return listed, called


CLAUDE_CODE = {"name": "claude-code", "title": "Claude Code", "version": "2.1.330"}


def modern_start(dish: Path) -> float:
    """Seconds from spawning `petri mcp` to the end of a 2026-07-28 start as Claude Code makes it
    (HARNESS_NOTES §5): a `server/discover` probe; `subscriptions/listen`, whose acknowledgement
    it waits for; then discovery and the prompt, resource and tool lists at once."""
    command = petri_command()
    proc = subprocess.Popen(
        [*command, "mcp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PETRI_HOME": str(dish)},
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": CLAUDE_CODE,
        "io.modelcontextprotocol/clientCapabilities": {"roots": {"listChanged": True}},
    }
    flags = {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True}

    def send(*requests: tuple[object, str, dict[str, object]]) -> None:
        for ident, method, params in requests:
            message = {"jsonrpc": "2.0", "id": ident, "method": method, "params": {**params, "_meta": meta}}
            stdin.write((json.dumps(message) + "\n").encode())
        stdin.flush()

    def await_(wanted: set[object]) -> None:
        while wanted:
            message = json.loads(stdout.readline())
            if "error" in message:
                raise RuntimeError(f"petri mcp refused a start request: {message}")
            meta_id = message.get("params", {}).get("_meta", {}).get("io.modelcontextprotocol/subscriptionId")
            wanted.discard(message.get("id") if "id" in message else ("ack", meta_id))

    start = time.perf_counter()
    try:
        send(("probe", "server/discover", {}))
        await_({"probe"})
        send(("listen:0", "subscriptions/listen", {"notifications": flags}))
        await_({("ack", "listen:0")})
        send(
            *(
                (n, m, {})
                for n, m in enumerate(("server/discover", "prompts/list", "resources/list", "tools/list"))
            )
        )
        await_({0, 1, 2, 3})
        return time.perf_counter() - start
    finally:
        stdin.close()
        proc.wait(60)


def run(sizes: Sizes) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="petri-p6-") as tmp:
        dish = Path(tmp) / ".petri"
        Service(dish).start("Heat pumps cut household heating emissions", preset="quick")
        if not sizes.quick:
            anyio.run(first_answers, dish)  # warm the page cache
        answers = [anyio.run(first_answers, dish) for _ in range(sizes.repeats)]
        modern = [modern_start(dish) for _ in range(sizes.repeats)]
    if not sizes.quick:
        run_petri(["--help"])
    helps = [run_petri(["--help"])[0] for _ in range(sizes.repeats)]
    bare = [
        timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
        for _ in range(sizes.repeats)
    ]
    sdk = [
        timed(lambda: subprocess.run([sys.executable, "-c", "import mcp.server"], check=True))
        for _ in range(sizes.repeats)
    ]
    return [
        spread(
            "P6",
            "`petri mcp`: spawn → first tools/list reply",
            [listed for listed, _ in answers],
            target=f"≤ {MCP_LIMIT_S} s",
            limit=MCP_LIMIT_S,
        ),
        spread(
            "P6",
            "`petri mcp`: spawn → first tool call's reply (`petri_status`: the SDK loaded)",
            [called for _, called in answers],
        ),
        spread(
            "P6",
            "`petri mcp`: spawn → a 2026-07-28 start answered (probe, listen acknowledged, lists), as Claude Code opens",
            modern,
        ),
        spread("P6", "`petri --help`", helps, target=f"≤ {HELP_LIMIT_S} s", limit=HELP_LIMIT_S),
        spread("P6", "`python -c pass` (interpreter floor)", bare),
        spread("P6", "`python -c 'import mcp.server'` (the MCP SDK's import alone)", sdk),
    ]
