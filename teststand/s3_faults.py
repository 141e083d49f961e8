"""A local S3 for the tests, and an HTTP proxy in front of it that answers as S3 does when it
fails: on loopback only.

    with LocalS3() as s3, S3Faults(s3.port) as proxy:
        proxy.fail("GET", "/orders/livraison/year=", 503, "SlowDown", times=4)
        ...                                    # AWS_ENDPOINT_URL=proxy.endpoint

``LocalS3`` is moto's server (the real S3 API over HTTP); the proxy forwards every request to
it but those a rule matches (a method, a path prefix, the first ``times`` of them), which get
S3's own error answer (an ``<Error><Code>`` document and its status: AWS S3 API Reference,
"Error responses": 403 AccessDenied, 404 NoSuchBucket, 500 InternalError, 503 SlowDown) or,
with ``status=0``, a connection reset. ``requests`` counts what reached the proxy.
"""

from __future__ import annotations

import http.client
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

RESET = 0  # a rule's status: the connection reset, no answer (a network fault)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalS3:
    """moto's S3 server on a free loopback port, for as long as the ``with`` lasts."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalS3:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError("moto's S3 server did not start in 30 s") from None
                time.sleep(0.2)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.kill()
            self._server.wait(10)

    def reset(self) -> None:
        """Every bucket and object gone (moto's ``/moto-api/reset``): one server serves many
        tests, each starting from an empty S3 (the server takes seconds to start)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("POST", "/moto-api/reset")
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"moto's reset answered {answer.status}")
        finally:
            connection.close()


@dataclass
class Rule:
    method: str  # "*": any
    path_prefix: str  # of the decoded path (no query): "/bucket/key..."; "" matches every path
    status: int  # RESET: no answer
    code: str
    times: int  # how many more requests it answers

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.method in ("*", method) and path.startswith(self.path_prefix)


class S3Faults:
    """S3's error answers for the requests a rule matches, the rest forwarded to ``upstream_port``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str]] = []  # (method, path with its query)
        self.answered: list[tuple[str, str, int]] = []  # the faults given: method, path, status
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-faults", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(
        self, method: str, path_prefix: str, status: int, code: str = "", times: int = 1_000_000
    ) -> Rule:
        rule = Rule(method, path_prefix, status, code, times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def __enter__(self) -> S3Faults:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def _fault_for(self, method: str, target: str) -> Rule | None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(target).path)
        with self._lock:
            self.requests.append((method, target))
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.times -= 1
                    self.answered.append((method, path, rule.status))
                    return rule
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (_Handler,), {"proxy": self})


class _Handler(BaseHTTPRequestHandler):
    """One request: S3's error answer when a rule matches, else forwarded to moto."""

    proxy: S3Faults  # set by the proxy's subclass
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # the trailers
                pass
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self) -> None:
        body = self._body()
        rule = self.proxy._fault_for(self.command, self.path)
        if rule is not None and rule.status == RESET:
            # SO_LINGER 0: the close sends a RST, as a reset connection does.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if rule is not None:
            error = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                f"<Error><Code>{rule.code}</Code><Message>{rule.code} (injected by the test)"
                "</Message><RequestId>TEST</RequestId></Error>"
            ).encode()
            self._reply(rule.status, [("Content-Type", "application/xml")], error)
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.proxy.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            # A HEAD's Content-Length is the object's size (no body follows): kept.
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self._reply(response.status, kept, data, length)
        finally:
            upstream.close()

    def _reply(
        self, status: int, headers: list[tuple[str, str]], body: bytes, length: str | None = None
    ) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", length or str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer
