"""Token cost of the MCP tool list and of context packets (P4): `python -m benchmarks.tokens`.

Counts with tiktoken's o200k_base, loaded offline from the vocabulary that the `bpe-openai`
wheel ships (tiktoken would otherwise download it); falls back to characters/4, labelled so.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic_core
from pydantic import BaseModel

from petri_core.mcp_server import build, reply, tool_list_json
from petri_core.service import Service

from .common import Row, Sizes
from .dishes import add_source, grow, iterate

O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
CLAUDE_PREFIX = "mcp__plugin_petri_petri__"


def tokenizer() -> tuple[str, Callable[[str], int]]:
    """o200k_base via tiktoken with an offline vocabulary, else an estimate."""
    try:
        import bpe_openai
        import tiktoken

        cache = Path(tempfile.gettempdir()) / "petri-tiktoken"
        cache.mkdir(exist_ok=True)
        target = cache / hashlib.sha1(O200K_URL.encode()).hexdigest()
        if not target.exists():
            packed = Path(bpe_openai.__file__).parent / "data" / "o200k_base.tiktoken.gz"
            target.write_bytes(gzip.decompress(packed.read_bytes()))
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
        enc = tiktoken.get_encoding("o200k_base")
        return "o200k_base", lambda text: len(enc.encode(text))
    except Exception:
        return "chars/4 estimate", lambda text: len(text) // 4


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def measure(count: Callable[[str], int], cell_counts: tuple[int, ...] = (10, 1000)) -> dict[str, int]:
    """Tokens of the tool list, and of packets in dishes of each of `cell_counts` cells."""
    figures: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="petri-p4-") as tmp:
        tools = tool_list_json(build(Service(Path(tmp) / "tools" / ".petri")))
        figures["tool list (model view)"] = count(compact(tools))
        prefixed = [{**t, "name": CLAUDE_PREFIX + t["name"]} for t in tools]
        figures["tool list, Claude Code names"] = count(compact(prefixed))
        for cells in cell_counts:
            figures.update(packets(Service(Path(tmp) / str(cells) / ".petri"), cells, count))
    return figures


def read(out: BaseModel) -> str:
    """The text a harness puts before the model for a tool's result: `petri_claim`'s reply."""
    return str(reply(out).content[0].text)  # type: ignore[union-attr]


def packets(svc: Service, cells: int, count: Callable[[str], int]) -> dict[str, int]:
    """An investigator's packet (with its result schema) at iterations 1 and 3, in a dish of `cells`
    cells, as the model reads it; and the third as the SDK would have written it (indented)."""
    _, leaf = grow(svc, cells)
    with svc.open() as st:
        task = next(t.task_id for t in st.tasks_of_cell(leaf) if t.status == "ready")
    claim = svc.claim(task, "petri-investigator")
    first = count(read(claim))
    svc.fail(task, claim.lease, "measure again", retry_after=0)
    third = svc.claim(iterate(svc, leaf, add_source(svc), 3), "petri-investigator")
    return {
        f"packet, {cells} cells, iteration 1": first,
        f"packet, {cells} cells, iteration 3": count(read(third)),
        f"… that packet indented, as the SDK writes a result (sent until the sixth round), {cells} cells": count(
            pydantic_core.to_json(third, fallback=str, indent=2).decode()
        ),
    }


def limit(what: str) -> int | None:
    if what.startswith("…"):
        return None  # a comparison, not a figure the target is about
    return 2000 if what.startswith("tool list") else 3000


def run(sizes: Sizes) -> list[Row]:
    """P4 for `python -m benchmarks`: one row per figure."""
    name, count = tokenizer()
    rows = []
    for what, tokens in measure(count, sizes.token_cells).items():
        most = limit(what)
        target, met = ("", None) if most is None else (f"≤ {most:,}", tokens <= most)
        rows.append(Row("P4", f"{what} ({name})", tokens, "tokens", target=target, met=met))
    return rows


def main() -> None:
    name, count = tokenizer()
    figures = measure(count)
    print(f"| what | tokens ({name}) | target |")
    print("|---|---:|---:|")
    for what, tokens in figures.items():
        most = limit(what)
        print(f"| {what} | {tokens:,} | {'' if most is None else f'≤ {most:,}'} |")


if __name__ == "__main__":
    main()
