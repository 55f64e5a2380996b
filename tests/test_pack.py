"""The skill pack: every role has an agent, every file has valid frontmatter, every tool named exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio

from petri_core.mcp_server import build
from petri_core.roster import ROLES
from petri_core.service import Service

REPO = Path(__file__).parent.parent
PREFIX = "mcp__plugin_petri_petri__"
BUILTINS = {"WebSearch", "WebFetch", "Read"}


def frontmatter(path: Path) -> dict[str, str]:
    text = path.read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, f"{path} has no frontmatter"
    return dict(line.split(": ", 1) for line in match.group(1).splitlines())


def server_tools(tmp_path: Path) -> set[str]:
    return {t.name for t in anyio.run(build(Service(tmp_path / ".petri")).list_tools)}


def test_every_role_has_an_agent_file_with_valid_frontmatter(tmp_path: Path) -> None:
    tools = server_tools(tmp_path)
    assert {p.stem for p in (REPO / "agents").glob("*.md")} == {f"petri-{r}" for r in ROLES}
    for role in ROLES:
        path = REPO / "agents" / f"petri-{role}.md"
        meta = frontmatter(path)
        assert meta["name"] == path.stem and meta["model"] == "inherit" and len(meta["description"]) > 40
        named = [t.strip() for t in meta["tools"].split(",")]
        for tool in named:
            assert tool in BUILTINS or (tool.startswith(PREFIX) and tool[len(PREFIX) :] in tools), tool
        assert f"{PREFIX}petri_claim" in named and f"{PREFIX}petri_submit" in named
        assert len(path.read_text().split()) < 450, f"{path} is too long to read on every task"


def test_every_skill_has_kebab_case_name_matching_its_folder_and_a_description() -> None:
    skills = sorted((REPO / "skills").glob("*/SKILL.md"))
    assert [p.parent.name for p in skills] == ["petri", "petri-worker"]
    for path in skills:
        meta = frontmatter(path)
        assert meta["name"] == path.parent.name and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", meta["name"])
        assert "Use when" in meta["description"]


def test_every_petri_tool_named_in_markdown_exists_on_the_server(tmp_path: Path) -> None:
    tools = server_tools(tmp_path)
    for path in [*(REPO / "agents").glob("*.md"), *(REPO / "skills").rglob("*.md")]:
        for name in set(re.findall(r"\bpetri_[a-z_]+\b", path.read_text())):
            assert name in tools, f"{path.name} names {name}, which the server does not have"


def test_plugin_manifests_are_well_formed() -> None:
    plugin = json.loads((REPO / ".claude-plugin" / "plugin.json").read_text())
    market = json.loads((REPO / ".claude-plugin" / "marketplace.json").read_text())
    mcp = json.loads((REPO / ".mcp.json").read_text())
    assert plugin["name"] == "petri" and isinstance(plugin["version"], str)
    assert market["plugins"][0]["name"] == "petri" and market["plugins"][0]["source"] == "./"
    assert mcp["mcpServers"]["petri"]["args"] == ["mcp"]
