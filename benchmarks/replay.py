"""P5: rebuilding the projections from the log (in-process) and `petri verify` (a real process)."""

from __future__ import annotations

import random
import re
import sqlite3
from contextlib import ExitStack
from functools import partial
from typing import Any, cast

from petri_core.service import check_quotes
from petri_core.store import Store, create_indexes, replay_into

from .common import Row, Sizes, TimedConnection, run_petri, spread, timed
from .dishes import cached

REPLAY_MIN = 100_000  # events/s
VERIFY_1M_S = 30.0
#: Untimed replays of each dish before the timed ones. Until the seventh round P5 had none, unlike
#: every other benchmark here; on this VM the 100k dish replayed at 77–97k events/s in a fresh
#: process after 90 s idle, and at 142–157k when run again at once (its file in the page cache).
WARM_UP = 1


def replay_once(st: Store) -> None:
    """One replay into fresh projections, its in-memory database closed (at 1M about a gigabyte)."""
    st.replay().close()


def verify_parts(st: Store) -> dict[str, float]:
    """Where `petri verify`'s time goes: the same steps as `Service.verify`, timed one by one.

    `Service.verify` runs the chain and the quotes on two threads beside the projections (the replay
    works inside SQLite, without the GIL; from the eighth round), so its wall time is less than the
    sum of these parts.
    """
    parts = {
        "triggers": timed(st.check_triggers),
        "chain": timed(st.check_chain),
        "replay": timed(partial(replay_once, st)),
        "projections (replay + compare)": timed(st.check_projections),
        "blobs": timed(st.check_blobs),
    }

    def quotes() -> None:
        check_quotes(st)  # the same step as `Service.verify`

    parts["quotes"] = timed(quotes)
    return {k: round(v, 6) for k, v in parts.items()}


def replay_step(sql: str, args: Any) -> str:
    """What a statement of `Store.replay` does, for the "… replay step" rows."""
    if sql.startswith("INSERT INTO temp.kinds"):
        return "index the log by type, find NUL payloads"
    if sql.startswith("INSERT INTO temp.feed"):
        return "feed the other types in log order (triggers)"
    insert = re.match(r"INSERT INTO (\w+) SELECT", sql)
    if insert and args:
        return f"bulk `{args[0]}` → {insert.group(1)}"
    return "the rest (tables, triggers, NUL events)"


def replay_steps(st: Store) -> dict[str, float]:
    """Where one replay's time goes (the statements of `Store.replay`, timed one by one)."""
    conn = st._scratch()
    timed_conn = TimedConnection(conn, replay_step)
    try:
        conn.execute("BEGIN")
        replay_into(cast(sqlite3.Connection, timed_conn))
        conn.execute("COMMIT")
        timed_conn.seconds["indexes"] += timed(lambda: create_indexes(conn))
    finally:
        conn.close()
    return dict(sorted(timed_conn.seconds.items(), key=lambda kv: -kv[1]))


def run(sizes: Sizes) -> list[Row]:
    """Three replays of every dish, interleaved: each round replays every dish once, in a shuffled
    order (seeded), after one untimed warm-up replay each (`WARM_UP`). Measured one dish after
    another, a slow spell of the shared machine fell on all three passes of one dish and read as
    that dish's speed (10k at 76k events/s, then 100k at 150k, in one run of the seventh round)."""
    rows: list[Row] = []
    largest = max(sizes.dishes)
    passes = 1 if sizes.quick else 3
    rates: dict[int, list[float]] = {events: [] for events in sizes.dishes}
    dishes = {events: cached(events) for events in sizes.dishes}
    with ExitStack() as stack:
        stores: dict[int, Store] = {}
        for events, (dish, _) in dishes.items():
            st = stack.enter_context(Store(dish, create=False))
            st.conn.execute("BEGIN")  # one snapshot of the log for every pass and step
            stack.callback(st.conn.execute, "COMMIT")
            stores[events] = st
        if not sizes.quick:
            for st in stores.values():
                for _ in range(WARM_UP):
                    replay_once(st)  # untimed, as every other benchmark here warms up
        order = random.Random(5)
        for _ in range(passes):
            for events in order.sample(sizes.dishes, len(sizes.dishes)):
                seconds = timed(partial(replay_once, stores[events]))
                rates[events].append(dishes[events][1].events / seconds)
        parts = verify_parts(stores[largest])
        steps = replay_steps(stores[largest])
    for events, (dish, filled) in dishes.items():
        last = events == largest
        rate = sorted(rates[events])[len(rates[events]) // 2]
        rows.append(
            Row(
                "P5",
                f"replay of {filled.events:,} events into fresh projections",
                rate,
                "events/s",
                min(rates[events]),
                max(rates[events]),
                len(rates[events]),
                f"≥ {REPLAY_MIN:,}/s",
                rate >= REPLAY_MIN,
            )
        )
        if last:
            for step, seconds in steps.items():
                rows.append(Row("P5", f"… replay step: {step}, {filled.events:,} events", seconds, "s"))
        walls = [run_petri(["verify"], dish)[0] for _ in range(1 if sizes.quick or events >= 100_000 else 3)]
        on_target = events >= 1_000_000
        rows.append(
            spread(
                "P5",
                f"`petri verify`, {filled.events:,} events",
                walls,
                target=f"≤ {VERIFY_1M_S:.0f} s at 1M" if on_target else "",
                limit=VERIFY_1M_S if on_target else None,
                details={"verify_parts_s": parts} if last else {},
            )
        )
        if last:
            for part, seconds in parts.items():
                rows.append(Row("P5", f"… verify step `{part}`, {filled.events:,} events", seconds, "s"))
    return rows
