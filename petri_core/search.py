"""Web search for harnesses without their own (OpenCode with a local model).

A provider is a class with a `name` and `search(query, limit)`. SearXNG is built in; a second
provider (an API-key service) is one small class plus one line in `provider_from_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import Rejected

NO_PROVIDER = (
    "set PETRI_SEARXNG_URL to a SearXNG instance (or `search.searxng_url` in the dish's "
    "config.json), or use your harness's own web search"
)


@dataclass(frozen=True)
class SearchResult:
    title: str
    url: str
    snippet: str


class SearchProvider(Protocol):
    name: str

    def search(self, query: str, limit: int) -> list[SearchResult]: ...


class SearxngProvider:
    """A SearXNG instance's JSON API (`/search?format=json`)."""

    name = "searxng"

    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def search(self, query: str, limit: int) -> list[SearchResult]:
        import httpx2

        query = " ".join(query.split())
        if not query:
            raise Rejected("the search query is empty", "search for a few specific words")
        if not 1 <= limit <= 20:
            raise Rejected(f"limit {limit} is out of range", "use a limit from 1 to 20")
        try:
            response = httpx2.get(
                f"{self.base_url}/search", params={"q": query, "format": "json"}, timeout=self.timeout
            )
        except httpx2.TimeoutException:
            raise Rejected(f"the search provider at {self.base_url} timed out", "try again later") from None
        except httpx2.HTTPError as exc:
            raise Rejected(
                f"the search provider at {self.base_url} is unreachable ({type(exc).__name__})",
                "check that SearXNG is running, or use your harness's web search",
            ) from None
        if response.status_code == 429:
            wait = response.headers.get("retry-after")
            hint = f" (retry after {wait} s)" if wait else ""
            raise Rejected(
                f"the search provider is rate limiting{hint}",
                "wait and try again; petri_fail with retryable=true gives the task back",
            )
        if response.status_code >= 400:
            raise Rejected(f"the search provider answered HTTP {response.status_code}", "try again later")
        try:
            data: Any = response.json()
            results = data["results"]
            return [
                SearchResult(str(r.get("title", "")), str(r["url"]), str(r.get("content", "")))
                for r in results[:limit]
            ]
        except (ValueError, KeyError, TypeError):
            raise Rejected(
                "the search provider returned something that is not SearXNG JSON",
                "check that the instance has the json format enabled",
            ) from None


def provider_from_env(
    environ: Mapping[str, str] | None = None, config: Mapping[str, Any] | None = None
) -> SearchProvider:
    """The configured provider: PETRI_SEARXNG_URL, else the dish config's `searxng_url`."""
    env = os.environ if environ is None else environ
    url = env.get("PETRI_SEARXNG_URL") or (config or {}).get("searxng_url")
    if url:
        return SearxngProvider(str(url))
    raise Rejected("no search provider is configured", NO_PROVIDER)
