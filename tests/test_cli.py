"""Acceptance: every `petri` command through CliRunner, with `--json` and its error cases.

The dish is PETRI_HOME (a fresh one per test, see conftest.py); the states the commands act on
are reached by driving the service, the way agents would.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from helpers import Clock, Driver, add_article, passing

from petri_core import __version__
from petri_core.cli import main
from petri_core.models import ClaimOut, StartOut, TaskOut
from petri_core.service import Service

SOLAR = "Solar panels pay back their embodied energy within four years"
HEAT = "Heat pumps cut household heating emissions in cold climates"
HEAT_A = "Heat pumps keep a coefficient of performance above 2 at minus 15 degrees"
HEAT_B = "Grid electricity in cold regions emits less per kWh than gas boilers"


# ---------------------------------------------------------------- helpers


def home() -> Path:
    return Path(os.environ["PETRI_HOME"])


def svc() -> Service:
    """The service on the CLI's dish, on the real clock like the CLI itself."""
    return Service(home())


def petri(*args: str, code: int = 0) -> Result:
    result = CliRunner(catch_exceptions=False).invoke(main, list(args))
    assert result.exit_code == code, result.output
    return result


def error(*args: str) -> str:
    """Run a command that must fail with one `Error: …` line, exit status 1 and no traceback."""
    result = petri(*args, code=1)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def usage_error(*args: str) -> str:
    result = petri(*args, code=2)
    assert "Usage:" in result.stderr
    return result.stderr


def show(cell_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(petri("show", cell_id, "--json").stdout)
    return data


def tree_policy(source_id: str) -> Any:
    ok = passing(source_id)

    def play(task: TaskOut, claim: ClaimOut) -> dict[str, Any]:
        if task.kind == "decompose":
            return {
                "atomic": False,
                "children": [
                    {
                        "text": HEAT_A,
                        "relation": "supports",
                        "atomic": True,
                        "bedrock_reason": "a measurement",
                    },
                    {"text": HEAT_B, "relation": "assumes", "atomic": True, "bedrock_reason": "grid data"},
                ],
            }
        return ok[task.role]

    return play


def leaf_run(s: Service, claim: str = SOLAR) -> StartOut:
    """A run whose root is a leaf (max_depth 0): its first task is the investigator's."""
    return s.start(claim, preset="quick", max_depth=0)


def stalled_leaf(s: Service) -> StartOut:
    run = leaf_run(s)
    task = run.tasks[0].task_id
    s.fail(task, s.claim(task, "w1").lease, "the only source is behind a paywall", retryable=False)
    return run


def finished_leaf(s: Service) -> StartOut:
    ok = passing(add_article(s).source_id)
    run = leaf_run(s)
    Driver(s, lambda task, claim: ok[task.role]).drain(run.run_id)
    return run


def finished_tree(s: Service) -> StartOut:
    run = s.start(HEAT, preset="quick", max_depth=1)
    Driver(s, tree_policy(add_article(s).source_id)).drain(run.run_id)
    return run


def awaiting_approval(s: Service) -> StartOut:
    run = s.start(HEAT, preset="quick", max_depth=1, require_approval=True)
    task = run.tasks[0]
    claim = s.claim(task.task_id, "petri-decomposer")
    s.submit(task.task_id, claim.lease, tree_policy("unused")(task, claim))
    return run


# ---------------------------------------------------------------- the group, help, version, imports


def test_help_lists_every_command() -> None:
    out = petri("--help").stdout
    assert "Petri: research a claim with agents" in out
    for name in main.commands:
        assert f"  {name} " in out


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_has_help(name: str) -> None:
    command: click.Command = main.commands[name]
    out = petri(name, "--help").stdout
    assert f"{name} [OPTIONS]" in out
    assert " ".join((command.help or "").splitlines()[0].split()) in " ".join(out.split())


def test_version_prints_the_package_version() -> None:
    assert petri("--version").stdout == f"petri, version {__version__}\n"


def test_the_petri_console_script_runs() -> None:
    script = Path(sys.executable).with_name("petri")
    out = subprocess.run([script, "--version"], capture_output=True, text=True, check=True).stdout
    assert out == f"petri, version {__version__}\n"


def test_importing_the_cli_does_not_import_mcp() -> None:
    code = "import petri_core.cli, sys; print('mcp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "False\n"


def test_mcp_help_does_not_start_a_server() -> None:
    assert "Run Petri's MCP server" in petri("mcp", "--help").stdout


def test_fetch_help_names_the_settings_that_change_where_it_connects() -> None:
    out = petri("fetch", "--help").stdout
    assert "PETRI_FETCH_ALLOW_PRIVATE=1" in out and "PETRI_FETCH_PROXY=URL" in out
    assert "HTTPS_PROXY and the like are ignored" in out


# ---------------------------------------------------------------- init, status


def test_init_creates_the_dish_and_is_idempotent() -> None:
    first = petri("init").stdout
    assert first == f"Petri dish ready at {home()}\n"
    assert (home() / "petri.db").is_file()
    assert petri("init").stdout == first
    assert svc().status()["events"] == 0


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--json"],
        ["show", "x-0-01"],
        ["log"],
        ["verify"],
        ["report", "x"],
        ["export", "x"],
        ["backup"],
    ],
)
def test_reading_a_missing_dish_is_one_error_line_naming_petri_init(args: list[str]) -> None:
    line = error(*args)
    assert line == f"Error: no Petri dish at {home()}; run `petri init` first"
    assert not home().exists()


