"""P3: `petri status --json` and `petri show CELL` as real processes on dishes of growing event counts."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .common import Row, Sizes, run_petri, spread
from .dishes import Filled, cached

LIMIT_S = 0.5


def shape(dish: Path, filled: Filled) -> dict[str, Any]:
    return {
        "events": filled.events,
        "runs": filled.runs,
        "cells": filled.cells,
        "db_mib": round((dish / "petri.db").stat().st_size / 2**20, 1),
        "generated_in_s": round(filled.seconds, 1),
    }


def run(sizes: Sizes) -> list[Row]:
    """Every (dish, command) pair once per round, in a shuffled order each round (seeded), after one
    warm-up call each: measured one dish after another, a drift of the shared machine between them
    read as growth with the event count (a flatness of 0.66× and 1.52× in one run)."""
    largest = max(sizes.dishes)
    cases: list[tuple[int, Path, Filled, str, list[str]]] = []
    for events in sizes.dishes:
        dish, filled = cached(events)
        for name, args in (("status", ["status", "--json"]), ("show", ["show", filled.show_cell])):
            cases.append((events, dish, filled, name, args))
    walls: dict[tuple[int, str], list[float]] = {(events, name): [] for events, _, _, name, _ in cases}
    sizes_out: dict[tuple[int, str], int] = {}
    if sizes.repeats > 1:
        for _, dish, _, _, args in cases:
            run_petri(args, dish)  # warm the page cache, as a second call by a person would be
    order = random.Random(3)
    for _ in range(sizes.repeats):
        for events, dish, _, name, args in order.sample(cases, len(cases)):
            wall, out = run_petri(args, dish)
            walls[events, name].append(wall)
            sizes_out[events, name] = len(out)
    rows: list[Row] = []
    medians: dict[str, list[float]] = {"status": [], "show": []}
    for events, dish, filled, name, _ in cases:
        label = f"{filled.events:,} events, {filled.runs} runs, {filled.cells:,} cells"
        cmd = "petri status --json" if name == "status" else f"petri show {filled.show_cell}"
        last = events == largest
        row = spread(
            "P3",
            f"`{cmd}`, {label}",
            walls[events, name],
            target=f"≤ {LIMIT_S} s" if last else "",
            limit=LIMIT_S if last else None,
            details={**shape(dish, filled), "output_bytes": sizes_out[events, name]},
        )
        rows.append(row)
        medians[name].append(row.value)
    if len(sizes.dishes) > 1:
        for name in ("status", "show"):
            ratio = medians[name][-1] / medians[name][0]
            rows.append(
                Row(
                    "P3",
                    f"flatness: {name} at {sizes.dishes[-1]:,} ÷ at {sizes.dishes[0]:,} events, medians",
                    ratio,
                    "×",
                    target="flat (≈ 1×)",
                    met=ratio <= 1.5,
                )
            )
    return rows
