"""petri_search through a SearXNG-shaped local server; every failure is a clear rejection."""

from __future__ import annotations

import json

import pytest
from helpers import free_port
from webserver import serve

from petri_core.errors import Rejected
from petri_core.search import SearxngProvider, provider_from_env

RESULTS = {
    "results": [
        {"title": f"Result {i}", "url": f"https://example.org/{i}", "content": f"snippet {i}"}
        for i in range(12)
    ]
}
JSON = {"Content-Type": "application/json"}


def test_results_are_parsed_and_limited() -> None:
    with serve({"/search": (200, JSON, json.dumps(RESULTS).encode(), 0.0)}) as base:
        hits = provider_from_env({"PETRI_SEARXNG_URL": base}).search("bike lanes traffic", 5)
    assert [h.title for h in hits] == [f"Result {i}" for i in range(5)]
    assert hits[0].url == "https://example.org/0" and hits[0].snippet == "snippet 0"


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ((429, {"Retry-After": "30"}, b"slow down", 0.0), r"rate limiting \(retry after 30 s\)"),
        ((500, JSON, b"{}", 0.0), "answered HTTP 500"),
        ((200, JSON, b"<html>not json</html>", 0.0), "not SearXNG JSON"),
        ((200, JSON, b'{"answers": []}', 0.0), "not SearXNG JSON"),
    ],
)
def test_provider_errors_are_rejections(route: tuple, message: str) -> None:
    with serve({"/search": route}) as base, pytest.raises(Rejected, match=message):
        SearxngProvider(base).search("query", 5)


def test_a_provider_that_is_down_is_a_rejection() -> None:
    with pytest.raises(Rejected, match="unreachable"):
        SearxngProvider(f"http://127.0.0.1:{free_port()}", timeout=2).search("query", 5)


def test_no_provider_and_bad_arguments_are_rejections() -> None:
    with pytest.raises(Rejected, match="no search provider is configured; set PETRI_SEARXNG_URL"):
        provider_from_env({}, {})
    with pytest.raises(Rejected, match="empty"):
        SearxngProvider("http://127.0.0.1:9").search("  ", 5)
    with pytest.raises(Rejected, match="out of range"):
        SearxngProvider("http://127.0.0.1:9").search("q", 50)