def test_init_where_the_dish_cannot_be_created_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("PETRI_HOME", str(tmp_path / "a-file" / ".petri"))
    assert error("init").startswith(
        f"Error: cannot create the dish directory {tmp_path / 'a-file' / '.petri'}"
    )


def test_a_file_that_is_not_a_dish_is_an_error_not_a_traceback() -> None:
    home().mkdir(parents=True)
    (home() / "petri.db").write_bytes(b"this is not an SQLite database" * 100)
    assert error("status") == f"Error: cannot open the dish {home() / 'petri.db'}: file is not a database"


def test_status_of_an_empty_dish_says_no_runs_yet() -> None:
    petri("init")
    out = petri("status").stdout.splitlines()
    assert out[0] == f"dish {home()}  ·  0 events  ·  head {'0' * 12}"
    assert out[1:] == ['no runs yet: start one with `petri run "CLAIM"`, or from an agent with petri_start']


def test_status_shows_runs_cells_tasks_leases_and_the_inbox() -> None:
    s = svc()
    busy = leaf_run(s, "Wind turbines repay their carbon debt within one year")
    s.claim(busy.tasks[0].task_id, "w7")
    stuck = stalled_leaf(s)
    out = petri("status").stdout
    assert f"{busy.run_id}  [growing]  preset quick  root {busy.root_cell_id} = research" in out
    assert "  claim: Wind turbines repay their carbon debt within one year" in out
    assert "  cells: research 1\n  tasks: leased 1\n" in out
    assert f"  lease: {busy.tasks[0].task_id} held by w7 until " in out
    assert f"{stuck.run_id}  [growing]  preset quick  root {stuck.root_cell_id} = stalled" in out
    reason = f"task {stuck.tasks[0].task_id}: needs a human: the only source is behind a paywall"
    assert f"\nneeds a human:\n  {stuck.root_cell_id}: {reason}\n" in out
    assert f"    → petri resolve {stuck.root_cell_id} --requeue" in out


def test_status_json_has_runs_cells_by_state_tasks_leases_and_needs_human() -> None:
    s = svc()
    busy = leaf_run(s, "Wind turbines repay their carbon debt within one year")
    claim = s.claim(busy.tasks[0].task_id, "w7")
    stuck = stalled_leaf(s)
    data = json.loads(petri("status", "--json").stdout)
    assert data["dish"] == str(home())
    assert data["events"] == len(s.log()) and len(data["head"]) == 64
    runs = {r["run_id"]: r for r in data["runs"]}
    assert set(runs) == {busy.run_id, stuck.run_id}
    assert runs[busy.run_id]["cells"] == {"research": 1}
    assert runs[busy.run_id]["tasks"] == {"leased": 1}
    assert runs[busy.run_id]["leases"] == [
        {"task_id": busy.tasks[0].task_id, "worker": "w7", "expires_at": claim.expires_at, "expired": False}
    ]
    assert runs[stuck.run_id]["cells"] == {"stalled": 1}
    assert runs[stuck.run_id]["tasks"] == {"stalled": 1}
    assert runs[stuck.run_id]["leases"] == []
    assert [(h["cell_id"], h["command"].split()[:3]) for h in data["needs_human"]] == [
        (stuck.root_cell_id, ["petri", "resolve", stuck.root_cell_id])
    ]


