"""The base of the forge and Drone doubles: a real HTTP/1.1 server on loopback.

A subclass routes each request in ``handle(method, path, query, headers, body)`` and
returns ``(status, json_body_or_None)``. The base gives every double the same knobs:

    double.start() / double.stop()   listen / stop (the port is kept across a restart)
    double.down() / double.up()      the same, for tests that cut a service off
    double.fail_next(n, status=503)  the next n requests answer ``status``
    double.exchanges                 every request and answer, in order (Exchange)

The port is chosen by the kernel at the first start and kept afterwards, so a client
configured with ``base_url`` reaches the double again after ``up()``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Exchange:
    """One request received and the answer given."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    answer: Any = None
    #: answered by ``fail_next``, not by the double's model of the service
    forced: bool = False
    query_list: list[tuple[str, str]] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class LoopbackServer:
    """The listening part of every HTTP double (this base, the Keycloak double, the alert
    receiver): a server on loopback in a daemon thread, restartable on the port the kernel
    chose first. A user keeps ``host``, ``port``, ``lock`` and ``_connections`` (the open
    sockets its request handler registers, cut by :meth:`_close`)."""

    host = "127.0.0.1"
    port = 0
    lock: threading.RLock
    _connections: set[socket.socket]
    _server: _Server | None = None
    _thread: threading.Thread | None = None

    def _listen(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        if self._server is not None:
            return
        self._server = _Server((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{name}-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def _close(self) -> None:
        """Stop listening and cut open connections: clients see refused/reset."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self.lock:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._connections.clear()
        self._server = None
        if self._thread:
            self._thread.join(timeout=5)
        self._thread = None


class LoopbackDouble(LoopbackServer):
    """Subclasses implement :meth:`handle`; see the module docstring."""

    name = "double"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self.lock = threading.RLock()
        self.exchanges: list[Exchange] = []
        self._fail: list[tuple[int, str]] = []
        self._connections: set[socket.socket] = set()

    # -- the knobs ------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fail_next(self, n: int, status: int = 503, match: str = "") -> None:
        """The next ``n`` requests whose ``"METHOD /path"`` contains ``match`` answer ``status``."""
        with self.lock:
            self._fail.extend([(status, match)] * n)

    def requests_to(self, method: str, path_part: str) -> list[Exchange]:
        """The exchanges whose method is ``method`` and whose path contains ``path_part``."""
        with self.lock:
            return [e for e in self.exchanges if e.method == method and path_part in e.path]

    # -- what a subclass writes -----------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        raise NotImplementedError

    def after(self, exchange: Exchange) -> None:
        """Called with each finished exchange (the forge double validates it here)."""

    # -- the server -----------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with double.lock:
                    double._connections.add(self.connection)

            def finish(self) -> None:
                with contextlib.suppress(OSError):
                    super().finish()
                with double.lock:
                    double._connections.discard(self.connection)

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                pairs = parse_qsl(split.query, keep_blank_values=True)
                first: dict[str, str] = {}
                for key, value in pairs:  # the first value of a repeated key, as Go's FormValue
                    first.setdefault(key, value)
                exchange = Exchange(
                    self.command,
                    split.path,
                    first,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    query_list=pairs,
                )
                forced = None
                with double.lock:
                    for i, (_status, match) in enumerate(double._fail):
                        if match in f"{self.command} {split.path}":
                            forced = double._fail.pop(i)[0]
                            break
                if forced is not None:
                    status, answer = forced, {"message": f"{double.name} told to fail"}
                    exchange.forced = True
                else:
                    try:
                        status, answer = double.handle(
                            exchange.method, exchange.path, exchange.query, exchange.headers, body
                        )
                    except Exception as exc:  # a bug in the double: answer 500, say it
                        status, answer = 500, {"message": f"{double.name} bug: {exc!r}"}
                exchange.status, exchange.answer = status, answer
                with double.lock:
                    double.exchanges.append(exchange)
                double.after(exchange)
                data = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                if answer is not None:
                    self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        return Handler

    def start(self):
        self._listen(self._handler(), self.name)
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections: clients see refused/reset."""
        self._close()

    up = start
    down = stop

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
