"""`petri install opencode`: rendered agents, merged config, idempotent, never clobbers a user's file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from petri_core.cli import main
from petri_core.install import MARKER, install_opencode, parse_local_model
from petri_core.pack import agent_sources, pack_dir
from petri_core.roster import ROLES


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["install", "opencode", *args])
    return result.exit_code, result.output


def actions(project: Path) -> dict[str, str]:
    code, out = run("--dir", str(project), "--json")
    assert code == 0, out
    return {Path(w["path"]).relative_to(project).as_posix(): w["action"] for w in json.loads(out)}


def test_writes_one_opencode_agent_per_role_with_only_its_tools(tmp_path: Path) -> None:
    first = actions(tmp_path)
    assert set(first.values()) == {"wrote"}
    assert {f".opencode/agent/petri-{r}.md" for r in ROLES} <= first.keys()
    for source in agent_sources():
        text = (tmp_path / ".opencode" / "agent" / f"{source.name}.md").read_text()
        head, body = text.split("\n---\n", 1)
        assert MARKER in head and "\nmode: all" in head and "tools:" not in head  # no Claude-format key
        allowed = re.findall(r"^  (\S+): allow$", head, re.M)
        assert '  "*": deny' in head and allowed  # deny by default, then the role's own tools
        assert all(t.startswith("petri_petri_") or t in {"websearch", "webfetch", "read"} for t in allowed)
        assert len(allowed) == len(source.tools)
        assert body.strip() == source.body.strip()  # the same words as the Claude agent
        assert json.loads(head.split("description: ", 1)[1].splitlines()[0]) == source.description
    config = json.loads((tmp_path / "opencode.json").read_text())
    assert config["mcp"]["petri"]["command"][-2:] == ["petri_core", "mcp"]
    assert config["skills"]["paths"] == [str(pack_dir() / "skills")]
    assert "provider" not in config and "model" not in config


def test_running_it_again_changes_nothing(tmp_path: Path) -> None:
    actions(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert set(actions(tmp_path).values()) == {"unchanged"}
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_merges_into_a_users_config_keeping_their_keys_with_a_backup(tmp_path: Path) -> None:
    user = {
        "theme": "dark",
        "mcp": {"github": {"type": "remote", "url": "https://x"}},
        "skills": {"paths": ["/s"]},
    }
    (tmp_path / "opencode.json").write_text(json.dumps(user))
    done = actions(tmp_path)
    assert done["opencode.json"].startswith("merged Petri's entries (backup at opencode.json.bak-")
    merged = json.loads((tmp_path / "opencode.json").read_text())
    assert merged["theme"] == "dark" and merged["mcp"]["github"] == user["mcp"]["github"]
    assert merged["skills"]["paths"] == ["/s", str(pack_dir() / "skills")] and "petri" in merged["mcp"]
    backups = list(tmp_path.glob("opencode.json.bak-*"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == user


def test_a_users_conflicting_entry_is_kept_unless_forced(tmp_path: Path) -> None:
    user = {"mcp": {"petri": {"type": "local", "command": ["my-petri", "mcp"]}}}
    (tmp_path / "opencode.json").write_text(json.dumps(user))
    mine = tmp_path / ".opencode" / "agent" / "petri-skeptic.md"
    mine.parent.mkdir(parents=True)
    mine.write_text("---\ndescription: my own skeptic\nmode: subagent\n---\nMine.\n")
    done = actions(tmp_path)
    assert done["opencode.json"].startswith("kept (would replace your mcp.petri")
    assert done[".opencode/agent/petri-skeptic.md"].startswith("kept")
    assert json.loads((tmp_path / "opencode.json").read_text()) == user and mine.read_text().endswith(
        "Mine.\n"
    )
    code, out = run("--dir", str(tmp_path), "--force")
    assert code == 0 and "backup at petri-skeptic.md.bak-" in out
    assert MARKER in mine.read_text() and next(
        mine.parent.glob("petri-skeptic.md.bak-*")
    ).read_text().endswith("Mine.\n")
    assert json.loads((tmp_path / "opencode.json").read_text())["mcp"]["petri"]["command"][-1] == "mcp"


def test_petris_own_generated_files_are_refreshed_without_force(tmp_path: Path) -> None:
    actions(tmp_path)
    agent = tmp_path / ".opencode" / "agent" / "petri-evaluator.md"
    agent.write_text(agent.read_text().replace("You are Petri's evaluator.", "An older wording."))
    assert actions(tmp_path)[".opencode/agent/petri-evaluator.md"] == "updated"
    assert "You are Petri's evaluator." in agent.read_text()


def test_local_model_adds_an_openai_compatible_provider_with_tool_calling(tmp_path: Path) -> None:
    code, out = run("--dir", str(tmp_path), "--local-model", "http://127.0.0.1:11434/v1/qwen3:8b")
    assert code == 0, out
    config = json.loads((tmp_path / "opencode.json").read_text())
    provider = config["provider"]["petri-local"]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"]["baseURL"] == "http://127.0.0.1:11434/v1"
    assert provider["models"]["qwen3:8b"]["tool_call"] is True and config["model"] == "petri-local/qwen3:8b"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("http://127.0.0.1:8080/v1/qwen2.5-7b", ("http://127.0.0.1:8080/v1", "qwen2.5-7b")),
        ("http://h:1/v1/org/model", ("http://h:1/v1", "org/model")),
        ("http://h:1/api/qwen", ("http://h:1/api", "qwen")),
    ],
)
def test_local_model_specs_split_into_url_and_name(spec: str, expected: tuple[str, str]) -> None:
    assert parse_local_model(spec) == expected


@pytest.mark.parametrize("spec", ["qwen3", "http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080"])
def test_bad_local_model_specs_are_refused_with_the_fix(tmp_path: Path, spec: str) -> None:
    code, out = run("--dir", str(tmp_path), "--local-model", spec)
    assert code != 0 and ("http://127.0.0.1:8080/v1/qwen3" in out or "after /v1/" in out)
    assert not (tmp_path / "opencode.json").exists()


def test_invalid_json_in_an_existing_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "opencode.json").write_text("{ not json")
    code, out = run("--dir", str(tmp_path))
    assert code != 0 and "is not valid JSON" in out and "fix or move it" in out
    assert (tmp_path / "opencode.json").read_text() == "{ not json"


def test_a_missing_project_directory_is_refused(tmp_path: Path) -> None:
    code, out = run("--dir", str(tmp_path / "nope"))
    assert code != 0 and "is not a directory" in out


def test_install_is_importable_without_the_cli(tmp_path: Path) -> None:
    written = install_opencode(tmp_path, petri_command=["petri", "mcp"])
    assert json.loads((tmp_path / "opencode.json").read_text())["mcp"]["petri"]["command"] == ["petri", "mcp"]
    assert len(written) == len(ROLES) + 2  # opencode.json, the agents, .opencode/.gitignore