def test_status_marks_a_lease_past_its_expiry() -> None:
    past = Service(home(), Clock(datetime.now(UTC) - timedelta(seconds=60)))
    run = past.start(SOLAR, preset="quick", max_depth=0, lease_seconds=30)
    past.claim(run.tasks[0].task_id, "w1")
    assert json.loads(petri("status", "--json").stdout)["runs"][0]["leases"][0]["expired"] is True
    assert "held by w1 until " in petri("status").stdout
    assert petri("status").stdout.count(" (expired)") == 1


def test_status_of_one_run_shows_only_that_run() -> None:
    s = svc()
    other = leaf_run(s, "Wind turbines repay their carbon debt within one year")
    stuck = stalled_leaf(s)
    data = json.loads(petri("status", other.run_id, "--json").stdout)
    assert [r["run_id"] for r in data["runs"]] == [other.run_id]
    assert data["needs_human"] == []
    text = petri("status", stuck.run_id).stdout
    assert stuck.run_id in text and other.run_id not in text


def test_status_of_an_unknown_run_is_an_error() -> None:
    leaf_run(svc())
    assert error("status", "nope") == (
        "Error: no run 'nope'; list runs with petri_status (or `petri status`)"
    )


# ---------------------------------------------------------------- show


def test_show_prints_a_cells_claim_tasks_verdicts_and_citations() -> None:
    run = finished_leaf(svc())
    out = petri("show", run.root_cell_id).stdout.splitlines()
    assert out[0] == f"{run.root_cell_id}  [validated]  level 0  iteration 1"
    assert out[1] == f"  claim: {SOLAR}"
    assert "  leaf reason: depth cap" in out
    assert f"    {run.root_cell_id}.i1.investigator  done  attempt 1" in out
    assert "    i1 investigator: EVIDENCE_SUFFICIENT — two primary sources agree" in out
    assert "    i1 evaluator: EVIDENCE_CONFIRMS — confirmed" in out
    cited = [line for line in out if line.startswith("    i1 investigator [supports L2] src-")]
    assert len(cited) == 2


def test_show_json_is_the_whole_cell() -> None:
    run = finished_leaf(svc())
    data = show(run.root_cell_id)
    assert set(data) == {"cell", "parents", "children", "tasks", "verdicts", "citations", "evidence", "usage"}
    assert (data["cell"]["cell_id"], data["cell"]["state"], data["cell"]["text"]) == (
        run.root_cell_id,
        "validated",
        SOLAR,
    )
    assert [v["role"] for v in data["verdicts"]] == ["investigator", "skeptic", "evaluator"]
    assert [t["status"] for t in data["tasks"]] == ["done"] * 3
    assert len(data["citations"]) == 2
    assert data["parents"] == data["children"] == data["evidence"] == []


def test_show_lists_parents_and_children_with_their_relations() -> None:
    run = finished_tree(svc())
    root = petri("show", run.root_cell_id).stdout
    kids = show(run.root_cell_id)["children"]
    assert [(c["text"], c["relation"], c["state"]) for c in kids] == [
        (HEAT_A, "supports", "validated"),
        (HEAT_B, "assumes", "validated"),
    ]
    assert f"  child {kids[0]['cell_id']} (supports) [validated]: {HEAT_A}" in root
    assert f"  child {kids[1]['cell_id']} (assumes) [validated]: {HEAT_B}" in root
    child = petri("show", kids[0]["cell_id"]).stdout
    assert f"  parent {run.root_cell_id} [validated]: {HEAT}" in child


def test_show_an_unknown_cell_is_an_error() -> None:
    leaf_run(svc())
    assert error("show", "nope-0-01").startswith("Error: no cell 'nope-0-01'")


