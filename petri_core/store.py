"""The dish: one SQLite file with an append-only, hash-chained event log and its projections.

Every write is `BEGIN IMMEDIATE` → event rows + projection updates → `COMMIT`, so a crash leaves
either the whole transition or none of it. The projections are a pure function of the events:
`replay()` rebuilds them and `verify()` proves they agree.

Importing this module does not import pydantic: the `*_row(s)` reads return plain dicts, which the
read commands (`views.py`) show as they are; the reads that return models import them on first use.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import DishError, NotFound

if TYPE_CHECKING:
    from .machine import NewEvent
    from .models import Cell, Citation, Edge, Event, Run, Source, Task, Verdict

DB_NAME = "petri.db"
DISH_DIR = ".petri"
GENESIS = "0" * 64
BUSY_TIMEOUT_S = 60.0

PROJECTIONS: Mapping[str, str] = {
    "runs": """CREATE TABLE runs (run_id TEXT PRIMARY KEY, claim TEXT NOT NULL, preset TEXT NOT NULL,
        state TEXT NOT NULL, root_cell_id TEXT NOT NULL, settings TEXT NOT NULL, clarifications TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    "cells": """CREATE TABLE cells (cell_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, level INTEGER NOT NULL,
        seq INTEGER NOT NULL, text TEXT NOT NULL, state TEXT NOT NULL, iteration INTEGER NOT NULL,
        cycle_start INTEGER NOT NULL, step INTEGER NOT NULL, decomposition_round INTEGER NOT NULL,
        atomic INTEGER NOT NULL, leaf_reason TEXT, bedrock_reason TEXT, directive TEXT, summary TEXT,
        stalled_from TEXT, stall_reason TEXT, flagged TEXT, final_reason TEXT, proposal TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    "edges": """CREATE TABLE edges (child_id TEXT NOT NULL, parent_id TEXT NOT NULL, relation TEXT NOT NULL,
        created_at TEXT NOT NULL, PRIMARY KEY (child_id, parent_id))""",
    "tasks": """CREATE TABLE tasks (task_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, cell_id TEXT NOT NULL,
        role TEXT NOT NULL, kind TEXT NOT NULL, iteration INTEGER NOT NULL, phase TEXT NOT NULL,
        step INTEGER NOT NULL, opener TEXT, status TEXT NOT NULL, attempt INTEGER NOT NULL,
        ready_at TEXT NOT NULL, lease TEXT, fence INTEGER NOT NULL, worker TEXT, expires_at TEXT,
        brief TEXT NOT NULL, result_hash TEXT, outcome TEXT, created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL)""",
    "verdicts": """CREATE TABLE verdicts (task_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, cell_id TEXT NOT NULL,
        role TEXT NOT NULL, iteration INTEGER NOT NULL, kind TEXT NOT NULL, verdict TEXT NOT NULL,
        summary TEXT NOT NULL, at TEXT NOT NULL)""",
    "sources": """CREATE TABLE sources (source_id TEXT PRIMARY KEY, url TEXT NOT NULL, final_url TEXT NOT NULL,
        status INTEGER NOT NULL, content_type TEXT NOT NULL, fetched_at TEXT NOT NULL,
        content_hash TEXT NOT NULL UNIQUE, title TEXT, author TEXT, published TEXT, text TEXT NOT NULL,
        note TEXT)""",
    "fetches": """CREATE TABLE fetches (fetch_seq INTEGER PRIMARY KEY, url TEXT NOT NULL, final_url TEXT NOT NULL,
        source_id TEXT NOT NULL, fetched_at TEXT NOT NULL)""",
    "evidence": """CREATE TABLE evidence (cell_id TEXT NOT NULL, source_id TEXT NOT NULL,
        iteration INTEGER NOT NULL, note TEXT, at TEXT NOT NULL, PRIMARY KEY (cell_id, source_id, iteration))""",
    "usage": """CREATE TABLE usage (seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, cell_id TEXT NOT NULL,
        task_id TEXT NOT NULL, attempt INTEGER NOT NULL, runner TEXT NOT NULL, worker TEXT NOT NULL,
        harness TEXT NOT NULL, exit_code INTEGER, duration_s REAL NOT NULL, outcome TEXT NOT NULL,
        input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
        model_calls INTEGER NOT NULL, model TEXT, transcript_hash TEXT NOT NULL,
        transcript_bytes INTEGER NOT NULL, at TEXT NOT NULL)""",
    "runners": """CREATE TABLE runners (runner_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, pid INTEGER NOT NULL,
        harness TEXT NOT NULL, jobs INTEGER NOT NULL, budget TEXT NOT NULL, started_at TEXT NOT NULL,
        stopped_at TEXT, stop_reason TEXT)""",
}
#: Every migration `_migrations` defines, in order (a dish that has them all needs no sqlite_utils).
MIGRATION_NAMES = (
    "m001_events_and_projections",
    "m002_usage_runners_blobs",
    "m003_usage_task_index",
    "m004_sources_note",
    "m005_citations_read_from_the_log",
    "m006_citations_by_cell",
)
M001, M002, M003, M004, M005, M006 = MIGRATION_NAMES
#: Projection tables a later migration added (an older dish gets them empty: it cannot hold their events).
ADDED: Mapping[str, str] = {"usage": M002, "runners": M002}
INDEXES = (
    "CREATE INDEX cells_run ON cells (run_id, state)",
    "CREATE INDEX edges_parent ON edges (parent_id)",
    "CREATE INDEX tasks_cell ON tasks (cell_id, iteration)",
    "CREATE INDEX tasks_status ON tasks (status, ready_at)",
    "CREATE INDEX tasks_run ON tasks (run_id, status)",
    "CREATE INDEX verdicts_cell ON verdicts (cell_id, iteration)",
    "CREATE INDEX fetches_url ON fetches (url, fetched_at)",
    "CREATE INDEX usage_run ON usage (run_id)",
    "CREATE INDEX usage_cell ON usage (cell_id)",
    "CREATE INDEX usage_task ON usage (task_id)",  # `petri show` sums usage per task (m003)
)
#: A citation's fields, in the order `citations` gives them: the event's own cell and task, the rest
#: from its payload.
CITATION_FIELDS = (
    "citation_id",
    "cell_id",
    "task_id",
    "role",
    "iteration",
    "source_id",
    "quote",
    "stance",
    "level",
    "finding",
    "match_start",
    "match_end",
    "match_score",
)
#: Citations are read from their `citation_recorded` events, never copied into a table: the log holds
#: them once (replay has nothing to rebuild for 70 % of a cited dish's events; benchmarks P5).
#: Petri's reads decode the payload in Python (`Store.citation_rows`); this view is for other SQL
#: readers, and like every `json_extract` in SQLite 3.40 it ends a string at an escaped NUL.
CITATIONS_VIEW = (
    "CREATE VIEW citations AS SELECT "
    + ", ".join(
        field
        if field in ("cell_id", "task_id")
        else f"CAST(json_extract(payload, '$.{field}') AS REAL) AS {field}"
        if field == "match_score"
        else f"json_extract(payload, '$.{field}') AS {field}"
        for field in CITATION_FIELDS
    )
    + " FROM events WHERE type = 'citation_recorded'"
)
#: A cell's citations without its other events (heartbeats, tasks, state changes): a partial index,
#: so only a citation's own event pays for an entry.
CITATIONS_INDEX = "CREATE INDEX events_citations ON events (cell_id, seq) WHERE type = 'citation_recorded'"
#: Content-addressed storage (harness transcripts): written beside the event that names the hash,
#: in the same transaction; never a projection, never updated or deleted.
BLOBS_DDL = (
    """CREATE TABLE blobs (hash TEXT PRIMARY KEY, encoding TEXT NOT NULL, size INTEGER NOT NULL,
        data BLOB NOT NULL)""",
    """CREATE TRIGGER blobs_no_update BEFORE UPDATE ON blobs
        BEGIN SELECT RAISE(ABORT, 'blobs are immutable: UPDATE refused'); END""",
    """CREATE TRIGGER blobs_no_delete BEFORE DELETE ON blobs
        BEGIN SELECT RAISE(ABORT, 'blobs are immutable: DELETE refused'); END""",
)
BLOB_COMPRESS_AT = 4096
EVENTS_DDL = (
    """CREATE TABLE events (seq INTEGER PRIMARY KEY, run_id TEXT, cell_id TEXT, task_id TEXT, type TEXT NOT NULL,
        actor TEXT NOT NULL, payload TEXT NOT NULL, at TEXT NOT NULL, prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL)""",
    "CREATE INDEX events_run ON events (run_id, seq)",
    "CREATE INDEX events_cell ON events (cell_id, seq)",
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END""",
)
CELL_FIELDS = frozenset(
    {
        "iteration",
        "cycle_start",
        "step",
        "decomposition_round",
        "atomic",
        "leaf_reason",
        "bedrock_reason",
        "directive",
        "summary",
        "stalled_from",
        "stall_reason",
        "flagged",
        "final_reason",
        "proposal",
    }
)
JSON_COLUMNS = {"settings", "clarifications", "proposal", "outcome", "budget"}
BOOL_COLUMNS = {"atomic"}


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 (the hashed form of a payload).

    NaN and the infinities have no JSON form (Python would write `NaN`, which SQLite's JSON functions,
    and so the projections, refuse): they raise ValueError.
    """
    return _CANONICAL.encode(value)


def iso(moment: datetime) -> str:
    """The one timestamp format of the dish (sortable as text)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@functools.cache
