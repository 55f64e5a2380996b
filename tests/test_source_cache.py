"""The service's cache of cited sources: bounded by the text it holds, oldest out first."""

from __future__ import annotations

from petri_core.models import Source
from petri_core.service import SourceCache


def source(n: int, chars: int) -> Source:
    return Source(
        source_id=f"src-{n}",
        url=f"https://example.org/{n}",
        final_url=f"https://example.org/{n}",
        status=200,
        content_type="text/html",
        fetched_at="2026-11-27T00:00:00+00:00",
        content_hash=f"{n:064d}",
        title=None,
        author=None,
        published=None,
        text="x" * chars,
    )


def test_the_oldest_sources_leave_first_once_the_text_held_passes_the_bound() -> None:
    cache = SourceCache(max_chars=100)
    for n in range(4):
        assert cache.put(source(n, 40)).source_id == f"src-{n}"
    assert [cache.get(f"src-{n}") is not None for n in range(4)] == [False, False, True, True]
    assert cache.get("src-3") == source(3, 40)


def test_a_source_larger_than_the_bound_is_answered_but_not_kept() -> None:
    cache = SourceCache(max_chars=100)
    cache.put(source(0, 60))
    big = cache.put(source(1, 101))
    assert big.source_id == "src-1" and cache.get("src-1") is None
    assert cache.get("src-0") is not None  # nothing was pushed out for it
