"""Fetching pages safely: http(s) only, no private addresses, every redirect hop re-checked, and
every connection opened to the address that was checked (no DNS rebinding). A proxy is used only
when configured for Petri (`PETRI_FETCH_PROXY`), never because the environment names one.

`fetch_url` returns the extracted main text and metadata of one page (trafilatura) or PDF (pypdf:
its text layer); the service stores it as an immutable snapshot. Every refusal is a `Rejected` that
says why and what to do.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

from .errors import Rejected

Resolver = Callable[[str, int], list[str]]
PDF = "application/pdf"
TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain", PDF)
MAX_PDF_PAGES = 500  # a paper or a report; the text of later pages is not kept (the source says so)
UNREADABLE_PDF_FIX = "cite another source (its abstract page or an HTML version)"
PRIVATE_FIX = (
    "fetch a public http(s) URL, or set PETRI_FETCH_ALLOW_PRIVATE=1 (or the dish config) for local testing"
)
#: The variables through which other clients pick up a proxy; Petri's fetcher ignores them.
ENV_PROXIES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")


class Unresolved(Rejected):
    """A host name that does not resolve (from here)."""


def env_proxy_note(policy: FetchPolicy) -> str:
    """A note for a failure to reach a host, when the environment names a proxy Petri does not use."""
    if policy.proxy is not None:
        return ""
    named = [name for upper in ENV_PROXIES for name in (upper, upper.lower()) if os.environ.get(name)]
    if not named:
        return ""
    return (
        f" ({named[0]} is set, but Petri does not fetch through a proxy from the environment:"
        " set PETRI_FETCH_PROXY to its URL to fetch through it)"
    )


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system would connect to (getaddrinfo, like any client)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Unresolved(f"cannot resolve host {host!r}: {exc.strerror}", "check the URL") from None
    return sorted({str(info[4][0]) for info in infos})


def remembered(resolver: Resolver) -> Resolver:
    """`resolver`, asked once per host and port; later asks get the same answer (a failure is not kept).

    One fetch resolves through one of these, so the addresses `check_url` checks are the very ones
    the pinned connection opens to, and a fetch costs one lookup per host, not one per check."""
    answers: dict[tuple[str, int], list[str]] = {}

    def lookup(host: str, port: int) -> list[str]:
        if (host, port) not in answers:
            answers[host, port] = resolver(host, port)
        return answers[host, port]

    return lookup


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of one fetch. `trusted_hosts` are exempt from the address check (an explicit allowlist)."""

    allow_private: bool = False
    max_bytes: int = 5_000_000
    max_pdf_bytes: int = 25_000_000  # a paper's PDF carries its figures
    timeout: float = 15.0
    max_redirects: int = 5
    user_agent: str = "petri/0.1 (+research agent fetcher)"
    resolver: Resolver | None = None
    trusted_hosts: frozenset[str] = field(default_factory=frozenset)
    #: An http(s) proxy to fetch through (its own address is the operator's choice, so it is not
    #: checked). None: connect directly, whatever HTTPS_PROXY and the like say.
    proxy: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FetchPolicy:
        env = os.environ if environ is None else environ
        return cls(
            allow_private=env.get("PETRI_FETCH_ALLOW_PRIVATE", "").lower() in ("1", "true", "yes"),
            proxy=env.get("PETRI_FETCH_PROXY", "").strip() or None,
        )


@dataclass(frozen=True)
class FetchedPage:
    requested_url: str
    final_url: str
    status: int
    content_type: str
    fetched_at: datetime
    content_hash: str
    title: str | None
    author: str | None
    published: str | None
    text: str
    note: str | None = None  # what the text leaves out (a PDF's pages after MAX_PDF_PAGES)


