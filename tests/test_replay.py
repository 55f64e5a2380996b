"""The projections rebuilt from the log equal the live ones value for value, whatever the payloads hold.

Live, each event's projection statement runs as it is appended; replay runs the same statements in
bulk over the whole log. These tests grow dishes through the service (and, for payloads no service
call writes, through `Store.append`) with text SQLite's JSON functions find awkward, then compare.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import ARTICLE, Clock, Driver, add_article, passing, raw, service, without_triggers

from petri_core import store
from petri_core.errors import DishError
from petri_core.machine import NewEvent
from petri_core.service import TASK_STATUS_AFTER, Service
from petri_core.store import PROJECTIONS, Store

NUL_SENTENCE = "The field log \x00 records a 12 % rise in output 🌞 after the panels were cleaned."
NUL_QUOTE = "field log \x00 records a 12 % rise in output 🌞"
LONG = "Ünïcödé — “quoted” \\ backslash \t tab, and a long tail. " * 4000  # ~220 kB


def typed_rows(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    """Every value with its SQLite storage class: 1 and 1.0 must not pass for each other."""
    columns = [r[1] for r in conn.execute(f"PRAGMA main.table_info({table})")]
    types = ", ".join(f"typeof({c})" for c in columns)
    return sorted((tuple(r) for r in conn.execute(f"SELECT *, {types} FROM {table}")), key=repr)


def append(svc: Service, *events: NewEvent) -> None:
    """Append events through the store's own write path (payloads no service call writes)."""
    with Store(svc.dish) as st, st.write():
        st.append(list(events), svc.now())


@pytest.fixture
def tricky(tmp_path: Path) -> Service:
    """A finished run whose texts hold emoji, a NUL character, quotes, backslashes and 220 kB strings."""
    svc = service(tmp_path, Clock())
    source_id = add_article(svc, text=f"{ARTICLE}\n\n{NUL_SENTENCE}\n\n{LONG}").source_id
    results = passing(source_id)
    results["investigator"] = {
        "verdict": "EVIDENCE_SUFFICIENT",
        "summary": f"two sources agree \x00 🌞 {LONG[:3900]}",  # the longest a summary may be
        "citations": [
            {
                "source_id": source_id,
                "quote": NUL_QUOTE,
                "stance": "supports",
                "level": 2,
                "finding": "a \x00 rise",
            },
            *results["investigator"]["citations"],
        ],
    }
    run = svc.start(
        "Cleaning solar panels 🌞 raises their output \x00 measurably", preset="quick", max_depth=0
    )
    Driver(svc, lambda task, claim: results[task.role]).drain(run.run_id)
    svc.feed(run.root_cell_id, source_id, note="a note with \x00 and 🌞")  # reopens the final cell
    svc.feed(run.root_cell_id, source_id, note=None)
    task_id = svc.open_tasks(run.run_id)[0].task_id
    svc.runner_started(run.run_id, "r1", pid=7, harness="claude", jobs=1, budget={"usd": 5, "tokens": None})
    usage = {"input_tokens": 10, "output_tokens": 2, "cache_read_tokens": 0, "cache_write_tokens": 0}
    for cost in (1, 1.0, 0.30000000000000004):  # an int, a float equal to it, a float with 17 digits
        svc.record_transcript(
            task_id,
            runner="r1",
            worker="run-r1-1",
            harness="claude",
            exit_code=None,
            duration_s=0.1 + 0.2,
            outcome="submitted \x00 🌞",
            usage={**usage, "reasoning_tokens": 0, "cost_usd": cost, "model_calls": 1, "model": None},
            transcript=b'{"type":"result"}\n',
        )
    svc.runner_stopped(run.run_id, "r1", "done", {"why": "\x00"})
    edge = {"child_id": "elsewhere-1-01", "parent_id": run.root_cell_id, "relation": "supports \x00 🌞"}
    append(svc, NewEvent("edge_added", edge, run.run_id, "elsewhere-1-01"))  # a quick run has no edges
    return svc


