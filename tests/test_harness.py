"""The skill pack in the real Claude Code and OpenCode binaries (pinned in tests/harness), offline.

A scripted model on 127.0.0.1 (tests/harness/fake_model.py) plays the main agent and every
subagent by reading the conversation, as a model following Petri's skills would. Nothing here
trusts a harness's exit code: the assertions read Petri's own store, the harness's own output
and the model-request log.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness.fake_model import FakeModel

from petri_core.demo import serve_pages
from petri_core.demo.script import CAUSE, CLAIM
from petri_core.roster import ROLES
from petri_core.service import Service

REPO = Path(__file__).parent.parent
BIN = REPO / "tests" / "harness" / "node_modules" / ".bin"
VENV_BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.harness,
    pytest.mark.skipif(
        shutil.which("node") is None, reason="Node is absent: the harness binaries cannot run"
    ),
]


@pytest.fixture(autouse=True)
def binaries_installed() -> None:
    """With Node present, a missing install is a failure, not a skip: CI must have run npm install."""
    missing = [name for name in ("claude", "opencode") if not (BIN / name).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run `npm install` in tests/harness (.ci/run does)")


@dataclass(frozen=True)
class Harness:
    """One harness's names, so the assertions below read the same for both."""

    name: str
    petri_prefix: str
    agent_tool: str
    skill_tool: str


CLAUDE = Harness("claude", "mcp__plugin_petri_petri__", "Agent", "Skill")
OPENCODE = Harness("opencode", "petri_", "task", "skill")
PRIVACY = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_MAX_RETRIES": "0",
    "ENABLE_TOOL_SEARCH": "false",  # MCP tools inline, so the request log shows they were offered
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    "npm_config_offline": "true",
}


@dataclass
class Lab:
    root: Path
    project: Path
    dish: Path
    model: FakeModel

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{VENV_BIN}:{BIN}:/usr/bin:/bin",
            "HOME": str(self.root / "home"),
            "TERM": "dumb",
            "ANTHROPIC_BASE_URL": self.model.url,
            "ANTHROPIC_API_KEY": "sk-ant-fake",
            "PETRI_HOME": str(self.dish),
            "PETRI_FETCH_ALLOW_PRIVATE": "1",  # the bundled pages are served on 127.0.0.1
            "HTTPS_PROXY": self.model.url,  # a tripwire: any outbound HTTPS shows as CONNECT
            "NO_PROXY": "127.0.0.1,localhost",
            **PRIVACY,
        }

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run with stdout and stderr in files, not pipes: OpenCode (Bun) can exit before a pipe
        is drained and lose the tail of its output (seen with `opencode agent list`)."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(
                args, cwd=self.project, env=self.env(), stdout=out, stderr=err, timeout=timeout
            )
            out.seek(0)
            err.seek(0)
            text = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
        return subprocess.CompletedProcess(args, proc.returncode, *text)

    def requests(self) -> list[dict[str, Any]]:
        return self.model.requests()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    (tmp_path / "home").mkdir()
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    with serve_pages() as pages, FakeModel(tmp_path / "requests.jsonl", pages_url=pages, children=2) as model:
        yield Lab(tmp_path, project, tmp_path / "dish", model)


def events(lines: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines.splitlines() if line.startswith("{")]


def prompt() -> str:
    return f"[[petri:main]] Research this claim with Petri. claim: {CLAIM}"


def claude_main(lab: Lab, *extra: str) -> subprocess.CompletedProcess[str]:
    return lab.run(
        "claude",
        "-p",
        prompt(),
        "--output-format",
        "stream-json",
        "--verbose",
        "--no-session-persistence",
        "--plugin-dir",
        str(REPO),
        *extra,
    )


