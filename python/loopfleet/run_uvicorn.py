"""`python3 -m loopfleet uvicorn MODULE:APP [uvicorn options]`: an unchanged ASGI app
(FastAPI, Starlette, ...) on uvicorn, on the sockets `loopfleet run` passes.

Written against uvicorn 0.17 (Debian 12). What it changes in uvicorn, and why:
- READY=1 is sent once the app's lifespan startup has finished and the sockets serve, so a
  slow startup gets no traffic and `--ready started` is not needed.
- uvicorn's shutdown closes idle keep-alive connections at once, which fails the request a
  client is sending on one right then (every keep-alive client of a reload sees it). The
  protocol class is wrapped so an idle connection may send one more request for
  DRAIN_IDLE_TIMEOUT, answered with `Connection: close`.
- A startup that fails exits with one line naming the reason, not a traceback.
"""
import asyncio
import functools
import importlib
import sys

import uvicorn
from uvicorn.importer import ImportFromStringError, import_from_string

from .life import (DRAIN_IDLE_TIMEOUT, ClusterDrain, Life, cluster_in_use, describe, drain_timeout_reached, fail,
                   inherited_sockets, stop_accepting, unread, where)

CLOSE = (b"connection", b"close")


DRAIN_TIMEOUT = 30.0  # as a C++ worker's --drain-timeout


def main(argv):
    # --drain-timeout is ours (uvicorn 0.17 has no limit on its drain); the rest is uvicorn's
    # own command line, which parses the options (same names, defaults and errors) and ends
    # in run(), where we take over.
    drain_timeout = DRAIN_TIMEOUT
    if "--drain-timeout" in argv:
        at = argv.index("--drain-timeout")
        try:
            drain_timeout = float(argv[at + 1])
        except (IndexError, ValueError):
            fail("--drain-timeout takes seconds, e.g. --drain-timeout 30")
        del argv[at:at + 2]
    cli = importlib.import_module("uvicorn.main")  # the module: the package's `main` is the command
    cli.run = lambda app, **kwargs: serve(app, drain_timeout, **kwargs)
    cli.main.main(args=argv, prog_name="python3 -m loopfleet uvicorn")


def load(spec, factory):
    try:
        app = import_from_string(spec)
    except ImportFromStringError as e:
        fail(f"cannot load the ASGI app {spec!r}: {e} (run from the app's folder, or pass --app-dir)")
    except Exception as e:  # the module itself raised while importing
        fail(f"cannot load the ASGI app {spec!r}: {type(e).__name__}: {e}{where(e)}")
    if factory:
        try:
            app = app()
        except Exception as e:
            fail(f"the app factory {spec!r} raised {type(e).__name__}: {e}{where(e)}")
    return app


def draining(protocol_class):
    """`protocol_class` (uvicorn's H11Protocol or HttpToolsProtocol) with a gentle shutdown."""

    class Draining(protocol_class):
        _draining = False
        _heard = False  # bytes arrived during the drain (a request may be half read)

        def connection_made(self, transport):
            super().connection_made(transport)
            # Accepted just before the listeners closed, made after the drain began.
            if getattr(self.server_state, "draining", False):
                self.shutdown()

        def shutdown(self):
            if self._draining:
                return
            self._draining = True
            if self.cycle is not None and not self.cycle.response_complete:
                close_after(self.cycle)
            else:
                self.loop.call_later(DRAIN_IDLE_TIMEOUT, self._close_if_idle)

        def _close_if_idle(self):
            # A connection that heard from its client since is either answering that request
            # (and closes after it) or reading it: not idle.
            if not self._heard and (self.cycle is None or self.cycle.response_complete) and not unread(self.transport):
                protocol_class.shutdown(self)  # idle: uvicorn's own shutdown closes it

        def data_received(self, data):
            if self._draining:
                self._heard = True
            super().data_received(data)
            # Both protocols start a request's cycle while parsing: the one that arrived on a
            # draining connection is its last.
            if self._draining and self.cycle is not None and not self.cycle.response_complete:
                close_after(self.cycle)

    Draining.__name__ = Draining.__qualname__ = "Draining" + protocol_class.__name__
    return Draining


