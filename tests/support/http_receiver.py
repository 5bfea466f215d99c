"""A real HTTP receiver on loopback that records what alert relays send it.

    with HttpReceiver() as rx:
        url = f"json://127.0.0.1:{rx.port}/hook"
        ...                      # rx.requests: every POST (path, headers, body)
        rx.status = 500          # answer 500 from now on
        rx.stop()                # down: the port refuses connections
        rx.start()               # back up, on the same port

The port is chosen by the kernel at the first start and kept across stop/start.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from support.loopback_http import LoopbackServer


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpReceiver(LoopbackServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self.status = 200
        self.reply = b'{"ok": true}'
        self.requests: list[Request] = []
        self.lock = threading.RLock()
        self._connections: set = set()  # not registered: stop() only stops listening

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver.lock:
                    receiver.requests.append(
                        Request(self.command, self.path, dict(self.headers.items()), body)
                    )
                    status, reply = receiver.status, receiver.reply
                if status >= 400:
                    reply = b'{"error": "receiver told to fail"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_POST = _record
            do_PUT = _record

            def log_message(self, format, *args):
                return

        return Handler

    @property
    def up(self) -> bool:
        return self._server is not None

    def start(self) -> HttpReceiver:
        self._listen(self._handler(), "http-receiver")
        return self

    def stop(self) -> None:
        self._close()

    def posts(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == "POST"]

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