def test_a_replay_equals_the_live_projections_value_for_value_and_type_for_type(tricky: Service) -> None:
    assert tricky.verify().problems == []
    with tricky.open() as st:
        fresh = st.replay()
        for table in PROJECTIONS:
            assert typed_rows(fresh, table) == typed_rows(st.conn, table), table
        fresh.close()
        citations = st.citation_rows()
        quotes = [c["quote"] for c in citations]
        viewed = [dict(r) for r in st.conn.execute("SELECT * FROM citations ORDER BY citation_id")]
        notes = [r[0] for r in st.conn.execute("SELECT note FROM evidence ORDER BY at")]
        costs = [r[0] for r in st.conn.execute("SELECT typeof(cost_usd) FROM usage")]
        claim, directive = st.conn.execute(
            "SELECT claim, directive FROM runs JOIN cells ON cell_id = root_cell_id"
        ).fetchone()
    assert NUL_QUOTE in quotes  # the NUL and what follows it survived, live and in replay
    # The SQL view gives the same rows, value for value and type for type, but for the strings SQLite's
    # json_extract ends at an escaped NUL.
    nul = {c["citation_id"] for c in citations if any("\x00" in str(v) for v in c.values())}
    assert nul and len(viewed) == len(citations) > len(nul)
    assert [repr(c) for c in citations if c["citation_id"] not in nul] == [
        repr(v) for v in viewed if v["citation_id"] not in nul
    ]
    assert notes == [None]  # the second feed of the same source and iteration replaced the first
    assert costs == ["real"] * 3
    assert (claim, directive) == (
        "Cleaning solar panels 🌞 raises their output \x00 measurably",
        "a note with \x00 and 🌞",
    )


def test_the_bulk_replay_applies_only_payloads_holding_a_nul_one_event_at_a_time(
    tricky: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied: list[int] = []
    apply_event = store.apply_event

    def counted(conn: sqlite3.Connection, event: Mapping[str, Any]) -> None:
        applied.append(event["seq"])
        apply_event(conn, event)

    monkeypatch.setattr(store, "apply_event", counted)
    with tricky.open() as st:
        st.replay().close()
        holding_nul = [r[0] for r in st.conn.execute("SELECT seq FROM events WHERE payload GLOB '*\\u0000*'")]
    assert applied == holding_nul
    assert len(holding_nul) > 5  # a source, a citation, a verdict, a run, a cell, a feed …


def test_replaying_event_by_event_as_the_live_path_applies_them_gives_the_same_projections(
    tricky: Service,
) -> None:
    with tricky.open() as st:
        in_bulk, one_by_one = st.replay(), st.replay(event_by_event=True)
        for table in PROJECTIONS:
            assert typed_rows(one_by_one, table) == typed_rows(in_bulk, table), table
        in_bulk.close()
        one_by_one.close()


def test_an_absent_optional_key_and_ints_where_floats_belong_replay_as_they_were_applied(
    tricky: Service,
) -> None:
    with tricky.open() as st:
        cell = st.conn.execute("SELECT cell_id, run_id FROM cells LIMIT 1").fetchone()
        task_id, payload = st.conn.execute(
            "SELECT task_id, payload FROM events WHERE type = 'citation_recorded' LIMIT 1"
        ).fetchone()
    citation = json.loads(payload)
    source_id = citation["source_id"]
    append(
        tricky,
        NewEvent("evidence_fed", {"source_id": source_id, "iteration": 7}, cell[1], cell[0]),  # no "note"
        NewEvent(
            "citation_recorded",
            {**citation, "citation_id": "x#int", "match_score": 1},
            cell[1],
            cell[0],
            task_id,
        ),
        NewEvent(
            "citation_recorded",
            {**citation, "citation_id": "x#float", "match_score": 1.0},
            cell[1],
            cell[0],
            task_id,
        ),
    )
    assert tricky.verify().problems == []
    with tricky.open() as st:
        assert st.conn.execute("SELECT note FROM evidence WHERE iteration = 7").fetchone()[0] is None
        scores = st.conn.execute(
            "SELECT match_score, typeof(match_score) FROM citations WHERE citation_id LIKE 'x#%'"
        ).fetchall()
        assert [tuple(r) for r in scores] == [(1.0, "real"), (1.0, "real")]


@pytest.mark.parametrize("first_note", ["has a \x00 in it", "plain"])
def test_the_newest_evidence_feed_wins_whether_or_not_a_payload_holds_a_nul(
    tricky: Service, first_note: str
) -> None:
    second_note = "plain" if "\x00" in first_note else "has a \x00 in it"
    with tricky.open() as st:
        cell_id, run_id = st.conn.execute("SELECT cell_id, run_id FROM cells LIMIT 1").fetchone()
        source_id = st.conn.execute("SELECT source_id FROM sources").fetchone()[0]
    for note in (first_note, second_note):
        append(
            tricky,
            NewEvent("evidence_fed", {"source_id": source_id, "iteration": 9, "note": note}, run_id, cell_id),
        )
    assert tricky.verify().problems == []
    with tricky.open() as st:
        assert st.conn.execute("SELECT note FROM evidence WHERE iteration = 9").fetchone()[0] == second_note


def test_a_payload_json_cannot_hold_is_refused_when_appended_and_nothing_is_written(tricky: Service) -> None:
    with tricky.open() as st:
        task_id, before = st.conn.execute("SELECT task_id FROM usage").fetchone()[0], st.event_count()
    with pytest.raises(DishError, match="cannot record task_transcript: Out of range float values"):
        tricky.record_transcript(
            task_id,
            runner="r1",
            worker="run-r1-1",
            harness="claude",
            exit_code=0,
            duration_s=1.0,
            outcome="submitted",
            usage={"cost_usd": float("inf")},  # Python would write `Infinity`, which is not JSON
            transcript=b"{}",
        )
    with tricky.open() as st:
        assert st.event_count() == before
    assert tricky.verify().problems == []


def test_a_dish_under_a_path_that_needs_percent_encoding_replays(tmp_path: Path) -> None:
    svc = Service(tmp_path / "a b#c?d%20e ü" / ".petri", clock=Clock())
    ok = passing(add_article(svc).source_id)
    run = svc.start("Solar panels pay back their energy within four years", preset="quick", max_depth=0)
    Driver(svc, lambda task, claim: ok[task.role]).drain(run.run_id)
    assert svc.verify().problems == []


CELL = {"seq": 1, "run_id": "r", "cell_id": "r-0-01", "task_id": None, "at": "2026-11-01T12:00:00+00:00"}
CREATED = {
    "level": 0,
    "seq": 1,
    "text": "a claim",
    "atomic": False,
    "leaf_reason": None,
    "bedrock_reason": None,
}


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"step": 3},
        {"summary": None, "directive": "look \x00 again 🌞", "proposal": None},
        {"proposal": {"children": [{"text": "b"}]}, "atomic": True, "flagged": LONG},
        {name: 1 for name in store.CELL_FIELDS if name != "proposal"} | {"proposal": {}},
    ],
    ids=["none", "one", "nulls-and-nul", "json-and-long", "all"],
)
def test_a_live_cell_update_naming_its_fields_sets_what_the_replayed_statement_sets(
    fields: dict[str, Any],
) -> None:
    """Live, a cell event sets just the fields its payload names; replay tests every known field."""
    live, replayed = (sqlite3.connect(":memory:"), sqlite3.connect(":memory:"))
    for conn in (live, replayed):
        store.add_functions(conn)
        store.create_projections(conn)
        store.apply_event(conn, {**CELL, "type": "cell_created", "payload": store.canonical(CREATED)})
    for type_, payload in (
        ("cell_state_changed", {"from": "new", "to": "decomposing", "fields": fields}),
        ("cell_updated", {"fields": fields}),
    ):
        event = {**CELL, "seq": 2, "type": type_, "payload": store.canonical(payload)}
        store.apply_event(live, event, payload)
        store.apply_event(replayed, event)
        assert typed_rows(live, "cells") == typed_rows(replayed, "cells"), type_
    assert typed_rows(live, "cells") != [], "the cell exists"


