"""Where the skill pack (agents/, skills/, the Claude Code plugin manifests) lives.

In a checkout it is the repository root; in an installed wheel it is `petri_core/pack/`, where
pyproject's force-include puts the same files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).resolve().parent

CLAUDE_MCP_PREFIX = "mcp__plugin_petri_petri__"
OPENCODE_MCP_PREFIX = "petri_"  # OpenCode names MCP tools <server>_<tool>


def pack_dir() -> Path:
    """The directory holding agents/, skills/, .claude-plugin/ and .mcp.json."""
    for candidate in (_HERE.parent, _HERE / "pack"):
        if (candidate / "agents").is_dir() and (candidate / ".claude-plugin" / "plugin.json").is_file():
            return candidate
    raise FileNotFoundError(f"Petri's skill pack is missing (looked in {_HERE.parent} and {_HERE / 'pack'})")


@dataclass(frozen=True)
class AgentSource:
    """One role's agent file, parsed: the Claude Code frontmatter and the shared body."""

    name: str
    description: str
    tools: tuple[str, ...]
    body: str


def parse_agent(path: Path) -> AgentSource:
    """Parse a Claude-format agent file (`name`, `description`, `tools` as a comma string)."""
    text = path.read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n(.*)", text, re.S)
    if not match:
        raise ValueError(f"{path}: no frontmatter (expected a '---' block first)")
    meta: dict[str, str] = {}
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path}: frontmatter line {line!r} is not 'key: value'")
        meta[key.strip()] = value.strip()
    missing = {"name", "description", "tools"} - meta.keys()
    if missing:
        raise ValueError(f"{path}: frontmatter lacks {', '.join(sorted(missing))}")
    tools = tuple(t.strip() for t in meta["tools"].split(",") if t.strip())
    return AgentSource(meta["name"], meta["description"], tools, match.group(2).strip() + "\n")


def agent_sources() -> list[AgentSource]:
    return [parse_agent(p) for p in sorted((pack_dir() / "agents").glob("petri-*.md"))]
