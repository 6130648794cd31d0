"""`python3 -m loopfleet aiohttp MODULE:APP`: an unchanged aiohttp.web.Application (or a
function returning one, possibly async) on the sockets `loopfleet run` passes.

Written against aiohttp 3.8 (Debian 12). aiohttp's own shutdown (AppRunner.cleanup) cancels
the requests in flight and closes idle keep-alive connections at once; a reload would fail
both. This drain instead stops accepting, lets requests in flight finish, lets an idle
connection send one more request for DRAIN_IDLE_TIMEOUT (answered, like those in flight,
with `Connection: close`), and only then runs the app's on_shutdown and on_cleanup.
"""
import argparse
import asyncio
import importlib
import inspect
import sys
import time

from aiohttp import hdrs, web

from .life import (DRAIN_IDLE_TIMEOUT, ClusterDrain, Life, bound_sockets, cluster_in_use, describe,
                   drain_timeout_reached, fail, inherited_sockets, stop_accepting, stop_requested, unread, where)


def main(argv):
    parser = argparse.ArgumentParser(prog="python3 -m loopfleet aiohttp",
                                     description="runs an aiohttp.web.Application as a loopfleet worker")
    parser.add_argument("app", metavar="MODULE:APP", help="an Application, or a function returning one")
    parser.add_argument("--listen", action="append", default=[],
                        help="HOST:PORT or unix:PATH when run without inherited sockets (default 127.0.0.1:8080)")
    parser.add_argument("--app-dir", default=".", help="the folder to import MODULE from (default .)")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="seconds a drain waits for requests in flight (default 30)")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.app_dir)
    asyncio.run(serve(args))


def find(spec):
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        fail(f"the app {spec!r} must be MODULE:APP, e.g. shop.web:app")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            fail(f"cannot load the app {spec!r}: {e}{where(e)}")
        fail(f"cannot load the app {spec!r}: no module named {module_name!r} "
             "(run from the app's folder, or pass --app-dir)")
    except Exception as e:
        fail(f"cannot load the app {spec!r}: {type(e).__name__}: {e}{where(e)}")
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            fail(f"cannot load the app {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


async def load(spec):
    obj = find(spec)
    if not isinstance(obj, web.Application) and callable(obj):
        try:
            obj = obj()
            if inspect.isawaitable(obj):
                obj = await obj
        except Exception as e:
            fail(f"the app factory {spec!r} raised {type(e).__name__}: {e}{where(e)}")
    if not isinstance(obj, web.Application):
        fail(f"{spec!r} is {type(obj).__name__}, not an aiohttp.web.Application (nor a function returning one)")
    return obj


def in_flight(handler):
    return handler._current_request is not None  # aiohttp 3.8: set while a handler runs


def idle(handler):
    # Waiting for the next request: the handler's task awaits its `_waiter` (aiohttp 3.8).
    # A request that arrived completes the waiter and queues the message before the task
    # runs again: that connection is not idle, closing it would lose the request.
    waiter = handler._waiter
    return waiter is not None and not waiter.done() and not handler._messages and not in_flight(handler)


async def serve(args):
    app = await load(args.app)
    draining = False

    async def last_response(request, response):
        if draining:
            response.force_close()  # aiohttp closes the connection after this response
            response.headers[hdrs.CONNECTION] = "close"  # the headers were made before this hook

    app.on_response_prepare.append(last_response)  # before setup: the app freezes there
    runner = web.AppRunner(app, handle_signals=False)

    def connections():
        return runner.server.connections if runner.server else []

    def sample():
        handlers = connections()
        busy = sum(map(in_flight, handlers))
        # requests_count counts requests as they start; the served ones are those not busy.
        return len(handlers), busy, (runner.server.requests_count - busy) if runner.server else 0

    # Adopted before the app's startup, so what that starts does not see LISTEN_FDS.
    socks = inherited_sockets() or bound_sockets(args.listen or ["127.0.0.1:8080"])
    life = Life(sample=sample)
    life.start()
    try:
        await runner.setup()  # runs on_startup and cleanup contexts
    except Exception as e:
        fail(f"the app's startup failed: {type(e).__name__}: {e}{where(e)}")
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(runner.server, sock=s, backlog=1024) for s in socks]
    if cluster := cluster_in_use():
        cluster.start()  # calls served and jobs fetched from READY on, as in a C++ worker
    life.ready(f"serving on {describe(socks)}", factories=[runner.server] * len(socks))

    await stop_requested()
    cluster = ClusterDrain()
    draining = True
    await stop_accepting(servers)
    await life.stopping()

    def close_idle():  # idle connections had their chance to send one more request
        for handler in connections():
            if idle(handler) and not unread(handler.transport):
                handler.close()

    loop.call_later(DRAIN_IDLE_TIMEOUT, close_idle)
    deadline = time.monotonic() + args.drain_timeout
    while connections() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if connections():
        drain_timeout_reached()
    await cluster.finish()  # the jobs in flight are done and acked
    await runner.shutdown()  # on_shutdown
    await runner.server.shutdown(0.1)  # what outlived the drain timeout
    await runner.cleanup()  # on_cleanup