def test_a_live_cell_update_naming_an_unknown_field_is_refused_as_in_replay() -> None:
    conn = sqlite3.connect(":memory:")
    store.add_functions(conn)
    store.create_projections(conn)
    store.apply_event(conn, {**CELL, "type": "cell_created", "payload": store.canonical(CREATED)})
    payload = {"fields": {"step": 2, "colour": "red"}}
    event = {**CELL, "seq": 2, "type": "cell_updated", "payload": store.canonical(payload)}
    with pytest.raises(DishError, match=r'event 2 sets unknown cell fields \{"colour":"red"\}'):
        store.apply_event(conn, event, payload)


# ---------------------------------------------------------------- tampering is still reported


CHANGES = {
    "runs": "claim",
    "cells": "text",
    "edges": "relation",
    "tasks": "brief",
    "verdicts": "summary",
    "citations": "quote",
    "sources": "title",
    "fetches": "url",
    "evidence": "at",
    "usage": "harness",
    "runners": "harness",
}


@pytest.mark.parametrize("table", list(PROJECTIONS))
def test_a_changed_row_in_any_projection_is_reported(tricky: Service, table: str) -> None:
    column = CHANGES[table]
    with raw(tricky) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0
        conn.execute(
            f"UPDATE {table} SET {column} = {column} || '!' WHERE rowid = (SELECT min(rowid) FROM {table})"
        )
    assert tricky.verify().problems == [f"projection {table} differs from a replay of the events (2 rows)"]


@pytest.mark.parametrize("table", list(PROJECTIONS))
def test_a_deleted_row_in_any_projection_is_reported(tricky: Service, table: str) -> None:
    with raw(tricky) as conn:
        conn.execute(f"DELETE FROM {table} WHERE rowid = (SELECT min(rowid) FROM {table})")
    problems = tricky.verify().problems
    assert problems[0] == f"projection {table} differs from a replay of the events (1 rows)"
    assert all(p.startswith("citation ") for p in problems[1:])  # a deleted source loses its quotes


def seq_of(svc: Service, type_: str) -> int:
    return int(svc.log(types=[type_])[0]["seq"])


@pytest.mark.parametrize(
    ("type_", "change", "error"),
    [
        ("verdict_recorded", lambda p: [], "NOT NULL constraint failed: verdicts.role"),
        ("task_claimed", lambda p: {**p, "fence": None}, "NOT NULL constraint failed: tasks.fence"),
        (
            "cell_state_changed",
            lambda p: {**p, "fields": {"bogus": 1}},
            'sets unknown cell fields {"bogus":1}',
        ),
        ("source_stored", lambda p: "not an object", "NOT NULL constraint failed: sources.url"),
    ],
)
def test_a_payload_replay_refuses_is_reported_naming_its_event(
    tricky: Service, type_: str, change: Any, error: str
) -> None:
    seq = seq_of(tricky, type_)
    with without_triggers(tricky) as conn:
        payload = json.loads(conn.execute("SELECT payload FROM events WHERE seq = ?", (seq,)).fetchone()[0])
        conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (json.dumps(change(payload)), seq))
    problems = tricky.verify().problems
    assert problems[0] == f"event {seq} ({type_}): content does not match its hash (tampered)"
    assert problems[1].startswith(f"replay failed at event {seq} ({type_}): ")
    assert error in problems[1]


def test_a_citation_event_stripped_of_its_quote_is_named_by_the_chain_and_the_quote_check(
    tricky: Service,
) -> None:
    """A citation is read from its event (nothing to replay): the tampered event is named, and its
    citation reads with no quote, which the quote check names too."""
    seq = seq_of(tricky, "citation_recorded")
    with without_triggers(tricky) as conn:
        payload = json.loads(conn.execute("SELECT payload FROM events WHERE seq = ?", (seq,)).fetchone()[0])
        del payload["quote"]
        conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (json.dumps(payload), seq))
    problems = tricky.verify().problems
    assert problems == [
        f"event {seq} (citation_recorded): content does not match its hash (tampered)",
        f"citation {payload['citation_id']}: quote no longer found in {payload['source_id']}",
    ]
    with tricky.open() as st:
        assert [c["quote"] for c in st.citation_rows() if c["citation_id"] == payload["citation_id"]] == [
            None
        ]


