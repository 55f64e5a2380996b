"""Acceptance: tampering with the dish behind Petri's back is refused or reported by `petri verify`.

Events are append-only by trigger; with the triggers dropped (raw sqlite3), every edit of an event
breaks the hash chain at a named seq, and every edit of a projection differs from a replay.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import APPEND_ONLY_TRIGGERS as TRIGGERS
from helpers import Clock, Driver, add_article, passing, raw, service, without_triggers

from petri_core.cli import main
from petri_core.errors import DishError
from petri_core.service import Service
from petri_core.store import event_hash


@pytest.fixture
def svc(tmp_path: Path) -> Service:
    """A dish holding one finished run: 30 events, two verified citations."""
    svc = service(tmp_path, Clock())
    ok = passing(add_article(svc).source_id)
    run = svc.start("Solar panels pay back their energy within four years", preset="quick", max_depth=0)
    Driver(svc, lambda task, claim: ok[task.role]).drain(run.run_id)
    assert svc.verify().ok
    return svc


def seq_of(svc: Service, type_: str) -> int:
    return int(svc.log(types=[type_])[0]["seq"])


def petri_verify(svc: Service, *args: str) -> Result:
    return CliRunner(catch_exceptions=False).invoke(
        main, ["verify", *args], env={"PETRI_HOME": str(svc.dish)}
    )


def test_an_untouched_dish_verifies_ok_and_petri_verify_exits_0(svc: Service) -> None:
    report = svc.verify()
    assert (report.ok, report.events, report.citations, report.problems) == (True, 30, 2, [])
    result = petri_verify(svc)
    assert result.exit_code == 0
    assert result.stdout == (
        f"ok: 30 events, chain head {report.head[:12]}, 2 citations verified, projections equal a replay\n"
    )


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events SET payload = '{}' WHERE seq = 3",
        "UPDATE events SET actor = 'human'",
        "DELETE FROM events WHERE seq = 30",
        "DELETE FROM events",
    ],
)
def test_update_and_delete_on_events_are_refused_by_the_append_only_triggers(svc: Service, sql: str) -> None:
    verb = sql.split()[0]
    with raw(svc) as conn:
        before = conn.execute("SELECT * FROM events ORDER BY seq").fetchall()
        with pytest.raises(sqlite3.IntegrityError, match=f"events are append-only: {verb} refused"):
            conn.execute(sql)
        assert conn.execute("SELECT * FROM events ORDER BY seq").fetchall() == before
    assert svc.verify().ok


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("payload", json.dumps({"outcome": "not_converged"})),
        ("actor", "human"),
        ("at", "2020-01-01T00:00:00.000000+00:00"),
        ("cell_id", "spp-9-99"),
        ("prev_hash", "0" * 64),
    ],
)
def test_an_edited_event_is_reported_as_tampered_naming_its_seq(
    svc: Service, column: str, value: str
) -> None:
    seq = seq_of(svc, "convergence_checked")  # an event no projection reads: the chain alone must tell
    with without_triggers(svc) as conn:
        conn.execute(f"UPDATE events SET {column} = ? WHERE seq = ?", (value, seq))
    problems = svc.verify().problems
    tampered = f"event {seq} (convergence_checked): content does not match its hash (tampered)"
    if column == "prev_hash":
        assert problems == [f"event {seq}: prev_hash does not match event {seq - 1}", tampered]
    else:
        assert problems == [tampered]


def test_an_edited_payload_that_feeds_a_projection_is_reported_by_the_chain_and_the_replay(
    svc: Service,
) -> None:
    seq = seq_of(svc, "verdict_recorded")
    with without_triggers(svc) as conn:
        payload = json.loads(conn.execute("SELECT payload FROM events WHERE seq = ?", (seq,)).fetchone()[0])
        payload["verdict"] = "NEEDS_MORE_EVIDENCE"
        conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (json.dumps(payload), seq))
    assert svc.verify().problems == [
        f"event {seq} (verdict_recorded): content does not match its hash (tampered)",
        "projection verdicts differs from a replay of the events (2 rows)",
    ]


def test_a_tampered_event_with_a_recomputed_hash_breaks_the_next_link(svc: Service) -> None:
    seq = seq_of(svc, "convergence_checked")
    with without_triggers(svc) as conn:
        row = conn.execute(
            "SELECT run_id, cell_id, task_id, type, actor, payload, at, prev_hash FROM events WHERE seq = ?",
            (seq,),
        ).fetchone()
        payload = json.dumps({"outcome": "forged"})
        digest = event_hash(seq, row[0], row[1], row[2], row[3], "human", payload, row[6], row[7])
        conn.execute(
            "UPDATE events SET actor = 'human', payload = ?, hash = ? WHERE seq = ?", (payload, digest, seq)
        )
    assert svc.verify().problems == [f"event {seq + 1}: prev_hash does not match event {seq}"]


def test_a_deleted_event_is_reported_as_a_sequence_gap_and_a_broken_link(svc: Service) -> None:
    seq = seq_of(svc, "convergence_checked")
    with without_triggers(svc) as conn:
        conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
    assert svc.verify().problems == [
        f"event {seq + 1}: sequence gap (expected {seq})",
        f"event {seq + 1}: prev_hash does not match event {seq}",
    ]


def test_deleting_the_newest_event_is_caught_by_the_projection_check(svc: Service) -> None:
    with without_triggers(svc) as conn:
        conn.execute("DELETE FROM events WHERE seq = 30")  # task_completed: the task's status is `done`
    assert svc.verify().problems == ["projection tasks differs from a replay of the events (2 rows)"]


@pytest.mark.parametrize(
    ("sql", "table"),
    [
        ("UPDATE cells SET state = 'disproven'", "cells"),
        ("UPDATE runs SET state = 'growing'", "runs"),
        ("DELETE FROM verdicts WHERE role = 'skeptic'", "verdicts"),
        ("INSERT INTO edges VALUES ('spp-0-01', 'spp-0-01', 'supports', '2026-11-01')", "edges"),
    ],
)
def test_a_projection_changed_without_an_event_is_reported(svc: Service, sql: str, table: str) -> None:
    with raw(svc) as conn:  # projections carry no trigger: only the replay can tell
        conn.execute(sql)
    problems = svc.verify().problems
    assert len(problems) == 1
    assert problems[0].startswith(f"projection {table} differs from a replay of the events")


def test_an_edited_source_text_is_reported_for_every_citation_it_no_longer_contains(svc: Service) -> None:
    with raw(svc) as conn:
        conn.execute("UPDATE sources SET text = 'The report was withdrawn.'")
    problems = svc.verify().problems
    source_id = svc.open().citations()[0].source_id
    assert problems == [
        "projection sources differs from a replay of the events (2 rows)",
        f"citation spp-0-01.i1.investigator#1: quote no longer found in {source_id}",
        f"citation spp-0-01.i1.investigator#2: quote no longer found in {source_id}",
    ]


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_a_missing_append_only_trigger_is_reported(svc: Service, trigger: str) -> None:
    with raw(svc) as conn:
        conn.execute(f"DROP TRIGGER {trigger}")
    assert svc.verify().problems == [f"append-only trigger {trigger} is missing"]


def test_petri_verify_exits_1_and_prints_every_problem(svc: Service) -> None:
    seq = seq_of(svc, "convergence_checked")
    with raw(svc) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET actor = 'human' WHERE seq = ?", (seq,))
    expected = [
        "append-only trigger events_no_update is missing",
        f"event {seq} (convergence_checked): content does not match its hash (tampered)",
    ]
    assert svc.verify().problems == expected

    result = petri_verify(svc)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"problem: {p}" for p in expected]

    as_json = petri_verify(svc, "--json")
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert (data["ok"], data["events"], data["problems"]) == (False, 30, expected)


# ---------------------------------------------------------------- bugs: verify raises instead of reporting


@pytest.mark.parametrize(
    ("type_", "payload"),
    [
        ("run_started", "null"),
        ("run_started", "[]"),
        ("task_created", '"a string"'),
        ("cell_state_changed", json.dumps({"fields": [], "from": "new", "to": "research", "reason": "x"})),
    ],
)
def test_a_payload_of_the_wrong_json_shape_is_reported_not_raised(
    svc: Service, type_: str, payload: str
) -> None:
    seq = seq_of(svc, type_)
    with without_triggers(svc) as conn:
        conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (payload, seq))
    problems = svc.verify().problems
    assert f"event {seq} ({type_}): content does not match its hash (tampered)" in problems
    result = petri_verify(svc)
    assert result.exit_code == 1
    assert "tampered" in result.stderr


def test_citations_cannot_be_edited_apart_from_their_events(svc: Service) -> None:
    """Citations are a view of their events: there is no copy to edit, so none can drift."""
    view = "cannot modify citations because it is a view"
    with raw(svc) as conn, pytest.raises(sqlite3.OperationalError, match=view):
        conn.execute("UPDATE citations SET stance = 'bogus' WHERE citation_id LIKE '%#1'")
    assert svc.verify().problems == []


@pytest.mark.parametrize("payload", ["{not json", "[1, 2]"])
def test_a_citation_payload_that_is_no_json_object_is_reported_and_the_cell_still_shows(
    svc: Service, payload: str
) -> None:
    """Citations are read from their events, so a mangled one must not stop verify or `petri show`."""
    seq = seq_of(svc, "citation_recorded")
    with without_triggers(svc) as conn:
        cell_id = conn.execute("SELECT cell_id FROM events WHERE seq = ?", (seq,)).fetchone()[0]
        conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (payload, seq))
    problems = svc.verify().problems
    assert f"event {seq} (citation_recorded): content does not match its hash (tampered)" in problems
    shown = CliRunner().invoke(main, ["show", cell_id, "--json"], env={"PETRI_HOME": str(svc.dish)})
    assert shown.exit_code == 0, shown.output
    assert len(json.loads(shown.stdout)["citations"]) == 2  # the other citation, and the mangled one's row
    with svc.open() as st, pytest.raises(DishError, match="cannot be read from its event"):
        st.citations(cell_id)  # what the workflow reads says so, rather than failing somewhere inside


def test_a_projection_key_set_to_null_is_reported_not_raised(svc: Service) -> None:
    with raw(svc) as conn:
        conn.execute("UPDATE tasks SET task_id = NULL WHERE role = 'skeptic'")
    problems = svc.verify().problems
    assert problems == ["projection tasks differs from a replay of the events (2 rows)"]
