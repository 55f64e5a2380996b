"""A small threaded HTTP server on 127.0.0.1 for tests: routes → (status, headers, body, delay)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = tuple[int, dict[str, str], bytes, float]


@contextmanager
def serve(routes: dict[str, Route], seen: list[tuple[str, str]] | None = None) -> Iterator[str]:
    """Serve `routes`; `seen`, if given, gets each request's (path, Host header)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if seen is not None:
                seen.append((path, self.headers.get("Host", "")))
            status, headers, body, delay = routes.get(path, (404, {}, b"not found", 0.0))
            if delay:
                time.sleep(delay)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with suppress(OSError):
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # shutdown() waits for the loop's next poll: at the default 0.5 s every test would pay that.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