def address_allowed(address: str) -> bool:
    """True for a public unicast address (not loopback, private, link-local, multicast, reserved…)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return address_allowed(str(mapped))
        if ip in ipaddress.ip_network("64:ff9b::/96"):  # NAT64 of an IPv4 address
            return address_allowed(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    return bool(ip.is_global) and not ip.is_multicast


def check_url(url: str, policy: FetchPolicy) -> None:
    """Refuse a URL whose scheme or resolved addresses are not allowed (raises Rejected).

    Through a proxy the proxy resolves the name, so a name this machine cannot resolve is left to
    the proxy; an IP address, or a name that does resolve here, is still checked."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise Rejected(f"cannot parse URL {url!r}: {exc}", "pass a full http(s) URL") from None
    if parts.scheme not in ("http", "https"):
        raise Rejected(f"cannot fetch {url!r}: only http and https are allowed", "pass an http(s) URL")
    host = parts.hostname
    if not host:
        raise Rejected(f"cannot fetch {url!r}: it has no host", "pass a full http(s) URL")
    if policy.allow_private or host in policy.trusted_hosts:
        return
    if host == "localhost" or host.endswith(".localhost"):
        raise Rejected(f"cannot fetch {url}: {host} is a loopback name", PRIVATE_FIX)
    try:
        resolve(host, port, policy, url)
    except Unresolved:
        if policy.proxy is None:
            raise


def resolve(host: str, port: int, policy: FetchPolicy, url: str) -> list[str]:
    """The addresses `host` resolves to (an IP address is its own); raises Rejected if the policy
    forbids any of them."""
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = (policy.resolver or system_resolver)(host, port)
        except Unresolved as exc:
            raise Unresolved(exc.problem + env_proxy_note(policy), exc.fix) from None
    if not addresses:
        raise Unresolved(f"cannot resolve host {host!r}{env_proxy_note(policy)}", "check the URL")
    if policy.allow_private or host in policy.trusted_hosts:
        return addresses
    for address in addresses:
        try:
            allowed = address_allowed(address)
        except ValueError:
            allowed = False
        if not allowed:
            raise Rejected(
                f"cannot fetch {url}: {host} resolves to {address}, a private or reserved address",
                PRIVATE_FIX,
            )
    return addresses


def pinned_transport(policy: FetchPolicy) -> Any:
    """An httpx2 transport whose every connection goes to an address it resolved and checked itself.

    `check_url` refuses a URL early, with a clear message, but a name can resolve to a public address
    for that check and to a private one a moment later, were the client to look it up again to
    connect (DNS rebinding). Here the lookup that is checked is the one connected to: the connection
    opens to the checked address, while TLS and the Host header keep the name. (`fetch_url` gives
    the check and this transport one `remembered` resolver, so they share one lookup; the transport
    checks what it connects to all the same, whoever calls it.) `fetch_url`'s client takes no
    proxy from the environment, so nothing goes around this transport; a proxy configured for Petri
    (`FetchPolicy.proxy`) takes its place, and resolves names itself.
    """
    import httpcore2
    import httpx2

    class PinnedBackend(httpcore2.SyncBackend):
        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> Any:
            failure: Exception | None = None
            for address in resolve(host, port, policy, f"{host}:{port}"):
                try:
                    return super().connect_tcp(address, port, timeout, local_address, socket_options)
                except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                    failure = exc  # like any client: try the host's next address
            assert failure is not None  # resolve() returns at least one address
            raise failure

    transport = httpx2.HTTPTransport()
    # httpx2's transport takes no network backend, but its pool does: replace the (private) pool.
    # tests/test_ssrf.py fails, rather than fetching unpinned, should a new httpx2 move it.
    transport._pool = httpcore2.ConnectionPool(
        ssl_context=httpx2.create_ssl_context(), network_backend=PinnedBackend()
    )
    return transport


def proxy_transport(policy: FetchPolicy) -> Any:
    """An httpx2 transport that sends every request through the configured proxy (which resolves
    and connects; `check_url` has already checked what this machine can resolve)."""
    import httpx2

    assert policy.proxy is not None
    fix = (
        "set PETRI_FETCH_PROXY (or fetch.proxy in the dish config) to its URL, like http://proxy.example:3128"
    )
    try:
        parts = urlsplit(policy.proxy)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        shown = f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        ok, shown = False, "that cannot be parsed"
    if not ok:  # the value may carry a password, so only its scheme and host are ever shown
        raise Rejected(f"the fetch proxy ({shown}) is not an http:// or https:// URL", fix)
    return httpx2.HTTPTransport(proxy=policy.proxy)