def assert_research_happened(lab: Lab, harness: Harness) -> None:
    """Petri's store: a decomposition into two cells, a failed convergence that iterated, a root
    verdict, every task claimed and submitted by the agent of its own role, a verified log."""
    svc = Service(lab.dish)
    st = svc.open(create=False)
    run = st.latest_run()
    assert run is not None and run.state == "complete", run
    cells = {c.cell_id: c for c in st.cells(run.run_id)}
    root = cells[run.root_cell_id]
    assert root.state == "validated" and len(cells) == 3
    cause = next(c for c in cells.values() if c.text == CAUSE)
    assert cause.iteration == 2 and cause.state == "validated"  # the skeptic's flaw failed iteration 1
    assert any(t.iteration == 1 and t.role == "skeptic" for t in st.tasks_of_cell(cause.cell_id))
    log = svc.log()
    claims = {e["task_id"]: e["payload"]["worker"] for e in log if e["type"] == "task_claimed"}
    tasks = [t for c in cells for t in st.tasks_of_cell(c)]
    assert tasks and all(t.status == "done" for t in tasks)
    for task in tasks:  # the subagent the harness started was the one for the task's role
        assert claims[task.task_id] == f"petri-{task.role}", (task.task_id, claims[task.task_id])
    assert {e["type"] for e in log} >= {
        "task_submitted",
        "citation_recorded",
        "source_fetched",
        "convergence_checked",
    }
    assert svc.verify().ok
    st.close()

    requests = lab.requests()
    assert not [r for r in requests if r["method"] == "CONNECT"], "the harness reached for the internet"
    replies = json.dumps([r.get("reply") for r in requests])
    assert "PETRI-E2E-FAILED" not in replies and "PETRI-E2E-REJECTED" not in replies
    offered = {name for r in requests for name in tool_names(r)}
    assert {
        harness.petri_prefix + t for t in ("petri_start", "petri_next", "petri_claim", "petri_submit")
    } <= offered
    dispatched = {
        call[1]["subagent_type"]
        for r in requests
        for call in (r.get("reply") or {}).get("calls", [])
        if call[0] == harness.agent_tool
    }
    assert len(dispatched) >= 4  # decomposer, investigator, skeptic, evaluator


def tool_names(request: dict[str, Any]) -> list[str]:
    body = request.get("body") or {}
    return [t.get("name") or t.get("function", {}).get("name") for t in body.get("tools", [])]


def worker_requests(lab: Lab) -> list[dict[str, Any]]:
    return [
        r
        for r in lab.requests()
        if "[[petri:worker]]" in json.dumps((r.get("body") or {}).get("messages", [])[:3])
    ]


# --- static checks, no model --------------------------------------------------------------------


