"""P6: `petri mcp` from spawn to its first tools/list answer and first tool call, and `petri --help`,
as real processes."""

from __future__ import annotations

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


def run(sizes: Sizes) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="petri-p6-") as tmp:
        dish = Path(tmp) / ".petri"
        Service(dish).start("Heat pumps cut household heating emissions", preset="quick")
        if not sizes.quick:
            anyio.run(first_answers, dish)  # warm the page cache
        answers = [anyio.run(first_answers, dish) for _ in range(sizes.repeats)]
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
        spread("P6", "`petri --help`", helps, target=f"≤ {HELP_LIMIT_S} s", limit=HELP_LIMIT_S),
        spread("P6", "`python -c pass` (interpreter floor)", bare),
        spread("P6", "`python -c 'import mcp.server'` (the MCP SDK's import alone)", sdk),
    ]
