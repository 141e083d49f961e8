"""A fault-injecting TCP proxy for the tests: between the archiver and nx-27017, on loopback.

    with FaultProxy(upstream_port) as proxy:
        uri = proxy.uri
        proxy.cut_all()              # every open connection closed now
        proxy.refuse_for(10)         # new connections refused (closed at once) for 10 s
        proxy.latency = 0.05         # each forwarded chunk delayed by 50 ms
        proxy.cut_after_bytes = 4096 # each new connection dies after that many bytes upstream
        proxy.cut_after_reply_bytes = 600_000  # ... or after that many bytes of replies (counted in cuts)
        proxy.holding = True         # a hung server: connections stay open, nothing is forwarded

It runs its own asyncio loop in a daemon thread and only ever connects to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from typing import Any


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.latency = 0.0
        self.cut_after_bytes: int | None = None
        self.cut_after_reply_bytes: int | None = None
        self.refuse_until = 0.0
        # With a byte budget: the connection that spends it takes MongoDB away for this long, at
        # that very reply (every connection cut, new ones refused): an outage that meets the one
        # read large enough to cross the budget, whatever the small commands around it do.
        self.away_after_cut_s = 0.0
        self.holding = False
        self.held = 0  # messages held right now (holding): a sentinel that a client is waiting
        self.cuts = 0
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._closings = 0  # _close_all's runs: a connection accepted before one is cut by it
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    @property
    def uri(self) -> str:
        # directConnection: a replica set's member names its own address in hello's hosts, and a
        # client that discovers the set would leave the proxy for it (no fault would reach it).
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    # -- controls (thread-safe) ------------------------------------------------------------

    def cut_all(self) -> None:
        """Close every open connection, both ways, now."""
        self._call(self._close_all)
        self.cuts += 1

    def refuse_for(self, seconds: float) -> None:
        """Close open connections and refuse new ones for ``seconds``."""
        self.refuse_until = time.monotonic() + seconds
        self.cut_all()

    def _call(self, func: Any) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                func()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    def _close_all(self) -> None:
        self._closings += 1
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            self._close_all()
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        )
        self._ready.set()
        self._loop.run_forever()
        # Let the forwarding tasks cancelled by the shutdown finish before the loop closes.
        pending = [task for task in asyncio.all_tasks(self._loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    # -- forwarding --------------------------------------------------------------------------

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.refuse_until:
            client_writer.transport.abort()
            return
        closings = self._closings
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        if self._closings != closings:  # cut while it was opening: a cut closes every connection
            client_writer.transport.abort()
            upstream_writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((client_writer, upstream_writer))
        budget = [self.cut_after_bytes]
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer, budget, (client_writer, upstream_writer)),
            self._pipe(
                upstream_reader, client_writer, [self.cut_after_reply_bytes], (client_writer, upstream_writer)
            ),
            return_exceptions=True,
        )

    def _budget_spent(self) -> None:
        """A connection cut at its byte budget; with ``away_after_cut_s``, MongoDB away then."""
        self.cuts += 1
        if self.away_after_cut_s:
            self.refuse_until = time.monotonic() + self.away_after_cut_s
            self.cut_after_bytes = self.cut_after_reply_bytes = None
            self._close_all()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        budget: list[int | None],
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.latency:
                    await asyncio.sleep(self.latency)
                if self.holding:  # accepted, never answered: what a hung server does
                    self.held += 1
                    try:
                        while self.holding:
                            await asyncio.sleep(0.05)
                    finally:
                        self.held -= 1
                if budget[0] is not None:
                    if len(data) >= budget[0]:
                        writer.write(data[: budget[0]])
                        self._budget_spent()
                        break
                    budget[0] -= len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            for end in pair:
                with contextlib.suppress(Exception):
                    end.transport.abort()
                self._writers.discard(end)
