"""A loopback HTTP server for tests: serves files and injects faults (127.0.0.1, port 0, bounded).

    with FaultServer(directory=shared_dir, routes={"/a.gz": [Reply(status=500), Reply(body=data)]}) as srv:
        requests.get(srv.url + "a.gz")     # 500 first, then the file
        srv.hits["/a.gz"]                   # 2

A route is one :class:`Reply` (given to every request) or a list of them (one per request, the last
repeated). Paths without a route are served from ``directory`` (404 if absent). Every stall and drip
ends when the server closes, so a test can never hang on it for longer than ``max_hold`` seconds.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Reply:
    """One response, possibly broken on purpose."""

    body: bytes = b""
    status: int = 200
    headers: dict = field(default_factory=dict)
    content_length: bool = True  # announce len(body) (the whole body, even if less is sent)
    send: int | None = None  # send only the first N bytes of the body, then do `then`
    then: str = "close"  # after `send` bytes: "close" (clean end), "reset" (TCP RST) or "stall" (hold it open)
    drip: float = 0.0  # seconds between single bytes (a server too slow to finish)
    delay: float = 0.0  # seconds to wait before answering (lets concurrent clients overlap)
    reason: str | None = None  # the reason phrase of the status line (default: the standard one)
    slow_head: str | None = None  # "status": drip the status line and headers; "headers": only the headers
    head_drip: float = 0.1  # seconds between single bytes of a slow head
    continues: bool = False  # answer with "100 Continue" responses, one every 0.05 s, and never more


class FaultServer:
    """A threaded HTTP server on 127.0.0.1 with scripted replies; a context manager."""

    def __init__(self, routes: dict | None = None, directory: Path | None = None, max_hold: float = 30.0):
        self.routes = dict(routes or {})
        self.directory = Path(directory) if directory else None
        self.max_hold = max_hold
        self.hits: Counter = Counter()  # path -> requests received
        self.user_agents: list[str] = []
        self.bytes_sent = 0
        self.released = threading.Event()  # set on close: every stall and drip stops
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _reply_for(self, path: str) -> Reply:
        with self._lock:
            n = self.hits[path]
            self.hits[path] += 1
        route = self.routes.get(path)
        if isinstance(route, list):
            return route[min(n, len(route) - 1)]
        if route is not None:
            return route
        file = self.directory / path.lstrip("/") if self.directory else None
        if file is not None and file.is_file():
            return Reply(body=file.read_bytes(), headers={"Content-Type": "application/octet-stream"})
        return Reply(status=404, body=b"<html><body>Not Found</body></html>", headers={"Content-Type": "text/html"})

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                server.user_agents.append(self.headers.get("User-Agent", ""))
                reply = server._reply_for(self.path.split("?")[0])
                if reply.delay:
                    server.released.wait(min(reply.delay, server.max_hold))
                self.close_connection = True
                try:
                    if reply.continues:
                        self._continue_forever()
                        return
                    if reply.slow_head:
                        self._slow_head(reply)
                    else:
                        self.send_response(reply.status, reply.reason)
                        for name, value in reply.headers.items():
                            self.send_header(name, value)
                        if reply.content_length:
                            self.send_header("Content-Length", str(len(reply.body)))
                        self.send_header("Connection", "close")
                        self.end_headers()
                except OSError:
                    return
                body = reply.body if reply.send is None else reply.body[: reply.send]
                try:
                    self._send(body, reply.drip)
                    if reply.send is not None:
                        self._finish_broken(reply.then)
                except OSError:  # the client went away: fine, that is what many tests do
                    pass

            def _continue_forever(self) -> None:
                deadline = time.monotonic() + server.max_hold
                while not server.released.wait(0.05) and time.monotonic() < deadline:
                    self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    self.wfile.flush()

            def _slow_head(self, reply: Reply) -> None:
                status = f"HTTP/1.1 {reply.status} {reply.reason or self.responses[reply.status][0]}\r\n"
                headers = {**reply.headers, "Connection": "close"}
                if reply.content_length:
                    headers["Content-Length"] = str(len(reply.body))
                head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                if reply.slow_head == "status":
                    status, head = "", status + head
                self.wfile.write(status.encode("latin-1"))
                self.wfile.flush()
                self._send(head.encode("latin-1"), reply.head_drip)

            def _send(self, body: bytes, drip: float) -> None:
                if not drip:
                    self.wfile.write(body)
                    server.bytes_sent += len(body)
                    return
                deadline = time.monotonic() + server.max_hold
                for i in range(len(body)):
                    if server.released.wait(drip) or time.monotonic() > deadline:
                        return
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    server.bytes_sent += 1

            def _finish_broken(self, then: str) -> None:
                self.wfile.flush()
                if then == "stall":
                    server.released.wait(server.max_hold)
                elif then == "reset":  # SO_LINGER 0, then close at once: RST instead of FIN
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.wfile.close()
                    self.rfile.close()
                    self.connection.close()
                    self.wfile = self.rfile = io.BytesIO()  # what http.server flushes and closes afterwards

        return Handler