def _models() -> ModuleType:
    """The pydantic models, imported when a read first returns one (see the module's docstring)."""
    from . import models

    return models


def event_hash(
    seq: int,
    run_id: str | None,
    cell_id: str | None,
    task_id: str | None,
    type_: str,
    actor: str,
    payload: str,
    at: str,
    prev_hash: str,
) -> str:
    """The hash that chains an event to its predecessor."""
    parts = [str(seq), run_id or "", cell_id or "", task_id or "", type_, actor, payload, at, prev_hash]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


# ---------------------------------------------------------------- finding the dish


def find_dish(start: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The dish directory: `PETRI_HOME`, else the nearest `.petri/` upwards (like git's `.git`)."""
    env = os.environ if environ is None else environ
    if env.get("PETRI_HOME"):
        return Path(env["PETRI_HOME"]).expanduser()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / DISH_DIR / DB_NAME).exists():
            return folder / DISH_DIR
    return None


def default_dish(start: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """Where a dish is (or would be created): the found one, else `./.petri`."""
    return find_dish(start, environ) or (start or Path.cwd()).resolve() / DISH_DIR


# ---------------------------------------------------------------- projection
#
# Each event type changes the projections by one SQL statement over its event row: `{e}seq`,
# `{e}run_id`, `{e}cell_id`, `{e}task_id`, `{e}at` and `{e}payload` (the canonical JSON text). The
# same text runs live and in replay: `Store.append` binds the row as named parameters (`{e}` is
# `:`); replay runs it in a trigger for each event of the log (`{e}` is `new.`) or, for a plain
# INSERT into a table no other type writes, once over all of its type's events (`{e}` is `e.`).

#: How canonical JSON writes a NUL character. SQLite 3.40's json_extract cuts a string there, so a
#: payload holding one is read with `petri_json_extract`, a Python twin that keeps the whole string.
NUL = "\\u0000"
EVENT_COLUMNS = ("seq", "run_id", "cell_id", "task_id", "type", "at", "payload")


def _p(path: str) -> str:
    """SQL for the payload's value at `path` (`quote`, `usage.input_tokens`): NULL when absent."""
    return f"{{json}}({{e}}payload, '$.{path}')"


def _pj(path: str) -> str:
    """SQL for the payload's JSON text at `path`: canonical, because the payload is."""
    return f"({{e}}payload -> '$.{path}')"


def _json_extract_keeping_nul(document: str, path: str) -> Any:
    """SQLite's `json_extract(document, path)` for a `$.a.b` path, without cutting strings at NUL."""
    value: Any = json.loads(document)
    for key in path.split(".")[1:]:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return canonical(value) if isinstance(value, (dict, list)) else value


def _object(payload: str) -> dict[str, Any]:
    """A payload as a dict; {} for one that is not a JSON object (tampered: verify names it)."""
    try:
        value = json.loads(payload)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def add_functions(conn: sqlite3.Connection) -> None:
    """Register what projection statements call besides SQLite's own functions."""
    conn.create_function("petri_json_extract", 2, _json_extract_keeping_nul, deterministic=True)


@dataclass(frozen=True)
class Projection:
    """What one event type does to the projections: one statement, or none (events kept for the record).

    `bulk` marks a plain INSERT into a table no other type writes, which replay runs once for all the
    type's events. `guard` is an SQL expression over the event row: NULL, or what is wrong with an
    event the statement must refuse.
    """

    sql: str = ""
    bulk: bool = False
    guard: str = ""

    def statement(self, e: str, *, nul: bool = False, rows: str = "") -> str:
        """The statement for an event row named `e` (`:`, `new.`), or for `rows` (a FROM clause) as `e.`.

        `nul` reads payloads that hold a NUL character.
        """
        return self.sql.format(e=e, json="petri_json_extract" if nul else "json_extract", rows=rows)


def _insert(table: str, *values: str, replace: bool = False, bulk: bool = False) -> Projection:
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    return Projection(f"{verb} INTO {table} SELECT {', '.join(values)}{{rows}}", bulk)


def _update(table: str, key: str, guard: str = "", **values: str) -> Projection:
    sets = ", ".join(f"{column} = {value}" for column, value in values.items())
    return Projection(f"UPDATE {table} SET {sets} WHERE {table}.{key}", guard=guard)


def _task(**values: str) -> Projection:
    return _update("tasks", "task_id = {e}task_id", **values, updated_at="{e}at")


@dataclass(frozen=True)
class CellUpdate(Projection):
    """A cell event's update: its own columns, and each cell field its payload's `fields` names.

    `sql` tests every known field for presence, as replay must. A live write, whose payload Python
    holds, runs `naming(fields)` instead: the same values, set for just the fields named. On such a
    payload the two agree: each absent field's CASE keeps the column, each named one's takes the
    value, and the guard, which refuses unknown fields, finds none (benchmarks P1: a fifth of the
    SQL time of a submission went to these tests)."""

    values: tuple[tuple[str, str], ...] = ()  # (column, value) pairs, every cell field among them

    def naming(self, fields: frozenset[str]) -> Projection:
        sets = {c: v for c, v in self.values if c in fields or c not in CELL_FIELDS}
        return _update("cells", _CELL_KEY, **sets)


_CELL_KEY = "cell_id = {e}cell_id"


def _cell(**values: str) -> CellUpdate:
    """Set every cell field the payload's `fields` names (`proposal` as JSON text); refuse others."""
    fields = {}
    for name in sorted(CELL_FIELDS):
        path = f"fields.{name}"
        fields[name] = f"nullif({_pj(path)}, 'null')" if name == "proposal" else _p(path)
    present = {
        name: f"CASE WHEN json_type({{e}}payload, '$.fields.{name}') IS NULL THEN {name} ELSE {value} END"
        for name, value in fields.items()
    }
    known = ", ".join(f"'$.{name}'" for name in sorted(CELL_FIELDS))
    unknown = f"'sets unknown cell fields ' || nullif(json_remove({_pj('fields')}, {known}), '{{{{}}}}')"
    generic = _update("cells", _CELL_KEY, unknown, **values, **present, updated_at="{e}at")
    settings = (*values.items(), *fields.items(), ("updated_at", "{e}at"))
    return CellUpdate(generic.sql, guard=generic.guard, values=settings)


_no_projection = Projection()  # events kept for the record only (convergence checks, decisions)
USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "model_calls",
    "model",
)
APPLY: Mapping[str, Projection] = {
    "run_started": _insert(
        "runs",
        "{e}run_id",
        _p("claim"),
        _p("preset"),
        "'intake'",
        _p("root_cell_id"),
        _pj("settings"),
        _pj("clarifications"),
        "{e}at",
        "{e}at",
    ),
    "run_state_changed": _update("runs", "run_id = {e}run_id", state=_p("to"), updated_at="{e}at"),
    "cell_created": _insert(
        "cells",
        "{e}cell_id",
        "{e}run_id",
        _p("level"),
        _p("seq"),
        _p("text"),
        "'new'",
        *("0",) * 4,  # iteration, cycle_start, step, decomposition_round
        _p("atomic"),
        _p("leaf_reason"),
        _p("bedrock_reason"),
        *("NULL",) * 7,  # directive … proposal
        "{e}at",
        "{e}at",
    ),
    "cell_state_changed": _cell(state=_p("to")),
    "cell_updated": _cell(),
    "edge_added": _insert("edges", _p("child_id"), _p("parent_id"), _p("relation"), "{e}at", bulk=True),
    "task_created": _insert(
        "tasks",
        "{e}task_id",
        "{e}run_id",
        "{e}cell_id",
        *map(_p, ("role", "kind", "iteration", "phase", "step", "opener")),
        "'ready'",
        "1",  # attempt
        _p("ready_at"),
        "NULL",  # lease
        "0",  # fence
        "NULL",  # worker
        "NULL",  # expires_at
        _p("brief"),
        "NULL",  # result_hash
        "NULL",  # outcome
        "{e}at",
        "{e}at",
    ),
    "task_claimed": _task(
        status="'leased'",
        lease=_p("lease"),
        fence=_p("fence"),
        worker=_p("worker"),
        expires_at=_p("expires_at"),
    ),
    "lease_renewed": _task(expires_at=_p("expires_at")),
    "task_released": _task(
        status="'ready'",
        lease="NULL",
        worker="NULL",
        expires_at="NULL",
        attempt=_p("attempt"),
        ready_at=_p("ready_at"),
    ),
    "task_stalled": _task(status="'stalled'", expires_at="NULL"),
    "task_cancelled": _task(status="'cancelled'", expires_at="NULL"),
    "task_submitted": _task(status="'submitted'", result_hash=_p("result_hash"), expires_at="NULL"),
    "task_completed": _task(status="'done'", outcome=_pj("outcome")),
    "verdict_recorded": _insert(
        "verdicts",
        "{e}task_id",
        "{e}seq",
        "{e}cell_id",
        *map(_p, ("role", "iteration", "kind", "verdict", "summary")),
        "{e}at",
        bulk=True,
    ),
    "citation_recorded": _no_projection,  # read from the log itself (`CITATIONS_VIEW`)
    "source_stored": _insert(
        "sources",
        *map(_p, ("source_id", "url", "final_url", "status", "content_type", "fetched_at")),
        *map(_p, ("content_hash", "title", "author", "published", "text", "note")),
        bulk=True,
    ),
    "source_fetched": _insert(
        "fetches", "{e}seq", *map(_p, ("url", "final_url", "source_id", "fetched_at")), bulk=True
    ),
    # The newest feed of a source to a cell's iteration wins: replayed event by event, in order.
    "evidence_fed": _insert(
        "evidence", "{e}cell_id", _p("source_id"), _p("iteration"), _p("note"), "{e}at", replace=True
    ),
    "convergence_checked": _no_projection,
    "human_decided": _no_projection,
    "task_failed": _no_projection,
    "task_transcript": _insert(
        "usage",
        "{e}seq",
        "{e}run_id",
        "{e}cell_id",
        "{e}task_id",
        *map(_p, ("attempt", "runner", "worker", "harness", "exit_code", "duration_s", "outcome")),
        *(_p(f"usage.{key}") for key in USAGE_KEYS),
        _p("transcript_hash"),
        _p("transcript_bytes"),
        "{e}at",
        bulk=True,
    ),
    "runner_started": _insert(
        "runners",
        _p("runner"),
        "{e}run_id",
        _p("pid"),
        _p("harness"),
        _p("jobs"),
        _pj("budget"),
        "{e}at",
        "NULL",  # stopped_at
        "NULL",  # stop_reason
    ),
    "runner_stopped": _update(
        "runners", f"runner_id = {_p('runner')}", stopped_at="{e}at", stop_reason=_p("reason")
    ),
}


def apply_event(
    conn: sqlite3.Connection, event: Mapping[str, Any], payload: Mapping[str, Any] | None = None
) -> None:
    """Update the projections for one stored event (a mapping of `EVENT_COLUMNS`, payload as text).

    `payload`, the event's payload as Python holds it (a live write), lets a cell event set just the
    fields it names (`CellUpdate`); without it, the statement replay runs is used.
    """
    type_ = event["type"]
    if type_ not in APPLY:
        raise DishError(f"event {event['seq']} has unknown type {type_!r}")
    nul = NUL in event["payload"]
    if payload is not None and isinstance(APPLY[type_], CellUpdate):
        fields = payload.get("fields", {})
        if isinstance(fields, dict) and fields.keys() <= CELL_FIELDS:
            conn.execute(_cell_sql(type_, nul, frozenset(fields)), event)
            return
    guard, statement = _live_sql(type_, nul)
    if guard and (problem := conn.execute(guard, event).fetchone()[0]) is not None:
        raise DishError(f"event {event['seq']} {problem}")
    if statement:
        conn.execute(statement, event)


@functools.cache
def _live_sql(type_: str, nul: bool) -> tuple[str, str]:
    """The guard query and the statement `apply_event` runs for one event type, with named parameters."""
    projection = APPLY[type_]
    guard = f"SELECT {projection.guard.format(e=':')}" if projection.guard else ""
    return guard, projection.statement(":", nul=nul) if projection.sql else ""


@functools.lru_cache(maxsize=256)
def _cell_sql(type_: str, nul: bool, fields: frozenset[str]) -> str:
    """A cell event's live statement for a payload naming these (known) fields."""
    projection = APPLY[type_]
    assert isinstance(projection, CellUpdate)
    return projection.naming(fields).statement(":", nul=nul)


def replay_into(conn: sqlite3.Connection, *, event_by_event: bool = False) -> None:
    """Rebuild every projection in `conn`'s main schema from the log it reads as `events`.

    Call inside a transaction. One scan indexes the log by type (`temp.kinds`); each bulk type then
    loads in one statement, and the other types run event by event, in log order, through a feed
    whose temporary triggers run each type's statement: no Python runs per event. Should that refuse
    the log (or `event_by_event` ask for it), the log is applied one event at a time, as it was
    written, which names the event that fails.
    """
    create_projections(conn, indexes=False)
    in_bulk = not event_by_event
    if in_bulk:
        try:
            _replay_in_bulk(conn)
        except (sqlite3.Error, DishError):
            in_bulk = False  # what it refused is applied below, one event at a time, and named
        finally:
            scaffolding = "SELECT type, name FROM temp.sqlite_master WHERE type IN ('table', 'view')"
            for kind, name in conn.execute(scaffolding).fetchall():
                conn.execute(f"DROP {kind} temp.{name}")
    if not in_bulk:
        for table in PROJECTIONS:
            conn.execute(f"DELETE FROM main.{table}")
        for row in conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY seq"):
            event = dict(zip(EVENT_COLUMNS, row, strict=True))
            try:
                apply_event(conn, event)
            except (sqlite3.Error, DishError) as exc:
                raise DishError(f"replay failed at event {event['seq']} ({event['type']}): {exc!r}") from exc


def _replay_in_bulk(conn: sqlite3.Connection) -> None:
    """The fast path of `replay_into`; raises where the log holds what it cannot apply."""
    conn.execute(
        "CREATE TEMP TABLE kinds (seq INTEGER PRIMARY KEY, type TEXT NOT NULL, nul INTEGER NOT NULL)"
    )
    conn.execute("INSERT INTO temp.kinds SELECT seq, type, payload GLOB ? FROM events", (f"*{NUL}*",))
    present = {t for (t,) in conn.execute("SELECT DISTINCT type FROM temp.kinds")}
    if present - APPLY.keys():
        raise DishError(f"unknown event types {sorted(present - APPLY.keys())}")
    columns = ", ".join(f"v.{c}" for c in EVENT_COLUMNS)
    of_type = f"SELECT {columns} FROM temp.kinds AS k JOIN events AS v ON v.seq = k.seq WHERE k.type = ?"
    conn.execute(f"CREATE TEMP VIEW feed AS SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE 0")
    fed = []
    for type_, projection in APPLY.items():
        if type_ not in present or not projection.sql:
            continue
        if projection.bulk:
            conn.execute(projection.statement("e.", rows=f" FROM ({of_type} AND NOT k.nul) AS e"), (type_,))
            continue
        fed.append(type_)
        refuse = (
            f"SELECT RAISE(ABORT, 'refused') WHERE {projection.guard} NOTNULL;" if projection.guard else ""
        )
        conn.execute(
            f"CREATE TEMP TRIGGER replay_{type_} INSTEAD OF INSERT ON feed WHEN new.type = '{type_}' "
            f"BEGIN {refuse.format(e='new.')} {projection.statement('new.')}; END"
        )
    feed = (
        f"INSERT INTO temp.feed SELECT {columns} FROM temp.kinds AS k JOIN events AS v ON v.seq = k.seq "
        f"WHERE k.type IN ({_marks(fed)}) AND k.seq > ? AND k.seq < ? ORDER BY k.seq"
    )
    # An event whose payload holds a NUL character is applied on its own, in its place in the log.
    nul_seqs = [
        seq for (seq,) in conn.execute("SELECT seq FROM temp.kinds WHERE nul ORDER BY seq").fetchall()
    ]
    for after, seq in zip([0, *nul_seqs], nul_seqs, strict=False):
        conn.execute(feed, (*fed, after, seq))
        row = conn.execute(f"SELECT {columns} FROM events AS v WHERE v.seq = ?", (seq,)).fetchone()
        apply_event(conn, dict(zip(EVENT_COLUMNS, row, strict=True)))
    conn.execute(feed, (*fed, nul_seqs[-1] if nul_seqs else 0, 2**63 - 1))


def _marks(values: Iterable[str]) -> str:
    return ", ".join("?" for _ in values)


def _differing_rows(conn: sqlite3.Connection, table: str) -> int:
    """How many rows `live.table` and its replay `main.table` do not share (0: the tables are equal).

    Rows pair up by primary key; a row without a partner counts once, a pair that differs in any
    column twice (as the row on each side).
    """
    columns = conn.execute("SELECT name, pk FROM main.pragma_table_info(?)", (table,)).fetchall()
    key = ", ".join(name for name, pk in columns if pk)
    differs = " OR ".join(f"l.{name} IS NOT m.{name}" for name, pk in columns if not pk) or "0"
    live, again = (
        conn.execute(f"SELECT count(*) FROM {db}.{table}").fetchone()[0] for db in ("live", "main")
    )
    paired, changed = conn.execute(
        f"SELECT count(*), total({differs}) FROM live.{table} AS l JOIN main.{table} AS m USING ({key})"
    ).fetchone()
    return int(live - paired + again - paired + 2 * changed)


def create_projections(
    conn: sqlite3.Connection, tables: Sequence[str] = tuple(PROJECTIONS), *, indexes: bool = True
) -> None:
    for name in tables:
        conn.execute(PROJECTIONS[name])
    if indexes:
        create_indexes(conn, tables)


def create_indexes(conn: sqlite3.Connection, tables: Sequence[str] = tuple(PROJECTIONS)) -> None:
    for ddl in INDEXES:
        if ddl.split(" ON ")[1].split(" (")[0] in tables:
            conn.execute(ddl)


# ---------------------------------------------------------------- migrations


def _migrations() -> Any:
    from sqlite_utils.migrations import Migrations

    migrations = Migrations("petri")

    @migrations(name=M001)
    def m001(db: Any) -> None:
        for ddl in EVENTS_DDL:
            db.execute(ddl)
        create_projections(db.conn, [t for t in PROJECTIONS if t not in ADDED])

    @migrations(name=M002)
    def m002(db: Any) -> None:
        added = [t for t, name in ADDED.items() if name == M002]
        create_projections(db.conn, added)
        for ddl in BLOBS_DDL:
            db.execute(ddl)

    @migrations(name=M003)
    def m003(db: Any) -> None:
        # A dish made before usage_task was in INDEXES; m002 makes it on newer ones.
        db.execute("CREATE INDEX IF NOT EXISTS usage_task ON usage (task_id)")

    @migrations(name=M004)
    def m004(db: Any) -> None:
        # A dish made before sources had `note` (what a snapshot's text leaves out); m001 makes it now.
        if "note" not in {row[1] for row in db.execute("PRAGMA table_info(sources)").fetchall()}:
            db.execute("ALTER TABLE sources ADD COLUMN note TEXT")

    @migrations(name=M005)
    def m005(db: Any) -> None:
        # Until m005 a table copied every citation out of its event; the events hold them all, so the
        # copy goes (it is derived: nothing is lost) and a view reads the events in its place.
        db.execute("DROP TABLE IF EXISTS citations")
        db.execute(CITATIONS_VIEW)

    @migrations(name=M006)
    def m006(db: Any) -> None:
        db.execute(CITATIONS_INDEX)

    return migrations


def _connect(path: Path | str, *, uri: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False, uri=uri
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA synchronous = NORMAL")
    add_functions(conn)
    return conn


# ---------------------------------------------------------------- the store


def _retry_locked(action: Callable[[], object], path: Path | None = None) -> None:
    """Run `action`, retrying while SQLite reports the database locked or busy (bounded)."""
    delay = 0.01
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise DishError(
                    f"the dish {path or ''} stayed locked for {BUSY_TIMEOUT_S:.0f} s; "
                    "another process holds a write lock — retry later"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _read_only(folder: Path) -> bool:
    """Whether this process cannot write in `folder` (its permissions, or a read-only mount)."""
    return not os.access(folder, os.W_OK) or bool(os.statvfs(folder).f_flag & os.ST_RDONLY)


def _failure(action: str, path: Path, exc: sqlite3.Error) -> str:
    """Why the dish cannot be opened or written, and what to do about it."""
    text = str(exc)
    read_only = _read_only(path.parent)
    if "full" in text:
        return f"cannot {action} the dish {path}: the disk is full ({text}); free some space and retry"
    if read_only or "readonly" in text:
        return (
            f"cannot {action} the dish {path}: it is read-only ({text}); make the file and its folder "
            "writable (SQLite also writes -wal and -shm files beside it), or copy the dish elsewhere"
        )
    return f"cannot {action} the dish {path}: {text}"


@dataclass(frozen=True)
class VerifyReport:
    """What `petri verify` found: an empty `problems` list means the dish is intact."""

    events: int
    head: str
    citations: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


class Store:
    """One dish file, on one SQLite connection, used by one thread at a time (the service keeps
    one per thread; a read command on a read-only dish gets one that reads the file as it is)."""

    def __init__(self, dish: Path, *, create: bool = True) -> None:
        self.dish = dish
        self.path = dish / DB_NAME
        self._writing = False  # inside write(), which is the only place `_tail` is kept
        self._tail: tuple[int, str] | None = None  # the log's last (seq, hash), as this write left it
        self.frozen = False  # read as it is on disk: a dish in a folder this process cannot write
        if not self.path.exists():
            if not create:
                raise DishError(f"no Petri dish at {dish}; run `petri init` first")
            try:
                dish.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DishError(f"cannot create the dish directory {dish}: {exc.strerror}") from exc
        try:
            self.conn = _connect(self.path)
            _retry_locked(self._ensure_wal)
            self._migrate()
        except sqlite3.Error as exc:
            if hasattr(self, "conn"):
                self.conn.close()
            if create or not _read_only(self.path.parent):
                raise DishError(_failure("open", self.path, exc)) from exc
            self._open_frozen(exc)

    def _open_frozen(self, exc: sqlite3.Error) -> None:
        """Open a dish this process cannot write for reading, as it is on disk.

        SQLite reads a WAL database through its -shm file, which it cannot create here. When no
        -wal file holds changes (every connection closed, so the last one moved them into the
        database file), the file alone is the whole dish, and SQLite may read it as immutable."""
        wal = self.path.with_name(f"{self.path.name}-wal")
        if wal.exists() and wal.stat().st_size:
            raise DishError(
                _failure("open", self.path, exc) + f"; and {wal.name} holds changes not yet in the "
                "database file, so it cannot be read as it is"
            ) from exc
        self.frozen = True
        try:
            self.conn = _connect(self._read_only_uri(), uri=True)
            current = self._migrations_current()
        except sqlite3.Error as again:
            if hasattr(self, "conn"):
                self.conn.close()
            raise DishError(_failure("open", self.path, again)) from again
        if not current:
            self.conn.close()
            raise DishError(
                f"cannot open the dish {self.path}: it is read-only and was made by an older Petri; "
                "open it once where it is writable (it is upgraded then), or copy it elsewhere"
            )

    def _ensure_wal(self) -> None:
        if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.conn.execute("PRAGMA journal_mode = WAL")

    def _migrate(self) -> None:
        if self._migrations_current():
            return  # the common case, without importing sqlite_utils (a fifth of a second per process)
        from sqlite_utils import Database

        db = Database(self.conn)
        migrations = _migrations()
        if not migrations.pending(db):
            return
        self._begin()
        try:
            migrations.apply(db)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def _migrations_current(self) -> bool:
        try:
            rows = self.conn.execute(
                "SELECT name FROM _sqlite_migrations WHERE migration_set = 'petri'"
            ).fetchall()
        except sqlite3.OperationalError:
            return False  # a new dish: no migrations table yet
        return {r[0] for r in rows} >= set(MIGRATION_NAMES)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions

    def _begin(self) -> None:
        """Take the write lock, polling every few milliseconds rather than in SQLite's busy handler.

        A write holds the lock for a millisecond or two, but SQLite's own handler sleeps 5, 10, 25,
        then 50 ms between tries; with eight writers the lock sat free most of the time (benchmarks
        P2). So the busy timeout is off while this loop polls with a short, jittered, growing sleep.
        """
        self.conn.execute("PRAGMA busy_timeout = 0")
        try:
            self._poll_write_lock()
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")

    def _poll_write_lock(self) -> None:
        delay = 0.0002
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise DishError(
                        f"the dish {self.path} stayed locked for {BUSY_TIMEOUT_S:.0f} s; "
                        "another process holds a write lock — retry later"
                    ) from exc
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.004)

    @contextmanager
    def write(self) -> Iterator[Store]:
        """One write transaction (`BEGIN IMMEDIATE` … `COMMIT`); any exception rolls it all back."""
        try:
            self._begin()
        except sqlite3.Error as exc:
            raise DishError(_failure("write", self.path, exc)) from exc
        self._writing, self._tail = True, None
        try:
            yield self
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):  # disk full, read-only, I/O error: not a bug
                raise DishError(_failure("write", self.path, exc) + "; nothing was written") from exc
            raise
        finally:
            self._writing, self._tail = False, None

    @contextmanager
    def read(self) -> Iterator[Store]:
        """A consistent read snapshot."""
        self.conn.execute("BEGIN")
        try:
            yield self
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    def append(self, events: Sequence[NewEvent], at: str) -> list[int]:
        """Append events (hash-chained) and apply them to the projections; call inside `write()`."""
        if not self.conn.in_transaction:
            raise DishError("append() outside a write transaction")
        seq, prev = self._tail or self._last_link()  # kept from this write()'s earlier appends
        seqs = []
        for ev in events:
            seq += 1
            try:
                payload = canonical(ev.payload)
            except ValueError as exc:
                raise DishError(
                    f"cannot record {ev.type}: {exc} (NaN, ±inf); record finite numbers"
                ) from None
            digest = event_hash(seq, ev.run_id, ev.cell_id, ev.task_id, ev.type, ev.actor, payload, at, prev)
            self.conn.execute(
                "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?)",
                (seq, ev.run_id, ev.cell_id, ev.task_id, ev.type, ev.actor, payload, at, prev, digest),
            )
            prev = digest
            if self._writing:
                self._tail = (seq, prev)
            event = {"seq": seq, "run_id": ev.run_id, "cell_id": ev.cell_id, "task_id": ev.task_id}
            apply_event(self.conn, {**event, "type": ev.type, "at": at, "payload": payload}, ev.payload)
            seqs.append(seq)
        return seqs

    def _last_link(self) -> tuple[int, str]:
        """The newest event's (seq, hash), or (0, GENESIS) for an empty log."""
        last = self.conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return (last["seq"], last["hash"]) if last else (0, GENESIS)

    # -- reads

    def _one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(sql, args).fetchone()
        return row

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(self.conn.execute(sql, args).fetchall())

    @staticmethod
    def _row(row: sqlite3.Row) -> dict[str, Any]:
        """A row as the models hold it: JSON columns decoded, flags as booleans."""
        out = dict(row)
        for key in JSON_COLUMNS & out.keys():
            if out[key] is not None:
                out[key] = json.loads(out[key])
        for key in BOOL_COLUMNS & out.keys():
            out[key] = bool(out[key])
        return out

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [self._row(r) for r in self._all(sql, args)]

    def run_row(self, run_id: str) -> dict[str, Any]:
        row = self._one("SELECT * FROM runs WHERE run_id=?", (run_id,))
        if row is None:
            raise NotFound(f"no run {run_id!r}", "list runs with petri_status (or `petri status`)")
        return self._row(row)

    def run(self, run_id: str) -> Run:
        run: Run = _models().Run(**self.run_row(run_id))
        return run

    def run_rows(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM runs ORDER BY created_at, run_id")

    def runs(self) -> list[Run]:
        return [_models().Run(**r) for r in self.run_rows()]

    def latest_run(self) -> Run | None:
        row = self._one("SELECT * FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1")
        return _models().Run(**self._row(row)) if row else None

    def run_ids(self) -> set[str]:
        return {r[0] for r in self._all("SELECT run_id FROM runs")}

    def cell_row(self, cell_id: str) -> dict[str, Any]:
        row = self._one("SELECT * FROM cells WHERE cell_id=?", (cell_id,))
        if row is None:
            raise NotFound(f"no cell {cell_id!r}", "cell ids look like `osm-1-02`; see `petri status`")
        return self._row(row)

    def cell(self, cell_id: str) -> Cell:
        cell: Cell = _models().Cell(**self.cell_row(cell_id))
        return cell

    def cells(self, run_id: str | None = None) -> list[Cell]:
        if run_id is None:
            rows = self._rows("SELECT * FROM cells ORDER BY run_id, level, seq")
        else:
            rows = self._rows("SELECT * FROM cells WHERE run_id=? ORDER BY level, seq", (run_id,))
        return [_models().Cell(**r) for r in rows]

    def cell_texts(self) -> list[tuple[str, str, str]]:
        """(cell_id, text, state) of every cell in the dish, for the similarity search."""
        return [(r[0], r[1], r[2]) for r in self._all("SELECT cell_id, text, state FROM cells")]

    def child_rows(self, cell_id: str) -> list[dict[str, Any]]:
        """The children's cell rows, each with its edge's `relation` added."""
        return self._rows(
            "SELECT e.relation AS relation, c.* FROM edges e JOIN cells c ON c.cell_id = e.child_id "
            "WHERE e.parent_id=? ORDER BY c.level, c.seq",
            (cell_id,),
        )

    def children(self, cell_id: str) -> list[tuple[Edge, Cell]]:
        m = _models()
        out = []
        for data in self.child_rows(cell_id):
            relation = data.pop("relation")
            out.append(
                (m.Edge(child_id=data["cell_id"], parent_id=cell_id, relation=relation), m.Cell(**data))
            )
        return out

    def parent_rows(self, cell_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT c.* FROM edges e JOIN cells c ON c.cell_id = e.parent_id WHERE e.child_id=? "
            "ORDER BY c.level, c.seq",
            (cell_id,),
        )

    def parents(self, cell_id: str) -> list[Cell]:
        return [_models().Cell(**r) for r in self.parent_rows(cell_id)]

    def ancestors(self, cell_id: str) -> set[str]:
        rows = self._all(
            "WITH RECURSIVE up(id) AS (SELECT parent_id FROM edges WHERE child_id=? "
            "UNION SELECT e.parent_id FROM edges e JOIN up ON e.child_id = up.id) SELECT id FROM up",
            (cell_id,),
        )
        return {r[0] for r in rows}

    def subtree(self, root_cell_id: str) -> set[str]:
        rows = self._all(
            "WITH RECURSIVE down(id) AS (SELECT ? UNION SELECT e.child_id FROM edges e "
            "JOIN down ON e.parent_id = down.id) SELECT id FROM down",
            (root_cell_id,),
        )
        return {r[0] for r in rows}

    def next_seqs(self, run_id: str) -> dict[int, int]:
        rows = self._all("SELECT level, MAX(seq) FROM cells WHERE run_id=? GROUP BY level", (run_id,))
        return {r[0]: r[1] + 1 for r in rows}

    def task(self, task_id: str) -> Task:
        row = self._one("SELECT * FROM tasks WHERE task_id=?", (task_id,))
        if row is None:
            raise NotFound(f"no task {task_id!r}", "take task ids from petri_next; do not invent them")
        task: Task = _models().Task(**self._row(row))
        return task

    def task_rows_of_cell(self, cell_id: str, iteration: int | None = None) -> list[dict[str, Any]]:
        if iteration is None:
            return self._rows("SELECT * FROM tasks WHERE cell_id=? ORDER BY created_at, task_id", (cell_id,))
        return self._rows(
            "SELECT * FROM tasks WHERE cell_id=? AND (iteration=? OR status IN "
            "('ready','leased')) ORDER BY created_at, task_id",
            (cell_id, iteration),
        )

    def tasks_of_cell(self, cell_id: str, iteration: int | None = None) -> list[Task]:
        return [_models().Task(**r) for r in self.task_rows_of_cell(cell_id, iteration)]

    def ready_tasks(self, cell_ids: set[str] | None, now: str, limit: int) -> list[Task]:
        sql = "SELECT * FROM tasks WHERE status='ready' AND ready_at<=?"
        args: list[Any] = [now]
        if cell_ids is not None:
            ids = sorted(cell_ids)
            if not ids:
                return []
            sql += " AND cell_id IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(ids))
        rows = self._rows(sql + " ORDER BY created_at, task_id LIMIT ?", (*args, limit))
        return [_models().Task(**r) for r in rows]

    def expired_leases(self, now: str) -> list[Task]:
        rows = self._rows(
            "SELECT * FROM tasks WHERE status='leased' AND expires_at<=? ORDER BY task_id", (now,)
        )
        return [_models().Task(**r) for r in rows]

    def task_counts(self, run_id: str) -> dict[str, int]:
        rows = self._all("SELECT status, COUNT(*) FROM tasks WHERE run_id=? GROUP BY status", (run_id,))
        return {r[0]: r[1] for r in rows}

    def open_task_rows(self, run_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM tasks WHERE status IN ('ready','leased')"
        return self._rows(
            sql + (" AND run_id=?" if run_id else "") + " ORDER BY created_at, task_id",
            (run_id,) if run_id else (),
        )

    def open_tasks(self, run_id: str | None = None) -> list[Task]:
        return [_models().Task(**r) for r in self.open_task_rows(run_id)]

    def cell_counts(self, run_id: str) -> dict[str, int]:
        rows = self._all("SELECT state, COUNT(*) FROM cells WHERE run_id=? GROUP BY state", (run_id,))
        return {r[0]: r[1] for r in rows}

    def inbox_rows(self, run_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM cells WHERE (state IN ('stalled','awaiting_approval') OR flagged IS NOT NULL)"
        return self._rows(
            sql + (" AND run_id=?" if run_id else "") + " ORDER BY run_id, level, seq",
            (run_id,) if run_id else (),
        )

    def inbox(self, run_id: str | None = None) -> list[Cell]:
        return [_models().Cell(**r) for r in self.inbox_rows(run_id)]

    def verdict_rows(self, cell_id: str, iteration: int | None = None) -> list[dict[str, Any]]:
        """The cell's verdicts, oldest first (without the table's ordering `seq`)."""
        if iteration is None:
            rows = self._rows("SELECT * FROM verdicts WHERE cell_id=? ORDER BY seq", (cell_id,))
        else:
            rows = self._rows(
                "SELECT * FROM verdicts WHERE cell_id=? AND iteration=? ORDER BY seq", (cell_id, iteration)
            )
        return [{k: v for k, v in r.items() if k != "seq"} for r in rows]

    def verdicts(self, cell_id: str, iteration: int | None = None) -> list[Verdict]:
        return [_models().Verdict(**r) for r in self.verdict_rows(cell_id, iteration)]

    def citation_rows(self, cell_id: str | None = None) -> list[dict[str, Any]]:
        """The citations of one cell (by `CITATIONS_INDEX`) or of every cell, ordered by id, from
        their events.

        Each payload is decoded here, not by SQLite's `json_extract`, which ends a string at an
        escaped NUL; a key the payload lacks reads as None."""
        sql = "SELECT cell_id, task_id, payload FROM events WHERE type = 'citation_recorded'"
        rows = self.conn.execute(*((f"{sql} AND cell_id = ?", (cell_id,)) if cell_id is not None else (sql,)))
        out = []
        for cell, task, payload in rows:
            fields = _object(payload)
            row = {name: fields.get(name) for name in CITATION_FIELDS}
            row["cell_id"], row["task_id"] = cell, task
            if isinstance(row["match_score"], int):
                row["match_score"] = float(row["match_score"])
            out.append(row)
        return sorted(out, key=lambda row: str(row["citation_id"]))

    def citation_quotes(self) -> list[tuple[Any, ...]]:
        """(citation_id, source_id, quote, match_start, match_end) of every citation, ordered by id:
        what `verify` checks. SQLite extracts them, but from a payload holding an escaped NUL."""
        fields = ("citation_id", "source_id", "quote", "match_start", "match_end")
        picks = ", ".join(f"json_extract(payload, '$.{name}')" for name in fields)
        rows = self.conn.execute(
            f"SELECT {picks}, CASE WHEN instr(payload, ?) THEN payload END FROM events "
            "WHERE type = 'citation_recorded' AND json_valid(payload)",
            (NUL,),
        )
        out = []
        for *values, whole in rows:
            if whole is not None:
                payload = _object(whole)
                values = [payload.get(name) for name in fields]
            out.append(tuple(values))
        return sorted(out, key=lambda row: str(row[0]))

    def citations(self, cell_id: str | None = None) -> list[Citation]:
        from pydantic import ValidationError

        try:
            return [_models().Citation(**r) for r in self.citation_rows(cell_id)]
        except ValidationError as exc:  # only an edited event can hold such a citation
            raise DishError(
                f"a citation of {cell_id or 'the dish'} cannot be read from its event ({exc.errors()[0]['msg']}); "
                "the log was edited: run `petri verify`"
            ) from None

    def source(self, source_id: str) -> Source:
        row = self._one("SELECT * FROM sources WHERE source_id=?", (source_id,))
        if row is None:
            raise NotFound(
                f"no source {source_id!r}: only fetched pages can be cited",
                "fetch the page with petri_fetch and cite the source_id it returns",
            )
        source: Source = _models().Source(**self._row(row))
        return source

    def source_by_hash(self, content_hash: str) -> Source | None:
        row = self._one("SELECT * FROM sources WHERE content_hash=?", (content_hash,))
        return _models().Source(**self._row(row)) if row else None

    def recent_fetch(self, url: str, since: str) -> Source | None:
        row = self._one(
            "SELECT s.* FROM fetches f JOIN sources s ON s.source_id = f.source_id "
            "WHERE f.url=? AND f.fetched_at>=? ORDER BY f.fetch_seq DESC LIMIT 1",
            (url, since),
        )
        return _models().Source(**self._row(row)) if row else None

    def evidence(self, cell_id: str) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self._all(
                "SELECT * FROM evidence WHERE cell_id=? ORDER BY at DESC, source_id", (cell_id,)
            )
        ]

    # -- harness usage, runners and transcripts

    def put_blob(self, data: bytes) -> str:
        """Store bytes once by their sha256 (zlib-compressed when large); call inside `write()`."""
        if not self.conn.in_transaction:
            raise DishError("put_blob() outside a write transaction")
        digest = hashlib.sha256(data).hexdigest()
        packed, encoding = data, "raw"
        if len(data) >= BLOB_COMPRESS_AT:
            packed, encoding = zlib.compress(data, 6), "zlib"
        self.conn.execute(
            "INSERT OR IGNORE INTO blobs VALUES (?,?,?,?)", (digest, encoding, len(data), packed)
        )
        return digest

    def blob(self, digest: str) -> bytes:
        row = self._one("SELECT encoding, data FROM blobs WHERE hash=?", (digest,))
        if row is None:
            raise NotFound(f"no stored blob {digest[:12]}", "it was never recorded in this dish")
        data = bytes(row["data"])
        return zlib.decompress(data) if row["encoding"] == "zlib" else data

    def usage_rows(
        self, *, run_id: str | None = None, cell_id: str | None = None, task_id: str | None = None
    ) -> list[dict[str, Any]]:
        """One row per harness process that worked on a task, oldest first."""
        where, args = self._usage_filter(run_id, cell_id, task_id)
        return [dict(r) for r in self._all(f"SELECT * FROM usage {where} ORDER BY seq", args)]

    def usage_totals(
        self, *, run_id: str | None = None, cell_id: str | None = None, task_id: str | None = None
    ) -> dict[str, Any]:
        """Summed tokens, cost and model calls (`processes` = harness processes) over the matching rows."""
        where, args = self._usage_filter(run_id, cell_id, task_id)
        row = self._one(
            "SELECT COUNT(*) AS processes, COALESCE(SUM(input_tokens),0) AS input_tokens, "
            "COALESCE(SUM(output_tokens),0) AS output_tokens, "
            "COALESCE(SUM(cache_read_tokens),0) AS cache_read_tokens, "
            "COALESCE(SUM(cache_write_tokens),0) AS cache_write_tokens, "
            "COALESCE(SUM(reasoning_tokens),0) AS reasoning_tokens, "
            "COALESCE(SUM(cost_usd),0.0) AS cost_usd, COALESCE(SUM(model_calls),0) AS model_calls "
            f"FROM usage {where}",
            args,
        )
        out = dict(row) if row else {}
        out["tokens"] = sum(
            out.get(k, 0)
            for k in (
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
                "reasoning_tokens",
            )
        )
        out["cost_usd"] = round(float(out.get("cost_usd", 0.0)), 6)
        return out

    @staticmethod
    def _usage_filter(run_id: str | None, cell_id: str | None, task_id: str | None) -> tuple[str, list[str]]:
        pairs = [(c, v) for c, v in (("run_id", run_id), ("cell_id", cell_id), ("task_id", task_id)) if v]
        if not pairs:
            return "", []
        return "WHERE " + " AND ".join(f"{c}=?" for c, _ in pairs), [v for _, v in pairs]

    def runners(self, run_id: str) -> list[dict[str, Any]]:
        """The headless runners that drove a run, oldest first."""
        rows = self._all("SELECT * FROM runners WHERE run_id=? ORDER BY started_at, runner_id", (run_id,))
        return [self._row(r) for r in rows]

    def check_blobs(self) -> list[str]:
        """Every transcript the log names is stored, and its bytes still hash to that name."""
        problems = []
        for (digest,) in self._all("SELECT DISTINCT transcript_hash FROM usage ORDER BY transcript_hash"):
            try:
                data = self.blob(digest)
            except NotFound:
                problems.append(f"transcript {digest[:12]} is missing from the blob store")
                continue
            except zlib.error:
                problems.append(f"transcript {digest[:12]} is corrupt (cannot decompress)")
                continue
            if hashlib.sha256(data).hexdigest() != digest:
                problems.append(f"transcript {digest[:12]} does not match its hash (tampered)")
        return problems

    def events(
        self,
        *,
        run_id: str | None = None,
        cell_id: str | None = None,
        after: int = 0,
        types: Sequence[str] = (),
        limit: int | None = None,
    ) -> list[Event]:
        where: list[str] = ["seq > ?"]
        args: list[Any] = [after]
        if run_id:
            where.append("run_id = ?")
            args.append(run_id)
        if cell_id:
            where.append("cell_id = ?")
            args.append(cell_id)
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            args.extend(types)
        sql = f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY seq"
        if limit:
            sql += f" LIMIT {int(limit)}"
        event = _models().Event
        return [event(**{**dict(r), "payload": json.loads(r["payload"])}) for r in self._all(sql, args)]

    def event_count(self) -> int:
        row = self._one("SELECT COALESCE(MAX(seq), 0) FROM events")
        return int(row[0]) if row else 0

    def head(self) -> str:
        return str(self._last_link()[1])

    # -- integrity

    def replay(self, *, event_by_event: bool = False) -> sqlite3.Connection:
        """Rebuild every projection from the events alone, into a fresh in-memory database.

        `event_by_event` applies the log one event at a time, as `append` did: slow, a cross-check.
        """
        conn = self._scratch()
        try:
            conn.execute("BEGIN")
            replay_into(conn, event_by_event=event_by_event)
            conn.execute("COMMIT")
            create_indexes(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _scratch(self) -> sqlite3.Connection:
        """An empty in-memory database that reads this dish, read-only, as `live`."""
        conn = sqlite3.connect(":memory:", uri=True, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA temp_store = MEMORY")
        add_functions(conn)
        conn.execute("ATTACH ? AS live", (self._read_only_uri(),))
        return conn

    def _read_only_uri(self) -> str:
        return f"{self.path.absolute().as_uri()}?mode=ro" + ("&immutable=1" if self.frozen else "")

    def check_chain(self, until: int | None = None) -> list[str]:
        """Recompute the hash chain up to event `until` (default: the newest this store sees).

        Names every event whose link or hash is wrong. It reads through a connection of its own, so
        `Service.verify` runs it in a thread while the replay works inside SQLite.
        """
        until = self.event_count() if until is None else until
        problems: list[str] = []
        prev, expected_seq = GENESIS, 1
        with closing(sqlite3.connect(self._read_only_uri(), uri=True, timeout=BUSY_TIMEOUT_S)) as conn:
            cur = conn.execute(
                "SELECT seq, run_id, cell_id, task_id, type, actor, payload, at, prev_hash, hash "
                "FROM events WHERE seq <= ? ORDER BY seq",
                (until,),
            )
            for seq, run_id, cell_id, task_id, type_, actor, payload, at, prev_hash, digest in cur:
                if seq != expected_seq:
                    problems.append(f"event {seq}: sequence gap (expected {expected_seq})")
                if prev_hash != prev:
                    problems.append(f"event {seq}: prev_hash does not match event {seq - 1}")
                if event_hash(seq, run_id, cell_id, task_id, type_, actor, payload, at, prev_hash) != digest:
                    problems.append(f"event {seq} ({type_}): content does not match its hash (tampered)")
                prev, expected_seq = digest, seq + 1
                if len(problems) > 20:
                    problems.append("… more problems not listed")
                    break
        return problems

    def check_projections(self) -> list[str]:
        """Compare every projection table with a replay of the log, both read in one snapshot."""
        conn = self._scratch()
        try:
            conn.execute("BEGIN")
            try:
                replay_into(conn)
            except (sqlite3.Error, DishError) as exc:
                return [str(exc) if isinstance(exc, DishError) else f"replay failed: {exc}"]
            return [
                f"projection {table} differs from a replay of the events ({rows} rows)"
                for table in PROJECTIONS
                if (rows := _differing_rows(conn, table))
            ]
        finally:
            conn.close()

    def check_triggers(self) -> list[str]:
        names = {r[0] for r in self._all("SELECT name FROM sqlite_master WHERE type='trigger'")}
        return [
            f"append-only trigger {t} is missing"
            for t in ("events_no_update", "events_no_delete", "blobs_no_update", "blobs_no_delete")
            if t not in names
        ]