def close_after(cycle):
    cycle.keep_alive = False
    if not cycle.response_started and CLOSE not in cycle.default_headers:
        # Both protocols send `Connection: close` when the response's headers carry it.
        cycle.default_headers = cycle.default_headers + [CLOSE]


class Server(uvicorn.Server):
    def __init__(self, config, life, drain_timeout):
        super().__init__(config)
        self.life = life
        self.drain_timeout = drain_timeout
        self.failure = None

    async def startup(self, sockets=None):
        self.life.start()
        await super().startup(sockets=sockets)
        if self.should_exit:
            self.failure = getattr(self.lifespan, "failure", None) or "the app's lifespan startup failed"
            return
        listeners = sockets or [s for server in self.servers for s in server.sockets]
        # uvicorn's own factory, rebuilt as its startup builds it, for handed-over connections.
        factory = functools.partial(self.config.http_protocol_class, config=self.config,
                                    server_state=self.server_state)
        if cluster := cluster_in_use():
            cluster.start()  # calls served and jobs fetched from READY on, as in a C++ worker
        self.life.ready(f"serving on {describe(listeners)}", factories=[factory] * len(listeners))

    async def shutdown(self, sockets=None):
        # Stop accepting and tell every connection before STOPPING=1, so a request sent after
        # it is surely answered as the last one (uvicorn does both again, harmlessly).
        cluster = ClusterDrain()
        await stop_accepting(self.servers)
        self.server_state.draining = True
        for connection in list(self.server_state.connections):
            connection.shutdown()
        await self.life.stopping()
        asyncio.get_running_loop().call_later(self.drain_timeout, self.drain_timed_out)
        await super().shutdown(sockets=sockets)
        await cluster.finish()  # before the lifespan shutdown: a job may use what startup made

    def drain_timed_out(self):
        if not self.server_state.connections and not self.server_state.tasks:
            return
        drain_timeout_reached()
        for connection in list(self.server_state.connections):
            connection.transport.close()
        self.force_exit = True  # uvicorn's own wait for connections and tasks ends here


def watched_lifespan(base):
    """uvicorn's lifespan class, keeping why startup failed (to say it in one line)."""

    class Watched(base):
        failure = None

        async def send(self, message):
            if message["type"] == "lifespan.startup.failed":
                text = message.get("message") or ""
                last = text.strip().splitlines()[-1] if text.strip() else "no reason given"
                self.failure = f"the app's startup failed: {last}{where(text)}"
                message = {"type": message["type"]}  # uvicorn would log the whole traceback
            await super().send(message)

    return Watched


def serve(app, drain_timeout, **kwargs):
    app_dir = kwargs.pop("app_dir", None)
    if app_dir is not None:
        sys.path.insert(0, app_dir)
    if kwargs.get("reload") or (kwargs.get("workers") or 1) > 1:
        fail("--reload and --workers are loopfleet's job under `loopfleet run` (--workers N, "
             "`loopfleet reload`): drop them")
    factory = kwargs.pop("factory", False)
    config = uvicorn.Config(load(app, factory), **kwargs)
    config.load()
    config.http_protocol_class = draining(config.http_protocol_class)
    if hasattr(config.lifespan_class, "send"):
        config.lifespan_class = watched_lifespan(config.lifespan_class)
    server = Server(config, Life(sample=lambda: (len(server.server_state.connections),
                                                 len(server.server_state.tasks),
                                                 server.server_state.total_requests)), drain_timeout)
    sockets = inherited_sockets()
    config.setup_event_loop()
    asyncio.run(server.serve(sockets=sockets or None))
    if server.failure:
        fail(server.failure)
    if not server.started:
        fail("uvicorn did not start (see its log above)")