def test_terminal_escape_sequences_in_cell_text_are_stripped_from_output() -> None:
    hostile = "Solar panels \x1b[31mpay back\x1b[0m their energy \x1b]0;pwned\x07within four years"
    s = svc()
    run = leaf_run(s, hostile)
    s.claim(run.tasks[0].task_id, "w\x1b[2J\x1b]0;pwned\x07orker")
    clean = "Solar panels pay back their energy within four years"
    for args in (["show", run.root_cell_id], ["status"], ["status", run.run_id]):
        out = petri(*args).output
        assert f"claim: {clean}" in out
        assert "\x1b" not in out and "\x07" not in out and "pwned" not in out
    assert "held by worker until" in petri("status").output
    log = petri("log").output
    assert "by worker" in log and "\x1b" not in log and "pwned" not in log
    raw = petri("show", run.root_cell_id, "--json").stdout
    assert "\x1b" not in raw and "\x07" not in raw
    assert json.loads(raw)["cell"]["text"] == hostile  # JSON keeps the data, escaped
    line = error("show", "\x1b]0;pwned\x07x-0-01")
    assert "\x1b" not in line and "\x07" not in line


# ---------------------------------------------------------------- log


def test_log_prints_one_line_per_event_oldest_first() -> None:
    s = svc()
    run = leaf_run(s)
    lines = petri("log").stdout.splitlines()
    events = s.log()
    assert len(lines) == len(events)
    assert [int(line.split()[0]) for line in lines] == [e["seq"] for e in events]
    started = next(line for line in lines if "run_started" in line)
    assert started.split()[-1] == run.run_id
    changed = next(line for line in lines if "run_state_changed" in line)
    assert changed.endswith("intake → decomposing")


def test_log_json_of_a_run_is_one_object_per_line_with_increasing_seq() -> None:
    s = svc()
    add_article(s)  # source events belong to no run
    run = leaf_run(s)
    leaf_run(s, "Wind turbines repay their carbon debt within one year")
    events = [json.loads(line) for line in petri("log", run.run_id, "--json").stdout.splitlines()]
    assert events == s.log(run.run_id)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)) and len(seqs) > 3
    assert {e["run_id"] for e in events} == {run.run_id}
    assert events[0]["type"] == "run_started"
    assert {
        "seq",
        "run_id",
        "cell_id",
        "task_id",
        "type",
        "actor",
        "payload",
        "at",
        "prev_hash",
        "hash",
    } == set(events[0])


def test_log_filters_by_type_cell_after_and_limit() -> None:
    s = svc()
    run = finished_tree(s)
    everything = s.log()

    def seqs(*args: str) -> list[int]:
        return [json.loads(line)["seq"] for line in petri("log", "--json", *args).stdout.splitlines()]

    changed = [e["seq"] for e in everything if e["type"] == "cell_state_changed"]
    assert seqs("--type", "cell_state_changed") == changed
    both = [e["seq"] for e in everything if e["type"] in ("run_started", "run_state_changed")]
    assert seqs("--type", "run_started", "--type", "run_state_changed") == both
    cell = [e["seq"] for e in everything if e["cell_id"] == run.root_cell_id]
    assert seqs("--cell", run.root_cell_id) == cell
    assert seqs("--after", "10") == [e["seq"] for e in everything if e["seq"] > 10]
    assert seqs("--limit", "3") == [1, 2, 3]
    assert (
        seqs(
            "--cell",
            run.root_cell_id,
            "--type",
            "cell_state_changed",
            "--after",
            str(cell[3]),
            "--limit",
            "2",
        )
        == [s for s in changed if s in cell and s > cell[3]][:2]
    )
    wrong_type = usage_error("log", "--type", "cell_state_changed", "--type", "no_such_type")
    assert "Invalid value for --type: unknown event type no_such_type; the types are " in wrong_type
    assert error("log", "nope") == "Error: no run 'nope'; list runs with petri_status (or `petri status`)"
    assert error("log", "--cell", "nope").startswith("Error: no cell 'nope'")