def test_an_event_of_an_unknown_type_is_reported_naming_it(tricky: Service) -> None:
    seq = seq_of(tricky, "convergence_checked")
    with without_triggers(tricky) as conn:
        conn.execute("UPDATE events SET type = 'comet_sighted' WHERE seq = ?", (seq,))
    problems = tricky.verify().problems
    assert problems[1] == (
        f"replay failed at event {seq} (comet_sighted): "
        f"DishError(\"event {seq} has unknown type 'comet_sighted'\")"
    )


def test_the_task_status_a_submit_reads_from_its_events_is_the_one_the_projection_writes() -> None:
    # `ready_created` tells which new tasks a submission left ready from its events, not the table.
    writes_status = {
        type_: re.search(r"status = '(\w+)'|INSERT INTO tasks .*?'(\w+)', 1, ", p.sql)
        for type_, p in store.APPLY.items()
        if "tasks" in p.sql.split(" SET ")[0].split(" SELECT ")[0]
    }
    found = {type_: next(g for g in m.groups() if g) for type_, m in writes_status.items() if m}
    assert found == TASK_STATUS_AFTER


OLD_CITATIONS = """CREATE TABLE citations (citation_id TEXT PRIMARY KEY, cell_id TEXT NOT NULL,
    task_id TEXT NOT NULL, role TEXT NOT NULL, iteration INTEGER NOT NULL, source_id TEXT NOT NULL,
    quote TEXT NOT NULL, stance TEXT NOT NULL, level INTEGER NOT NULL, finding TEXT NOT NULL,
    match_start INTEGER NOT NULL, match_end INTEGER NOT NULL, match_score REAL NOT NULL)"""


def test_a_dish_from_before_m005_trades_its_citations_table_for_the_view_and_reads_the_same(
    tricky: Service,
) -> None:
    """Until m005 every citation was copied into a table. Opening such a dish drops the copy (the
    events hold every citation), indexes the citation events by cell (m006) and reads the same
    citations, NUL and all, from the events."""
    with tricky.open() as st:
        before = st.citation_rows()
    tricky.close()
    fields = ", ".join(
        f if f in ("cell_id", "task_id") else f"petri_json_extract(payload, '$.{f}')"
        for f in store.CITATION_FIELDS
    )
    with raw(tricky) as conn:
        store.add_functions(conn)
        conn.execute("DROP VIEW citations")
        conn.execute(OLD_CITATIONS)
        conn.execute("CREATE INDEX citations_cell ON citations (cell_id)")
        conn.execute(f"INSERT INTO citations SELECT {fields} FROM events WHERE type = 'citation_recorded'")
        conn.execute("DROP INDEX events_citations")
        conn.execute(
            "DELETE FROM _sqlite_migrations WHERE name IN (?, ?)",
            ("m005_citations_read_from_the_log", "m006_citations_by_cell"),
        )
        assert conn.execute("SELECT count(*) FROM citations").fetchone()[0] == len(before)
    with Store(tricky.dish) as st:
        kinds = dict(st.conn.execute("SELECT name, type FROM sqlite_master WHERE name LIKE 'citations%'"))
        assert kinds == {"citations": "view"}  # the table and its index are gone
        plans: list[str] = []
        st.conn.set_trace_callback(plans.append)
        st.citation_rows("any-cell")
        st.conn.set_trace_callback(None)
        asked = plans[0].replace("'any-cell'", "?")
        plan = st.conn.execute(f"EXPLAIN QUERY PLAN {asked}", ("x",)).fetchall()
        assert "USING INDEX events_citations" in str([tuple(r) for r in plan])  # no other events read
        assert st.citation_rows() == before
        assert any("\x00" in str(c["quote"]) for c in before)
    assert tricky.verify().problems == []
