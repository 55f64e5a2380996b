"""The SSRF guard: refuse every private, loopback, link-local, multicast or odd-form address."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from webserver import serve

from petri_core.errors import Rejected
from petri_core.fetch import ENV_PROXIES, FetchPolicy, Unresolved, check_url, fetch_url
from petri_core.service import Service

PUBLIC = {
    "public.example": ["93.184.216.34"],
    "mixed.example": ["93.184.216.34", "10.1.2.3"],
    "evil.example": ["127.0.0.1"],
    "meta.example": ["169.254.169.254"],
    "v6.example": ["::1"],
}


def resolver(host: str, port: int) -> list[str]:
    """A test resolver: named hosts from the table, IP literals as glibc would read them."""
    if host in PUBLIC:
        return PUBLIC[host]
    import socket

    return sorted({str(i[4][0]) for i in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


STRICT = FetchPolicy(resolver=resolver)
REFUSED = [
    "file:///etc/passwd",
    "ftp://example.org/x",
    "gopher://example.org/",
    "javascript:alert(1)",
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/admin",
    "http://localhost/",
    "http://api.localhost/",
    "http://[::1]/",
    "http://10.0.0.1/",
    "http://10.255.255.254/",
    "http://172.16.0.1/",
    "http://172.31.9.9/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://100.64.0.1/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://evil.example/",
    "http://mixed.example/",
    "http://meta.example/",
    "http://v6.example/",
    "http://public.example@127.0.0.1/",
    "https://127.0.0.1:443/",
    "http://[64:ff9b::a00:1]/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_refused_by_default(url: str) -> None:
    with pytest.raises(Rejected) as err:
        check_url(url, STRICT)
    message = str(err.value)
    assert "only http and https" in message or "private or reserved" in message or "loopback" in message, (
        message
    )


def test_a_public_address_passes() -> None:
    check_url("https://public.example/article", STRICT)


@pytest.mark.parametrize("url", [u for u in REFUSED if u.startswith("http") and "@" not in u])
def test_allowed_when_configured(url: str) -> None:
    check_url(url, FetchPolicy(allow_private=True, resolver=resolver))  # the address check is lifted


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/", "http://[::1]:9/", "file:///etc/passwd"],
)
def test_a_redirect_from_an_allowed_host_to_a_private_one_is_refused_before_connecting(target: str) -> None:
    with serve({"/go": (302, {"Location": target}, b"", 0.0)}) as base:
        policy = FetchPolicy(resolver=resolver, trusted_hosts=frozenset({"127.0.0.1"}), timeout=2.0)
        with pytest.raises(Rejected, match=r"private or reserved|only http and https"):
            fetch_url(f"{base}/go", policy)


def test_the_environment_switch_lifts_the_guard() -> None:
    assert FetchPolicy.from_env({"PETRI_FETCH_ALLOW_PRIVATE": "1"}).allow_private
    assert not FetchPolicy.from_env({}).allow_private


PAGE = (200, {"Content-Type": "text/plain"}, b"The figure is 42, by the second measurement.", 0.0)


def test_a_name_that_rebinds_after_the_check_is_connected_at_the_address_that_was_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name is public when first looked up and loopback when asked again. A fetch
    asks once, for its check and its connection alike, so it dials the public address it checked.

    No public host can be reached from here, so the socket layer is the one stand-in: it records the
    address it is asked to dial and connects to the local server instead."""
    import httpcore2

    lookups: list[str] = []
    dialled: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["93.184.216.34"] if len(lookups) == 1 else ["127.0.0.1"]

    dial = httpcore2.SyncBackend.connect_tcp

    def dial_locally(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        dialled.append(host)
        return dial(self, "127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(httpcore2.SyncBackend, "connect_tcp", dial_locally)
    seen: list[tuple[str, str]] = []
    routes = {"/old": (301, {"Location": "/page"}, b"", 0.0), "/page": PAGE}
    with serve(routes, seen) as base:
        port = base.rsplit(":", 1)[1]
        page = fetch_url(f"http://rebind.example:{port}/old", FetchPolicy(resolver=rebinding, timeout=2.0))
    assert page.text == "The figure is 42, by the second measurement."
    assert lookups == ["rebind.example"]  # one lookup for both hops' checks and the connection
    assert dialled and set(dialled) == {"93.184.216.34"}  # never the loopback of a second answer
    assert seen == [("/old", f"rebind.example:{port}"), ("/page", f"rebind.example:{port}")]


def test_the_pinned_transport_checks_the_address_it_connects_to() -> None:
    """Whoever calls it, without `check_url` first, the transport refuses to open a connection to
    an address the policy forbids."""
    import httpx2

    from petri_core.fetch import pinned_transport

    seen: list[tuple[str, str]] = []
    with serve({"/": PAGE}, seen) as base:
        port = base.rsplit(":", 1)[1]
        policy = FetchPolicy(resolver=lambda host, _: ["127.0.0.1"], timeout=2.0)
        refused = pytest.raises(Rejected, match=r"sneaky\.example resolves to 127\.0\.0\.1, a private")
        with httpx2.Client(transport=pinned_transport(policy)) as client, refused:
            client.get(f"http://sneaky.example:{port}/")
    assert seen == []


def test_a_name_connects_to_the_address_its_lookup_gave_and_keeps_its_host_header() -> None:
    """The connection opens to the resolved address (here the policy's resolver: the system knows no
    such name), while the request still names the host."""
    names = {"pinned.example": ["127.0.0.1"]}
    seen: list[tuple[str, str]] = []
    with serve({"/page": PAGE}, seen) as base:
        port = base.rsplit(":", 1)[1]
        policy = FetchPolicy(allow_private=True, resolver=lambda host, _: names[host], timeout=2.0)
        page = fetch_url(f"http://pinned.example:{port}/page", policy)
    assert page.text == "The figure is 42, by the second measurement."
    assert seen == [("/page", f"pinned.example:{port}")]


def test_a_host_whose_first_address_refuses_is_reached_at_its_next() -> None:
    names = {"two.example": ["127.0.0.2", "127.0.0.1"]}  # nothing listens on 127.0.0.2
    seen: list[tuple[str, str]] = []
    with serve({"/page": PAGE}, seen) as base:
        port = base.rsplit(":", 1)[1]
        policy = FetchPolicy(allow_private=True, resolver=lambda host, _: names[host], timeout=2.0)
        page = fetch_url(f"http://two.example:{port}/page", policy)
    assert page.status == 200 and seen == [("/page", f"two.example:{port}")]


# Proxies: only one configured for Petri is used, and it does not lift the address check.

PROXIED = (200, {"Content-Type": "text/plain"}, b"Served by the proxy, which resolved the name.", 0.0)


def unresolvable(host: str, port: int) -> list[str]:
    raise Unresolved(f"cannot resolve host {host!r}: Name or service not known", "check the URL")


def test_a_proxy_named_by_the_environment_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY would send the request to a proxy that resolves the name itself, around the pinned
    connection; Petri's fetcher connects directly instead (and says so when it cannot connect)."""
    via_proxy: list[tuple[str, str]] = []
    direct: list[tuple[str, str]] = []
    with serve({}, via_proxy) as proxy, serve({"/page": PAGE}, direct) as base:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        page = fetch_url(f"{base}/page", FetchPolicy(allow_private=True, timeout=2.0))
    assert page.text == "The figure is 42, by the second measurement."
    assert via_proxy == [] and direct == [("/page", base.removeprefix("http://"))]


def test_a_configured_proxy_fetches_a_name_only_it_can_resolve() -> None:
    seen: list[tuple[str, str]] = []
    with serve({"http://far.example/page": PROXIED}, seen) as proxy:
        policy = FetchPolicy(proxy=proxy, resolver=unresolvable, timeout=2.0)
        page = fetch_url("http://far.example/page", policy)
    assert page.text == "Served by the proxy, which resolved the name."
    assert seen == [("http://far.example/page", "far.example")]  # the absolute form a proxy receives


@pytest.mark.parametrize("url", [u for u in REFUSED if u.startswith("http")])
def test_through_a_proxy_every_address_this_machine_can_judge_is_still_refused(url: str) -> None:
    seen: list[tuple[str, str]] = []
    with serve({}, seen) as proxy, pytest.raises(Rejected, match=r"private or reserved|loopback"):
        fetch_url(url, FetchPolicy(proxy=proxy, resolver=resolver, timeout=2.0))
    assert seen == []


def test_a_host_that_cannot_be_reached_names_the_environment_proxy_petri_ignores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (*ENV_PROXIES, *(n.lower() for n in ENV_PROXIES)):
        monkeypatch.delenv(name, raising=False)  # whatever the machine running the tests sets
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.example:3128")
    hint = r"HTTPS_PROXY is set, but Petri does not fetch through a proxy from the environment: set PETRI_FETCH_PROXY"
    with pytest.raises(Rejected, match=r"cannot resolve host 'far\.example'.*" + hint):
        fetch_url("https://far.example/", FetchPolicy(resolver=unresolvable, timeout=2.0))
    with serve({}) as base:
        closed = base  # nothing listens there once the server is shut down
    with pytest.raises(Rejected, match=r"ConnectError.*" + hint):
        fetch_url(f"{closed}/page", FetchPolicy(allow_private=True, timeout=2.0))
    monkeypatch.delenv("HTTPS_PROXY")
    with pytest.raises(Rejected) as err:
        fetch_url("https://far.example/", FetchPolicy(resolver=unresolvable, timeout=2.0))
    assert "PROXY" not in str(err.value)  # no proxy in the environment: no note


def test_the_proxy_comes_from_petri_fetch_proxy_or_the_dish_config(tmp_path: Path) -> None:
    assert FetchPolicy.from_env({"PETRI_FETCH_PROXY": " http://proxy.example:3128 "}).proxy == (
        "http://proxy.example:3128"
    )
    assert FetchPolicy.from_env({"HTTPS_PROXY": "http://proxy.example:3128"}).proxy is None
    svc = Service(tmp_path / ".petri")
    svc.dish.mkdir(parents=True, exist_ok=True)
    (svc.dish / "config.json").write_text(json.dumps({"fetch": {"proxy": "http://proxy.example:8080"}}))
    assert svc.fetch_policy().proxy == "http://proxy.example:8080"


@pytest.mark.parametrize(
    "proxy", ["socks5://user:s3cret@proxy.example:1080", "proxy.example:3128", "http://"]
)
def test_a_proxy_that_is_not_an_http_url_is_refused_without_echoing_its_password(proxy: str) -> None:
    with pytest.raises(Rejected, match=r"the fetch proxy .* is not an http:// or https:// URL") as err:
        fetch_url("http://far.example/", FetchPolicy(proxy=proxy, resolver=unresolvable, timeout=2.0))
    assert "s3cret" not in str(err.value) and "PETRI_FETCH_PROXY" in str(err.value)