def test_claude_validates_the_plugin_and_marketplace_strictly(lab: Lab) -> None:
    out = lab.run("claude", "plugin", "validate", "--strict", str(REPO), timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(lab.run("claude", "plugin", "validate", "--json", str(REPO), timeout=60).stdout)
    provides = report["provides"]
    assert set(provides["skills"]) == {"petri:petri", "petri:petri-worker"}
    assert set(provides["agents"]) == {f"petri:petri-{r}" for r in ROLES}
    assert [s["name"] for s in provides["mcpServers"]] == ["petri"]


def test_claude_installs_from_the_repo_marketplace_and_connects_to_petri(lab: Lab) -> None:
    added = lab.run("claude", "plugin", "marketplace", "add", str(REPO), timeout=60)
    assert added.returncode == 0, added.stderr
    installed = lab.run("claude", "plugin", "install", "petri@petri-market", timeout=60)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    plugins = json.loads(lab.run("claude", "plugin", "list", "--json", timeout=60).stdout)
    assert [(p["id"], p["enabled"]) for p in plugins] == [("petri@petri-market", True)]
    servers = lab.run("claude", "mcp", "list", timeout=120)
    assert re.search(r"plugin:petri:petri: .*Connected", servers.stdout), servers.stdout + servers.stderr


def test_a_broken_agent_file_fails_claude_strict_validation(lab: Lab) -> None:
    copy = lab.root / "pack"
    shutil.copytree(REPO / "agents", copy / "agents")
    shutil.copytree(REPO / "skills", copy / "skills")
    shutil.copytree(REPO / ".claude-plugin", copy / ".claude-plugin")
    assert lab.run("claude", "plugin", "validate", "--strict", str(copy), timeout=60).returncode == 0
    broken = copy / "agents" / "petri-skeptic.md"
    broken.write_text(broken.read_text().split("---\n", 2)[2])  # the frontmatter is gone
    out = lab.run("claude", "plugin", "validate", "--strict", str(copy), timeout=60)
    assert out.returncode == 1 and "petri-skeptic" in out.stdout + out.stderr


def install_opencode(lab: Lab) -> None:
    out = lab.run(
        "petri", "install", "opencode", "--local-model", f"{lab.model.url}/v1/fake-qwen", timeout=60
    )
    assert out.returncode == 0, out.stderr


def test_opencode_loads_the_installed_agents_skills_and_server(lab: Lab) -> None:
    install_opencode(lab)
    agents = lab.run("opencode", "agent", "list", timeout=120)
    assert agents.returncode == 0, agents.stderr
    for role in ROLES:
        assert re.search(rf"^petri-{role} \(all\)", agents.stdout, re.M)
    config = json.loads(lab.run("opencode", "debug", "config", timeout=120).stdout)
    assert config["mcp"]["petri"]["type"] == "local" and config["model"] == "petri-local/fake-qwen"
    skills = {s["name"] for s in json.loads(lab.run("opencode", "debug", "skill", timeout=120).stdout)}
    assert {"petri", "petri-worker"} <= skills
    investigator = json.loads(lab.run("opencode", "debug", "agent", "petri-investigator", timeout=120).stdout)
    allowed = {k for k, v in investigator["tools"].items() if v}
    assert allowed <= {"websearch"}  # no file, shell or task tools; websearch only where the provider has it
    rules = {(p["permission"], p["action"]) for p in investigator["permission"]}
    assert ("*", "deny") in rules and ("petri_petri_submit", "allow") in rules
    servers = lab.run("opencode", "mcp", "list", timeout=120)
    assert re.search(r"petri\s.*connected", servers.stdout + servers.stderr), servers.stdout + servers.stderr


def test_a_claude_format_agent_file_breaks_opencode_config(lab: Lab) -> None:
    install_opencode(lab)
    shutil.copy(
        REPO / "agents" / "petri-skeptic.md", lab.project / ".opencode" / "agent" / "petri-skeptic.md"
    )
    out = lab.run("opencode", "debug", "config", timeout=120)
    assert out.returncode == 1 and "petri-skeptic.md" in out.stdout + out.stderr


# --- end to end ---------------------------------------------------------------------------------


def test_claude_code_researches_a_claim_through_petri(lab: Lab) -> None:
    out = claude_main(lab, "--allowedTools", "mcp__plugin_petri_petri")
    stream = events(out.stdout)
    assert stream, out.stderr[-2000:]
    init = next(e for e in stream if e.get("type") == "system" and e.get("subtype") == "init")
    assert any(p["name"] == "petri" and p["path"] == str(REPO) for p in init["plugins"])
    assert "petri:petri" in init["skills"] and "petri:petri-investigator" in init["agents"]
    assert [s["name"] for s in init["mcp_servers"]] == ["plugin:petri:petri"]
    result = stream[-1]
    assert result["type"] == "result" and result["permission_denials"] == [], result
    assert result["result"].startswith("PETRI-E2E-DONE")
    tool_errors = [
        block
        for e in stream
        if e.get("type") == "user"
        for block in (e["message"]["content"] if isinstance(e["message"]["content"], list) else [])
        if block.get("is_error")
    ]
    assert tool_errors == []
    assert_research_happened(lab, CLAUDE)
    requests = lab.requests()
    system_turn = json.dumps([m for m in requests[0]["body"]["messages"] if m["role"] == "system"])
    assert "petri:petri-investigator" in system_turn and "petri:petri" in system_turn
    for request in worker_requests(lab):  # each subagent got only its agent file's tools
        assert set(tool_names(request)) <= {CLAUDE.petri_prefix + t for t in PETRI_TOOLS} | {"WebSearch"}


PETRI_TOOLS = {
    "petri_claim",
    "petri_submit",
    "petri_fail",
    "petri_heartbeat",
    "petri_fetch",
    "petri_search",
    "petri_cells",
}


def test_without_the_tool_grant_claude_denies_petri_and_the_store_is_unchanged(lab: Lab) -> None:
    out = claude_main(lab)  # no --allowedTools
    result = events(out.stdout)[-1]
    assert result["type"] == "result" and out.returncode == 0  # "success", as the notes warn
    denied = {d["tool_name"] for d in result["permission_denials"]}
    assert CLAUDE.petri_prefix + "petri_start" in denied
    assert not (lab.dish / "petri.db").exists() or not Service(lab.dish).log()


def test_opencode_researches_a_claim_through_petri_with_a_local_model(lab: Lab) -> None:
    install_opencode(lab)
    out = lab.run("opencode", "run", "--format", "json", prompt(), timeout=400)
    stream = events(out.stdout)
    assert stream, out.stderr[-2000:]
    uses = [e["part"] for e in stream if e.get("type") == "tool_use"]
    assert uses and all(u["state"]["status"] == "completed" for u in uses), [
        (u["tool"], u["state"].get("error")) for u in uses if u["state"]["status"] != "completed"
    ]
    assert {u["tool"] for u in uses} >= {"skill", "task", "petri_petri_start", "petri_petri_next"}
    texts = [e["part"]["text"] for e in stream if e.get("type") == "text"]
    assert texts and texts[-1].startswith("PETRI-E2E-DONE")
    assert_research_happened(lab, OPENCODE)
    requests = [r for r in lab.requests() if r["method"] == "POST" and tool_names(r)]
    main_system = json.dumps(requests[0]["body"]["messages"][0])
    assert "<available_skills>" in main_system and "<name>petri</name>" in main_system
    task_tool = next(t for t in requests[0]["body"]["tools"] if t["function"]["name"] == "task")
    assert "petri-investigator" in task_tool["function"]["description"]
    for request in worker_requests(lab):
        assert "task" not in tool_names(request)
        assert (
            set(tool_names(request)) <= {"petri_" + t for t in PETRI_TOOLS} | {"websearch"} | OPENCODE_ALWAYS
        )


OPENCODE_ALWAYS = {"invalid", "list_mcp_resources", "list_mcp_resource_templates", "read_mcp_resource"}


# --- petri run: Python dispatches, one real harness process per task ------------------------------


def petri_run(lab: Lab, harness: str) -> dict[str, Any]:
    out = lab.run(
        "petri", "run", CLAIM, "--harness", harness, "-j", "2", "--preset", "quick", "--json", timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary: dict[str, Any] = json.loads(out.stdout)
    return summary


def assert_one_process_per_task(lab: Lab, summary: dict[str, Any], harness: Harness) -> list[dict[str, Any]]:
    """The store: every task done by its own harness process, with its transcript and tokens."""
    assert summary["stopped"] == "done", summary
    svc = Service(lab.dish)
    st = svc.open(create=False)
    run_id = summary["run_id"]
    assert st.run(run_id).state == "complete" and st.cell(st.run(run_id).root_cell_id).state == "validated"
    rows = st.usage_rows(run_id=run_id)
    tasks = [t for c in st.cells(run_id) for t in st.tasks_of_cell(c.cell_id)]
    st.close()
    assert len(tasks) >= 12 and all(t.status == "done" for t in tasks)
    assert sorted(r["task_id"] for r in rows) == sorted(t.task_id for t in tasks)  # one process each
    assert len({r["worker"] for r in rows}) == len(rows)
    claims = {e["task_id"]: e["payload"]["worker"] for e in svc.log(types=["task_claimed"])}
    for row in rows:
        assert row["harness"] == harness.name and row["outcome"] == "submitted", row
        assert claims[row["task_id"]] == row["worker"]  # the process the runner started claimed it
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0 and row["model_calls"] >= 2
        assert svc.transcript(row["task_id"])  # the harness's own output, stored
    usage = svc.usage(run_id)
    assert usage["processes"] == len(rows) and usage["tokens"] == sum(
        r["input_tokens"] + r["output_tokens"] + r["cache_read_tokens"] + r["cache_write_tokens"]
        for r in rows
    )
    assert svc.verify().ok
    replies = json.dumps([r.get("reply") for r in lab.requests()])
    assert "PETRI-E2E-FAILED" not in replies and "PETRI-E2E-REJECTED" not in replies
    assert not [r for r in lab.requests() if r["method"] == "CONNECT"]
    status = lab.run("petri", "status", run_id, timeout=60).stdout
    assert f"{len(rows)} harness processes" in status
    return rows


def test_petri_run_dispatches_real_claude_code_processes(lab: Lab) -> None:
    rows = assert_one_process_per_task(lab, petri_run(lab, "claude"), CLAUDE)
    svc = Service(lab.dish)
    for row in rows:
        result = events(svc.transcript(row["task_id"]).decode())[-1]
        assert result["type"] == "result" and result["permission_denials"] == [], result
        assert result["usage"]["input_tokens"] > 0


def test_petri_run_dispatches_real_opencode_processes(lab: Lab) -> None:
    install_opencode(lab)
    rows = assert_one_process_per_task(lab, petri_run(lab, "opencode"), OPENCODE)
    svc = Service(lab.dish)
    for row in rows:
        stream = events(svc.transcript(row["task_id"]).decode())
        uses = [e["part"] for e in stream if e.get("type") == "tool_use"]
        assert uses and all(u["state"]["status"] == "completed" for u in uses)
        assert any(e.get("type") == "step_finish" for e in stream)
