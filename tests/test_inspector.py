"""The MCP Inspector CLI (a third-party client, pinned in tests/harness) lists the tools and calls one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from petri_core.service import Service

INSPECTOR = Path(__file__).parent / "harness" / "node_modules" / ".bin" / "mcp-inspector"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not INSPECTOR.exists(),
    reason="Node or the pinned inspector is absent (.ci/run runs npm install)",
)


def inspector(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(INSPECTOR),
            "--cli",
            sys.executable,
            "-m",
            "petri_core",
            "mcp",
            "-e",
            f"PETRI_HOME={home}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_inspector_lists_the_tools_and_calls_petri_status(tmp_path: Path) -> None:
    home = tmp_path / ".petri"
    run = Service(home).start("The inspector can talk to Petri")
    listed = inspector(home, "--method", "tools/list")
    assert listed.returncode == 0, listed.stderr
    names = {t["name"] for t in json.loads(listed.stdout)["tools"]}
    assert {"petri_start", "petri_next", "petri_claim", "petri_submit", "petri_status"} <= names
    status = inspector(home, "--method", "tools/call", "--tool-name", "petri_status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["structuredContent"]["runs"][0]["run_id"] == run.run_id
    refused = inspector(
        home,
        "--method",
        "tools/call",
        "--tool-name",
        "petri_claim",
        "--tool-arg",
        "task_id=nope",
        "--tool-arg",
        "worker=w",
    )
    assert refused.returncode != 0 and "rejected: no task 'nope'" in refused.stdout