def page_text(text: str, page: int, page_chars: int = 6000) -> tuple[str, int]:
    """One page of `text` (split at paragraph or sentence ends where possible) and the page count."""
    chunks: list[str] = []
    rest = text
    while rest:
        if len(rest) <= page_chars:
            chunks.append(rest)
            break
        cut = rest.rfind("\n\n", 0, page_chars)
        if cut < page_chars // 2:
            cut = rest.rfind(". ", 0, page_chars) + 1
        if cut < page_chars // 2:
            cut = page_chars
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    chunks = chunks or [""]
    if not 1 <= page <= len(chunks):
        raise Rejected(f"page {page} does not exist", f"pages run from 1 to {len(chunks)}")
    return chunks[page - 1], len(chunks)


def _pdf(body: bytes, url: str) -> dict[str, Any]:
    """The text layer of a PDF (pypdf), page by page, with its title, author and creation date.

    The file is untrusted: pypdf bounds what it decompresses, only the first MAX_PDF_PAGES pages are
    read, and any failure to parse is a rejection naming the URL."""
    import io

    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(body))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Rejected(f"{url} is an encrypted PDF", UNREADABLE_PDF_FIX)
        total = len(reader.pages)
        pages = [page.extract_text() or "" for page in reader.pages[:MAX_PDF_PAGES]]
        info = reader.metadata
    except Rejected:
        raise
    except Exception as exc:  # pypdf raises many kinds of errors on malformed input; all mean the same here
        raise Rejected(
            f"cannot read the PDF at {url} ({type(exc).__name__}: {str(exc)[:200]})", UNREADABLE_PDF_FIX
        ) from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise Rejected(
            f"{url} is a PDF without a text layer (a scan?), so nothing in it can be quoted",
            "cite a source whose text can be read (an HTML version, or a page quoting it)",
        )
    return {"text": text, "note": _cut_note(total), **_pdf_metadata(info)}


def _cut_note(total: int) -> str | None:
    """What a reader of a PDF's text must know when pages after MAX_PDF_PAGES were left out."""
    if total <= MAX_PDF_PAGES:
        return None
    return (
        f"this PDF has {total} pages and only the text of the first {MAX_PDF_PAGES} was read: "
        "a quote from a later page cannot be verified, so cite another source for it"
    )


def _pdf_metadata(info: Any) -> dict[str, Any]:
    """Title, author and creation date (`YYYY-MM-DD`) from a PDF's document information, where sane."""
    found: dict[str, Any] = {"title": None, "author": None, "date": None}
    if info is None:
        return found
    for key in ("title", "author"):
        try:
            value = getattr(info, key)
        except Exception:  # a malformed entry: leave it out
            continue
        if isinstance(value, str) and value.strip():
            found[key] = " ".join(value.split())[:300]
    try:
        created = info.creation_date
    except Exception:  # pypdf parses /CreationDate on access, and a malformed one raises
        created = None
    if created is not None:
        found["date"] = created.date().isoformat()
    return found


def _extract(body: bytes, content_type: str, charset: str | None, url: str) -> dict[str, Any]:
    if content_type == PDF:
        return _pdf(body, url)
    if content_type == "text/plain":
        text = body.decode(charset or "utf-8", errors="replace")
        return {"text": text, "title": None, "author": None, "date": None}
    import trafilatura

    html: bytes | str = body
    if charset:
        try:
            html = body.decode(charset)
        except (LookupError, UnicodeDecodeError):
            html = body
    found = trafilatura.bare_extraction(
        html,
        url=url,
        with_metadata=True,
        include_comments=False,
        date_extraction_params={"extensive_search": True, "original_date": True},
    )
    data: dict[str, Any] = {}
    if isinstance(found, dict):
        data = dict(found)
    elif found is not None:
        data = dict(found.as_dict())
    if not (data.get("text") or "").strip():
        import lxml.html

        tree = lxml.html.fromstring(html)
        for bad in tree.xpath("//script|//style|//nav|//header|//footer"):
            bad.drop_tree()
        data["text"] = tree.text_content()
    data["date"] = _stated_date(data.get("date"), html)
    return data


