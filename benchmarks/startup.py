"""P6: `petri mcp` from spawn to its first tools/list answer, and `petri --help`, as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from .common import Row, Sizes, petri_command, run_petri, spread, timed

MCP_LIMIT_S = 1.0
HELP_LIMIT_S = 0.3


async def first_answer(dish: Path) -> float:
    """Seconds from spawning `petri mcp` to the reply of its first tools/list (initialize included)."""
    command = petri_command()
    params = StdioServerParameters(
        command=command[0], args=[*command[1:], "mcp"], env={**os.environ, "PETRI_HOME": str(dish)}
    )
    start = time.perf_counter()
    async with Client(params, mode="legacy") as client:
        tools = await client.list_tools()
        elapsed = time.perf_counter() - start
    if not tools.tools:
        raise RuntimeError("petri mcp listed no tools")
    return elapsed


def run(sizes: Sizes) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="petri-p6-") as tmp:
        dish = Path(tmp) / ".petri"
        if not sizes.quick:
            anyio.run(first_answer, dish)  # warm the page cache
        mcp = [anyio.run(first_answer, dish) for _ in range(sizes.repeats)]
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
            mcp,
            target=f"≤ {MCP_LIMIT_S} s",
            limit=MCP_LIMIT_S,
        ),
        spread("P6", "`petri --help`", helps, target=f"≤ {HELP_LIMIT_S} s", limit=HELP_LIMIT_S),
        spread("P6", "`python -c pass` (interpreter floor)", bare),
        spread("P6", "`python -c 'import mcp.server'` (the MCP SDK's import alone)", sdk),
    ]
