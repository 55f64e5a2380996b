"""Claim similarity: the near-duplicate guard for decompositions and the search behind `petri_cells`."""

from __future__ import annotations

import re
import unicodedata
from difflib import SequenceMatcher

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


def words(text: str) -> list[str]:
    """Lower-cased, lightly stemmed content words of a claim (stop words dropped, numbers kept)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return [_stem(w) for w in _WORD.findall(folded) if w not in _STOP]


def similarity(a: str, b: str) -> float:
    """How much two claims say the same thing, 0..1 (word overlap and word order)."""
    wa, wb = words(a), words(b)
    if not wa or not wb:
        return 1.0 if " ".join(wa) == " ".join(wb) else 0.0
    sa, sb = set(wa), set(wb)
    jaccard = len(sa & sb) / len(sa | sb)
    ordered = SequenceMatcher(None, wa, wb, autojunk=False).ratio()
    return round(max(jaccard, ordered), 4)


def is_restatement(a: str, b: str) -> bool:
    """True when `a` merely restates `b` (normalized near-duplicate; different numbers never are)."""
    numbers_a = {w for w in words(a) if any(ch.isdigit() for ch in w)}
    numbers_b = {w for w in words(b) if any(ch.isdigit() for ch in w)}
    return numbers_a == numbers_b and similarity(a, b) >= RESTATEMENT_THRESHOLD