#: How a page may state 1 January of a year (`{y}`), for `_stated_date`.
NEW_YEAR = (
    "{y}-01-01",
    "01/01/{y}",
    "1/1/{y}",
    "01.01.{y}",
    "1 January {y}",
    "1st January {y}",
    "January 1, {y}",
    "January 1 {y}",
    "January 1st, {y}",
    "Jan. 1, {y}",
    "Jan 1, {y}",
    "1 Jan {y}",
    "1. Januar {y}",
    "1er janvier {y}",
    "1 de enero de {y}",
)


def _stated_date(date: Any, html: bytes | str) -> str | None:
    """The publication date, if the page states it. Trafilatura's extensive date search answers a
    bare year in the text ("in 2026", "© 2024", even "November 2025") with 1 January of it: a
    date no one wrote, which would make a source look up to a year older or newer than it is. A
    1 January date is kept only when the page's metadata gives it or its text spells it out;
    otherwise the date is unknown."""
    if not date:
        return None
    day = str(date)[:10]
    if day[4:] != "-01-01":
        return day
    page = html if isinstance(html, str) else html.decode("utf-8", errors="replace")
    if any(form.format(y=day[:4]) in page for form in NEW_YEAR):
        return day
    from htmldate import find_date

    return day if find_date(page, extensive_search=False, original_date=True) == day else None


def fetch_url(url: str, policy: FetchPolicy, *, client: Any = None) -> FetchedPage:
    """Fetch one page within the policy and extract its main text and metadata.

    Each host is looked up once: the check of every hop and the connection share that answer."""
    import httpx2

    policy = replace(policy, resolver=remembered(policy.resolver or system_resolver))
    current = url
    own = client is None
    http = client or httpx2.Client(
        follow_redirects=False,
        timeout=policy.timeout,
        headers={"User-Agent": policy.user_agent},
        transport=pinned_transport(policy) if policy.proxy is None else proxy_transport(policy),
        trust_env=False,  # a proxy only as FetchPolicy.proxy says (a set transport already implies it)
    )
    try:
        for _hop in range(policy.max_redirects + 1):
            check_url(current, policy)
            try:
                with http.stream("GET", current) as response:
                    if response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers:
                        current = urljoin(current, response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise Rejected(
                            f"{current} answered HTTP {response.status_code}",
                            "check the URL or cite another source",
                        )
                    content_type, _, params = response.headers.get("content-type", "").partition(";")
                    content_type = content_type.strip().lower() or "text/html"
                    if content_type not in TEXT_TYPES:
                        raise Rejected(
                            f"{current} is {content_type}, not a web page or a PDF",
                            "fetch an HTML, plain-text or PDF document",
                        )
                    charset = next(
                        (
                            p.split("=", 1)[1].strip(' "')
                            for p in params.split(";")
                            if p.strip().lower().startswith("charset=")
                        ),
                        None,
                    )
                    limit = policy.max_pdf_bytes if content_type == PDF else policy.max_bytes
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > limit:
                            raise Rejected(
                                f"{current} is larger than {limit:,} bytes",
                                "cite a smaller page (a summary or a specific section)",
                            )
                    status = response.status_code
            except httpx2.TimeoutException:
                raise Rejected(
                    f"{current} did not answer within {policy.timeout:g} s{env_proxy_note(policy)}",
                    "try again later (petri_fail with retryable=true) or cite another source",
                ) from None
            except httpx2.HTTPError as exc:
                note = env_proxy_note(policy) if isinstance(exc, httpx2.ConnectError) else ""
                raise Rejected(
                    f"cannot fetch {current}: {type(exc).__name__}: {exc}{note}",
                    "check the URL, or try again later",
                ) from None
            data = _extract(bytes(body), content_type, charset, current)
            text = unicodedata.normalize("NFC", (data.get("text") or "").strip())
            published = data.get("date")
            return FetchedPage(
                requested_url=url,
                final_url=current,
                status=status,
                content_type=content_type,
                fetched_at=datetime.now(UTC),
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
                title=data.get("title"),
                author=data.get("author"),
                published=str(published)[:10] if published else None,
                text=text,
                note=data.get("note"),
            )
        raise Rejected(
            f"{url} redirected more than {policy.max_redirects} times", "fetch the final URL directly"
        )
    finally:
        if own:
            http.close()
