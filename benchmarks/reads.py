"""P3: `petri status --json` and `petri show CELL` as real processes on dishes of growing event counts."""

from __future__ import annotations

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


def samples(args: list[str], dish: Path, repeats: int) -> tuple[list[float], int]:
    if repeats > 1:
        run_petri(args, dish)  # warm the page cache, as a second call by a person would be
    walls, size = [], 0
    for _ in range(repeats):
        wall, out = run_petri(args, dish)
        walls.append(wall)
        size = len(out)
    return walls, size


def run(sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    medians: dict[str, list[float]] = {"status": [], "show": []}
    largest = max(sizes.dishes)
    for events in sizes.dishes:
        dish, filled = cached(events)
        info = shape(dish, filled)
        label = f"{filled.events:,} events, {filled.runs} runs, {filled.cells:,} cells"
        for name, args in (("status", ["status", "--json"]), ("show", ["show", filled.show_cell])):
            walls, size = samples(args, dish, sizes.repeats)
            cmd = "petri status --json" if name == "status" else f"petri show {filled.show_cell}"
            last = events == largest
            row = spread(
                "P3",
                f"`{cmd}`, {label}",
                walls,
                target=f"≤ {LIMIT_S} s" if last else "",
                limit=LIMIT_S if last else None,
                details={**info, "output_bytes": size},
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
