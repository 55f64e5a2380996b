"""Claim similarity: the near-duplicate guard for decompositions and the search behind `petri_cells`."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from difflib import SequenceMatcher
from functools import lru_cache

_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "for",
        "and",
        "or",
        "is",
        "are",
        "be",
        "by",
        "with",
        "that",
        "this",
        "it",
        "its",
        "as",
        "at",
        "from",
        "will",
        "was",
        "were",
        "has",
        "have",
        "do",
        "does",
        "can",
        "than",
        "then",
        "into",
        "over",
        "under",
    ]
)
#: Two claims at or above this score are the same claim for the decomposition guard.
RESTATEMENT_THRESHOLD = 0.8


def _stem(word: str) -> str:
    """A light plural fold (teams → team) so number does not hide a restatement."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


@lru_cache(maxsize=65536)
def _words(text: str) -> tuple[str, ...]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return tuple(_stem(w) for w in _WORD.findall(folded) if w not in _STOP)


def words(text: str) -> list[str]:
    """Lower-cased, lightly stemmed content words of a claim (stop words dropped, numbers kept)."""
    return list(_words(text))


def similarity(a: str, b: str) -> float:
    """How much two claims say the same thing, 0..1 (word overlap and word order)."""
    wa, wb = words(a), words(b)
    if not wa or not wb:
        return 1.0 if " ".join(wa) == " ".join(wb) else 0.0
    sa, sb = set(wa), set(wb)
    jaccard = len(sa & sb) / len(sa | sb)
    ordered = SequenceMatcher(None, wa, wb, autojunk=False).ratio()
    return round(max(jaccard, ordered), 4)


def numbers(ws: Iterable[str]) -> frozenset[str]:
    """The tokens of a claim that carry digits (a changed number is a different claim)."""
    return frozenset(w for w in ws if any(ch.isdigit() for ch in w))


@lru_cache(maxsize=65536)
def _numbers_of(text: str) -> frozenset[str]:
    return numbers(_words(text))


def find_restatement(text: str, pool: list[tuple[str, str]]) -> tuple[str, str, float] | None:
    """The (id, text, score) in `pool` that `text` restates most closely, if any.

    Cheap filters first (same numbers, enough shared words), so a dish of thousands of cells
    costs a few milliseconds.
    """
    mine = _words(text)
    mine_set, mine_numbers = set(mine), numbers(mine)
    best: tuple[str, str, float] | None = None
    for key, other in pool:
        if _numbers_of(other) != mine_numbers:
            continue
        theirs = _words(other)
        theirs_set = set(theirs)
        if (
            not mine_set
            or not theirs_set
            or 2 * len(mine_set & theirs_set) < 1.2 * min(len(mine_set), len(theirs_set))
        ):
            continue
        score = similarity(text, other)
        if score >= RESTATEMENT_THRESHOLD and (best is None or score > best[2]):
            best = (key, other, score)
    return best


def is_restatement(a: str, b: str) -> bool:
    """True when `a` merely restates `b` (normalized near-duplicate; different numbers never are)."""
    return numbers(_words(a)) == numbers(_words(b)) and similarity(a, b) >= RESTATEMENT_THRESHOLD