def test_log_follow_ends_quietly_on_ctrl_c() -> None:
    finished_leaf(svc())
    follower = subprocess.Popen(
        [sys.executable, "-m", "petri_core", "log", "--follow"],
        env={**os.environ, "PETRI_HOME": str(home())},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    first = follower.stdout.readline()  # the log is being printed: the loop is running
    follower.send_signal(signal.SIGINT)
    _, err = follower.communicate(timeout=30)
    assert first.split()[0] == "1" and follower.returncode == 130
    assert err == ""  # no "Aborted!", no traceback


def test_log_filters_by_role() -> None:
    finished_leaf(svc())
    events = [json.loads(line) for line in petri("log", "--json", "--role", "skeptic").stdout.splitlines()]
    assert {e["type"] for e in events} >= {
        "task_created",
        "task_claimed",
        "verdict_recorded",
        "task_completed",
    }
    assert all(e["task_id"].endswith(".skeptic") for e in events)


def test_log_limit_counts_only_the_events_of_the_role_asked_for() -> None:
    finished_leaf(svc())
    events = [
        json.loads(line)
        for line in petri("log", "--json", "--role", "evaluator", "--limit", "2").stdout.splitlines()
    ]
    assert len(events) == 2
    assert all(e["task_id"].endswith(".evaluator") for e in events)


# ---------------------------------------------------------------- resolve


def test_resolve_requeue_with_guidance_sends_a_stalled_cell_back_to_research() -> None:
    s = svc()
    run = stalled_leaf(s)
    out = petri("resolve", run.root_cell_id, "--requeue", "--guidance", "try the IEA report").stdout
    assert out.splitlines()[0] == f"{run.root_cell_id}: research"
    assert f"  {run.root_cell_id}: stalled → research (requeued by a human: try the IEA report)" in out
    cell = show(run.root_cell_id)["cell"]
    assert (cell["state"], cell["directive"], cell["stall_reason"]) == (
        "research",
        "try the IEA report",
        None,
    )
    assert [t.task_id for t in s.next(run.run_id).tasks] == [f"{run.root_cell_id}.i2.investigator"]


def test_resolve_close_with_a_verdict_records_the_reason_and_completes_the_run() -> None:
    run = stalled_leaf(svc())
    out = petri("resolve", run.root_cell_id, "--close", "validated", "--reason", "expert confirmed").stdout
    assert out.splitlines()[0] == f"{run.root_cell_id}: validated"
    assert f"  run {run.run_id}: growing → complete" in out
    cell = show(run.root_cell_id)["cell"]
    assert (cell["state"], cell["final_reason"]) == ("validated", "closed by a human: expert confirmed")


def test_resolve_close_with_an_unknown_verdict_is_a_usage_error() -> None:
    run = stalled_leaf(svc())
    assert "'maybe' is not one of" in usage_error("resolve", run.root_cell_id, "--close", "maybe")
    assert show(run.root_cell_id)["cell"]["state"] == "stalled"


def test_resolve_split_turns_a_stalled_cell_into_sub_claims() -> None:
    s = svc()
    run = s.start(HEAT, preset="quick", max_depth=1)
    task = run.tasks[0].task_id
    s.fail(task, s.claim(task, "petri-decomposer").lease, "cannot decompose", retryable=False)
    out = petri("resolve", run.root_cell_id, "--split", HEAT_A, "--split", HEAT_B, "--json").stdout
    data = json.loads(out)
    assert (data["cell_id"], data["cell_state"]) == (run.root_cell_id, "waiting")
    assert any("created" in line for line in data["changes"])
    kids = show(run.root_cell_id)["children"]
    assert [(c["text"], c["relation"], c["state"]) for c in kids] == [
        (HEAT_A, "supports", "research"),
        (HEAT_B, "supports", "research"),
    ]


def test_resolve_split_into_one_sub_claim_is_an_error() -> None:
    s = svc()
    run = s.start(HEAT, preset="quick", max_depth=1)
    task = run.tasks[0].task_id
    s.fail(task, s.claim(task, "petri-decomposer").lease, "cannot decompose", retryable=False)
    assert error("resolve", run.root_cell_id, "--split", HEAT_A) == (
        "Error: a split needs at least two sub-claims; give --split TEXT at least twice"
    )
    assert show(run.root_cell_id)["cell"]["state"] == "stalled"


def test_resolve_reopen_puts_a_final_cell_into_a_new_iteration() -> None:
    s = svc()
    run = finished_leaf(s)
    out = petri("resolve", run.root_cell_id, "--reopen", "--guidance", "check 2026 data").stdout
    assert out.splitlines()[0] == f"{run.root_cell_id}: research"
    cell = show(run.root_cell_id)["cell"]
    assert (cell["state"], cell["iteration"], cell["directive"]) == ("research", 2, "check 2026 data")
    assert json.loads(petri("status", run.run_id, "--json").stdout)["runs"][0]["state"] == "growing"


def test_resolve_acknowledge_clears_the_flag_a_reopened_child_left_on_its_parent() -> None:
    run = finished_tree(svc())
    child = show(run.root_cell_id)["children"][0]["cell_id"]
    petri("resolve", child, "--reopen", "--reason", "new data")
    inbox = json.loads(petri("status", "--json").stdout)["needs_human"]
    assert [(h["cell_id"], h["reason"]) for h in inbox] == [
        (run.root_cell_id, f"{child} was reopened by a human")
    ]
    assert "--acknowledge" in inbox[0]["command"]
    out = petri("resolve", run.root_cell_id, "--acknowledge").stdout
    assert out.splitlines() == [
        f"{run.root_cell_id}: validated",
        f"  {run.root_cell_id}: flag cleared (flag acknowledged by a human)",
    ]
    assert show(run.root_cell_id)["cell"]["flagged"] is None
    assert json.loads(petri("status", "--json").stdout)["needs_human"] == []


def test_resolve_without_an_action_is_a_usage_error() -> None:
    run = stalled_leaf(svc())
    assert "choose exactly one of --requeue, --close, --split, --reopen, --acknowledge" in usage_error(
        "resolve", run.root_cell_id, "--guidance", "x"
    )


@pytest.mark.parametrize(
    "actions",
    [
        ["--requeue", "--close", "validated"],
        ["--split", "Panels in Spain pay back fast", "--split", "Panels in Norway are slower", "--reopen"],
        ["--close", "disproven", "--acknowledge"],
        ["--requeue", "--reopen"],
        ["--reopen", "--acknowledge"],
    ],
)
def test_resolve_with_two_actions_is_a_usage_error_and_changes_nothing(actions: list[str]) -> None:
    s = svc()
    run = finished_leaf(s)
    before = len(s.log())
    assert "choose exactly one of" in usage_error("resolve", run.root_cell_id, *actions)
    assert len(s.log()) == before


def test_resolve_in_the_wrong_state_is_an_error_naming_what_is_allowed() -> None:
    s = svc()
    run = leaf_run(s)
    cell = run.root_cell_id
    before = len(s.log())
    busy = "nothing a human can do while agents work on it: wait until it is final or stalled, or `petri halt` its run"
    assert error("resolve", cell, "--requeue") == f"Error: cannot requeue a cell in state `research`; {busy}"
    assert (
        error("resolve", cell, "--close", "validated")
        == f"Error: cannot close a cell in state `research`; {busy}"
    )
    assert error(
        "resolve", cell, "--split", "Panels in Spain pay back fast", "--split", "Norway is slower"
    ) == (
        f"Error: cannot split {cell} in state `research`; split only a stalled cell; reopen a final one instead"
    )
    assert error("resolve", cell, "--acknowledge") == f"Error: {cell} is not flagged; nothing to acknowledge"
    assert len(s.log()) == before


def test_resolve_an_unknown_cell_is_an_error() -> None:
    leaf_run(svc())
    assert error("resolve", "nope-0-01", "--requeue").startswith("Error: no cell 'nope-0-01'")


# ---------------------------------------------------------------- approve


def test_approve_creates_the_proposed_children() -> None:
    run = awaiting_approval(svc())
    inbox = json.loads(petri("status", "--json").stdout)["needs_human"]
    assert [(h["cell_id"], h["reason"]) for h in inbox] == [
        (run.root_cell_id, "a decomposition awaits approval")
    ]
    assert inbox[0]["command"].startswith(f"petri approve {run.root_cell_id}")
    out = petri("approve", run.root_cell_id).stdout
    assert out.splitlines()[0] == f"{run.root_cell_id}: waiting"
    assert [c["text"] for c in show(run.root_cell_id)["children"]] == [HEAT_A, HEAT_B]


def test_approve_reject_with_a_note_sends_the_decomposition_back() -> None:
    s = svc()
    run = awaiting_approval(s)
    before = len(s.log())
    for blank in ([], ["--note", "  "]):  # the decomposer would redo the work blind
        assert error("approve", run.root_cell_id, "--reject", *blank) == (
            "Error: a rejection needs a note: the decomposer redoes the decomposition from it; "
            f'say what to change: petri approve {run.root_cell_id} --reject --note "…"'
        )
    assert len(s.log()) == before
    out = json.loads(
        petri("approve", run.root_cell_id, "--reject", "--note", "split by region", "--json").stdout
    )
    assert (out["cell_id"], out["cell_state"]) == (run.root_cell_id, "decomposing")
    cell = show(run.root_cell_id)
    assert (cell["cell"]["directive"], cell["children"]) == ("split by region", [])
    assert [t.role for t in s.next(run.run_id).tasks] == ["decomposer"]


def test_approve_a_cell_not_awaiting_approval_is_an_error() -> None:
    run = leaf_run(svc())
    assert error("approve", run.root_cell_id) == (
        f"Error: {run.root_cell_id} has no decomposition awaiting approval (state `research`); "
        "approve only cells listed as awaiting approval in `petri status`"
    )
    assert error("approve", run.root_cell_id, "--reject", "--note", "x").startswith("Error: ")


# ---------------------------------------------------------------- halt, resume


def test_halt_and_resume_a_run_and_refuse_doing_either_twice() -> None:
    s = svc()
    run = leaf_run(s)
    assert petri("halt", run.run_id).stdout == f"{run.run_id}: halted\n"
    assert s.next(run.run_id).tasks == []
    assert error("halt", run.run_id) == "Error: cannot halt a run in state `halted`; allowed now: resume"
    assert petri("resume", run.run_id).stdout == f"{run.run_id}: growing\n"
    assert [t.task_id for t in s.next(run.run_id).tasks] == [run.tasks[0].task_id]
    assert error("resume", run.run_id) == "Error: cannot resume a run in state `growing`; allowed now: halt"


def test_halting_a_complete_run_says_how_to_continue_it() -> None:
    run = finished_leaf(svc())
    assert error("halt", run.run_id) == (
        "Error: cannot halt a run in state `complete`; none: the run is complete; reopen a cell "
        "(`petri resolve CELL --reopen`, or `petri feed`) to continue it"
    )


def test_halt_an_unknown_run_is_an_error() -> None:
    leaf_run(svc())
    assert error("halt", "nope").startswith("Error: no run 'nope'")


# ---------------------------------------------------------------- report, export, backup


def test_report_prints_markdown_and_writes_html_to_a_file(tmp_path: Path) -> None:
    run = finished_leaf(svc())
    md = petri("report", run.run_id).stdout
    assert md.startswith(f"# {SOLAR}\n")
    assert "**Verdict: validated**" in md
    target = tmp_path / "report.html"
    assert petri("report", run.run_id, "--format", "html", "-o", str(target)).stdout == f"wrote {target}\n"
    html = target.read_text()
    assert html.startswith("<!DOCTYPE html>") and SOLAR in html


def test_report_errors_name_the_problem() -> None:
    run = finished_leaf(svc())
    assert error("report", "nope") == "Error: no run 'nope'; list runs with petri_status (or `petri status`)"
    assert "'pdf' is not one of 'md', 'html'" in usage_error("report", run.run_id, "--format", "pdf")


def test_export_writes_the_events_and_one_markdown_file_per_cell(tmp_path: Path) -> None:
    s = svc()
    run = finished_tree(s)
    target = tmp_path / "out"
    assert petri("export", run.run_id, "--to", str(target)).stdout == f"wrote 4 files to {target}\n"
    lines = (target / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [e["seq"] for e in s.log(run.run_id)]
    cells = sorted(p.stem for p in (target / "cells").glob("*.md"))
    assert cells == sorted([run.root_cell_id, *(c["cell_id"] for c in show(run.root_cell_id)["children"])])
    assert error("export", "nope").startswith("Error: no run 'nope'")


def test_backup_writes_a_consistent_copy_lists_it_and_never_overwrites(tmp_path: Path) -> None:
    s = svc()
    finished_leaf(s)
    events = len(s.log())
    assert petri("backup", "--list").stdout == (
        f"no backups in {home() / 'backups'}; make one with `petri backup`\n"
    )
    assert json.loads(petri("backup", "--list", "--json").stdout) == []
    out = petri("backup").stdout
    assert out.startswith(f"backup written to {home() / 'backups'}")
    listed = json.loads(petri("backup", "--list", "--json").stdout)
    assert [(row["path"], row["events"]) for row in listed] == [(out.split(" to ", 1)[1].strip(), events)]
    target = tmp_path / "copy.db"
    assert json.loads(petri("backup", "--to", str(target), "--json").stdout) == {"backup": str(target)}
    with closing(sqlite3.connect(target)) as copy:
        assert copy.execute("SELECT COUNT(*) FROM events").fetchone()[0] == events
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert error("backup", "--to", str(target)) == (
        f"Error: {target} already exists; choose another file; backups never overwrite"
    )
    (home() / "backups" / "zz-not-a-dish.db").write_bytes(b"not sqlite")
    listing = petri("backup", "--list").stdout.splitlines()
    assert len(listing) == 2 and listing[1].endswith("zz-not-a-dish.db  10 bytes  unreadable")


# ---------------------------------------------------------------- verify, diagram


def test_verify_reports_an_intact_dish_in_text_and_json() -> None:
    s = svc()
    finished_leaf(s)
    report = s.verify()
    assert petri("verify").stdout == (
        f"ok: {report.events} events, chain head {report.head[:12]}, 2 citations verified, "
        "projections equal a replay\n"
    )
    data = json.loads(petri("verify", "--json").stdout)
    assert data == {"ok": True, "events": report.events, "head": report.head, "citations": 2, "problems": []}


def test_verify_json_reports_problems_and_exits_1() -> None:
    run = finished_leaf(svc())
    with closing(sqlite3.connect(home() / "petri.db", isolation_level=None)) as conn:
        conn.execute("UPDATE cells SET state = 'disproven' WHERE cell_id = ?", (run.root_cell_id,))
    result = petri("verify", "--json", code=1)
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["problems"] == ["projection cells differs from a replay of the events (2 rows)"]


def test_diagram_prints_the_state_machine_as_mermaid() -> None:
    out = petri("diagram").stdout
    lines = out.splitlines()
    assert lines[:2] == ["stateDiagram-v2", "    [*] --> new"]
    assert "    new --> decomposing: plant [needs_decomposition]" in lines
    assert "    stalled --> research: requeue" in lines
    assert "    validated --> [*]" in lines
    assert out.endswith("\n") and not out.endswith("\n\n")


@pytest.mark.parametrize(
    "args",
    [
        ["run", "Heat pumps \udcff cut emissions", "--harness", "claude"],
        ["cells", "a\udcffb"],
        ["resolve", "x-0-01", "--requeue", "--guidance", "look \udce2 again"],
    ],
)
def test_an_argument_that_is_not_utf8_is_a_usage_error_and_writes_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    """Bytes that do not decode reach Python as lone surrogates, which no store can hold."""
    dish = tmp_path / ".petri"
    result = CliRunner().invoke(main, args, env={"PETRI_HOME": str(dish)})
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert "not UTF-8 text" in result.output and "pass it as UTF-8" in result.output
    assert not dish.exists()


def test_a_real_process_given_undecodable_bytes_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "petri_core", "cells", os.fsdecode(b"caf\xe9")],
        capture_output=True,
        env={**os.environ, "PETRI_HOME": str(tmp_path / ".petri")},
    )
    assert done.returncode == 2
    assert b"Traceback" not in done.stderr and b"not UTF-8 text" in done.stderr
