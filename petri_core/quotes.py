"""Quote verification: is a cited quote really on the page? Pure functions, no I/O.

Both sides are normalized (case, Unicode compatibility forms, quotes, dashes, ellipses, soft
hyphens, line-break hyphenation, whitespace) with a map back to the original offsets, so the
matched span is stored exactly. A near match is allowed only for long quotes, only for tiny
differences, and never when a number, a negation or the order of words differs.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache

MIN_QUOTE_CHARS = 20
NEAR_MIN_CHARS = 40
NEAR_THRESHOLD = 0.95
ELISION_WINDOW = 500

_QUOTES = {c: "'" for c in "‘’‚‛′‹›`´"} | {c: '"' for c in "“”„‟″«»"}
_DASHES = dict.fromkeys("‐‑‒–—―−﹘﹣－", "-")
_DROP = {"\u00ad", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"}
_NEGATIONS = frozenset(
    {"not", "no", "never", "none", "cannot", "without", "nor", "neither", "nobody", "nothing"}
)
_ELISION = re.compile(r"\s*(?:\[\s*(?:\.\.\.|…)\s*\]|\.\.\.|…)\s*")
_WORD = re.compile(r"[\w']+")


@dataclass(frozen=True)
class QuoteMatch:
    """Where a quote was found: offsets into the ORIGINAL text, and how exact it was."""

    start: int
    end: int
    score: float
    matched: str


def _normalize_with_map(text: str) -> tuple[str, list[int]]:
    """The normalized text and, for each of its characters, the index of the original character."""
    out: list[str] = []
    where: list[int] = []
    space = True  # collapse leading whitespace
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        if ch in _DROP:
            i += 1
            continue
        if ch in "-\u2010\u00ad" and i + 1 < n and text[i + 1] in "\r\n":
            j = i + 1
            while j < n and text[j].isspace():
                j += 1
            if j < n and text[j].isalpha() and out and out[-1].isalpha():
                i = j  # "infor-\nmation" → "information"
                continue
        if ch.isspace():
            if not space:
                out.append(" ")
                where.append(i)
                space = True
            i += 1
            continue
        mapped = _QUOTES.get(ch) or _DASHES.get(ch)
        if mapped is None:
            mapped = "..." if ch == "…" else unicodedata.normalize("NFKC", ch).casefold()
        for m in mapped:
            if m.isspace():
                if not space:
                    out.append(" ")
                    where.append(i)
                    space = True
                continue
            out.append(m)
            where.append(i)
            space = False
        i += 1
    if out and out[-1] == " ":
        out.pop()
        where.pop()
    return "".join(out), where


@lru_cache(maxsize=16)
def _cached(text: str) -> tuple[str, list[int]]:
    return _normalize_with_map(text)


def elides(quote: str) -> bool:
    """Whether a quote leaves words out between two of its parts ("…", "...", "[…]"). Such a quote
    is verified part by part, so whoever reads it is shown the source's own words for the span
    too: an elision can change what a sentence says ("did not … cause harm")."""
    return len([part for part in _ELISION.split(normalize(quote)) if part.strip()]) > 1


def source_words(quote: str, text: str, start: int, end: int) -> str | None:
    """The source's words for an elided quote's matched span (`None` for a quote without an elision)."""
    return text[start:end] if elides(quote) else None


def normalize(text: str) -> str:
    """The form both quote and page are compared in. Quote-sized texts are cached (a quote is
    normalized for its length check, its search and the verify pass); pages are not."""
    if len(text) <= 2000:
        return _normalize_short(text)
    return _normalize_with_map(text)[0]


@lru_cache(maxsize=4096)
def _normalize_short(text: str) -> str:
    return _normalize_with_map(text)[0]


def _span(text: str, where: list[int], start: int, end: int, score: float) -> QuoteMatch:
    lo, hi = where[start], where[end - 1] + 1
    return QuoteMatch(lo, hi, score, text[lo:hi])


def _same_meaning(quote: str, candidate: str) -> bool:
    """Tiny differences only: same numbers, same negations, no moved words."""
    if re.findall(r"\d+", quote) != re.findall(r"\d+", candidate):
        return False
    qw, cw = _WORD.findall(quote), _WORD.findall(candidate)
    if {w for w in qw if w in _NEGATIONS or w.endswith("n't")} != {
        w for w in cw if w in _NEGATIONS or w.endswith("n't")
    }:
        return False
    removed, added = [], []
    for op, a1, a2, b1, b2 in SequenceMatcher(None, qw, cw, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            removed += qw[a1:a2]
        if op in ("insert", "replace"):
            added += cw[b1:b2]
        if op == "replace" and (a2 - a1 != 1 or b2 - b1 != 1):
            return False  # more than a one-word slip
    if set(removed) & set(added):
        return False  # a word moved: a different sentence
    return len(removed) <= max(2, len(qw) // 10) and len(added) <= max(2, len(qw) // 10)


def _near(q: str, nt: str) -> tuple[int, int, float] | None:
    """Best window of the page within the near-match allowance, found from exact anchors."""
    size = 16
    anchors = {0, max(0, len(q) // 2 - size // 2), max(0, len(q) - size)}
    tried: set[int] = set()
    best: tuple[int, int, float] | None = None
    for offset in sorted(anchors):
        piece = q[offset : offset + size]
        pos = nt.find(piece)
        hits = 0
        while pos != -1 and hits < 50:
            hits += 1
            base = pos - offset
            for start in range(max(0, base - 3), base + 4):
                if start in tried:
                    continue
                tried.add(start)
                for end in range(start + len(q) - 3, start + len(q) + 4):
                    window = nt[start:end]
                    ratio = SequenceMatcher(None, q, window, autojunk=False).ratio()
                    if (
                        ratio >= NEAR_THRESHOLD
                        and (best is None or ratio > best[2])
                        and _same_meaning(q, window)
                    ):
                        best = (start, end, ratio)
            pos = nt.find(piece, pos + 1)
    return best


def find_quote(quote: str, text: str) -> QuoteMatch | None:
    """Where `quote` appears in `text` (exactly after normalization, by elision, or as a near match)."""
    q = normalize(quote)
    if not q:
        return None
    nt, where = _cached(text)
    pos = nt.find(q)
    if pos != -1:
        return _span(text, where, pos, pos + len(q), 1.0)
    parts = [p for p in _ELISION.split(q) if p]
    if len(parts) > 1:
        found = _elided(parts, nt, len(q))
        if found:
            return _span(text, where, found[0], found[1], 1.0)
    if len(q) < NEAR_MIN_CHARS:
        return None
    near = _near(q, nt)
    if near is None:
        return None
    return _span(text, where, near[0], near[1], round(near[2], 4))


def _elided(parts: list[str], nt: str, qlen: int) -> tuple[int, int] | None:
    if any(len(p) < 8 for p in parts):
        return None
    start = nt.find(parts[0])
    while start != -1:
        cursor, limit = start + len(parts[0]), start + 3 * qlen + ELISION_WINDOW
        for part in parts[1:]:
            nxt = nt.find(part, cursor, limit)
            if nxt == -1:
                break
            cursor = nxt + len(part)
        else:
            return start, cursor
        start = nt.find(parts[0], start + 1)
    return None


def closest_passage(quote: str, text: str, width: int = 240) -> str:
    """The passage of `text` that shares the most words with `quote` (for a rejection message)."""
    nt, where = _cached(text)
    if not nt:
        return ""
    words = {w for w in _WORD.findall(normalize(quote)) if len(w) > 2}
    best, best_score = 0, -1
    step = max(20, width // 4)
    for start in range(0, max(1, len(nt) - width // 2), step):
        window = set(_WORD.findall(nt[start : start + width]))
        score = len(words & window)
        if score > best_score:
            best, best_score = start, score
    lo = where[best]
    hi = where[min(len(nt), best + width) - 1] + 1
    snippet = text[lo:hi]
    snippet = snippet[snippet.find(" ") + 1 :] if lo > 0 and " " in snippet[:30] else snippet
    return " ".join(snippet.split())
