"""loopfleet for Python: run asyncio apps as loopfleet workers.

Under `loopfleet run` this package is on the workers' PYTHONPATH (the supervisor puts it
there); elsewhere add loopfleet's `python/` folder to PYTHONPATH. Standard library only;
the launchers import uvicorn or aiohttp when asked to run them.

Unchanged apps, on the sockets the supervisor passes:

    loopfleet run --workers 2 -- python3 -m loopfleet uvicorn shop:app     # ASGI: FastAPI, ...
    loopfleet run --workers 2 -- python3 -m loopfleet aiohttp shop:app     # aiohttp.web

A plain asyncio server uses `Worker` (examples/python/app.py is a complete one):

    async def main():
        worker = loopfleet.Worker()
        await worker.start_server(handle)       # like asyncio.start_server, on every socket
        worker.ready()                          # READY=1: traffic may come
        await worker.serve()                    # until SIGTERM, then drain

    async def handle(reader, writer):
        while True:
            with worker.idle(writer):           # a drain may close the connection here
                head = await reader.readuntil(b"\\r\\n\\r\\n")
            with worker.request():              # counted: in flight, then served
                ...                             # answer with Connection: close if worker.draining

Every launcher and `Worker` gives the guarantees of a C++ worker: READY only after the app's
startup, WATCHDOG=1 and the heartbeat region beaten from the event loop (so a blocked loop is
caught, steered around, named with its Python stack and replaced), counters for `loopfleet
status` and --max-requests, and a drain on SIGTERM that fails no request.
"""
import asyncio
import contextlib

from .life import (DRAIN_IDLE_TIMEOUT, ClusterDrain, Life, bound_sockets, cluster_in_use, describe,
                   drain_timeout_reached, inherited_sockets, stop_accepting, stop_requested, unread)

__all__ = ["Worker", "inherited_sockets"]


class Worker:
    """One worker's life for a plain asyncio server.

    `listen`: addresses (HOST:PORT, unix:PATH) to bind when no sockets are inherited, that is
    when run alone; `drain_idle_timeout`: how long a drain lets an idle connection send one
    more request.
    """

    def __init__(self, listen=("127.0.0.1:8080",), drain_idle_timeout=DRAIN_IDLE_TIMEOUT):
        self.in_flight = 0    # requests being handled now
        self.requests = 0     # served since start
        self.draining = False
        self._listen = list(listen)
        self._drain_idle_timeout = drain_idle_timeout
        self._idle_closed = False  # the drain has closed the idle connections
        self._idle = set()
        self._writers = set()
        self._heard = set()  # connections that received bytes during the drain
        self._servers = []
        self._factories = []  # per listener, for connections the supervisor hands over
        self._life = Life(sample=lambda: (self.connections, self.in_flight, self.requests))
        self._started = False

    async def start_server(self, client_connected_cb, **kwargs):
        """asyncio.start_server on every inherited socket (or the `listen` addresses); call it
        once. Each connection is counted, and its writer closed when the callback returns."""
        if not self._started:
            self._life.start()
            self._started = True
        socks = inherited_sockets() or bound_sockets(self._listen)

        async def tracked(reader, writer):
            self._writers.add(writer)
            feed = reader.feed_data

            def heard(data):
                # Bytes that arrive take the connection out of the idle ones at once: the app
                # leaves its idle() block only when its task runs again, maybe after the drain
                # has closed the idle connections.
                if self.draining:
                    self._heard.add(writer)
                feed(data)

            reader.feed_data = heard
            try:
                await client_connected_cb(reader, writer)
            finally:
                self._writers.discard(writer)
                self._idle.discard(writer)
                self._heard.discard(writer)
                writer.close()

        for sock in socks:
            self._servers.append(await asyncio.start_server(tracked, sock=sock, **kwargs))

        def protocol():  # what asyncio.start_server makes per connection, for handed-over ones
            reader = asyncio.StreamReader(limit=kwargs.get("limit", 2 ** 16))
            return asyncio.StreamReaderProtocol(reader, tracked)
        self._factories += [protocol] * len(socks)
        return self._servers

    @property
    def connections(self):
        """Connections open now."""
        return len(self._writers)

    def sockets(self):
        return [s for server in self._servers for s in server.sockets]

    def ready(self, status=None):
        """READY=1: call it when the app can serve; the supervisor sends traffic from then.
        A worker in a cluster that imported loopfleet.cluster starts its client here."""
        if cluster := cluster_in_use():
            cluster.start()
        self._life.ready(status or f"serving on {describe(self.sockets())}", factories=self._factories)

    @contextlib.contextmanager
    def idle(self, writer):
        """Marks the connection as waiting for its next request: a drain may close it."""
        if self._idle_closed:
            writer.close()
        self._idle.add(writer)
        try:
            yield
        finally:
            self._idle.discard(writer)

    @contextlib.contextmanager
    def request(self):
        """Counts one request: in flight inside, served after."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self.requests += 1

    async def serve(self, drain_timeout=30.0):
        """Serves until SIGTERM or SIGINT, then drains: STOPPING=1, stop accepting, close
        idle connections after `drain_idle_timeout`, wait up to `drain_timeout` for the rest."""
        await stop_requested()
        cluster = ClusterDrain()
        self.draining = True
        await stop_accepting(self._servers)
        await self._life.stopping()
        loop = asyncio.get_running_loop()
        loop.call_later(self._drain_idle_timeout, self._close_idle)
        deadline = loop.time() + drain_timeout
        while self._writers and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self._writers:
            drain_timeout_reached()
            for writer in list(self._writers):
                writer.close()
        await cluster.finish()

    def _close_idle(self):
        self._idle_closed = True
        for writer in self._idle - self._heard:
            if not unread(writer.transport):
                writer.close()
