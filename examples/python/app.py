#!/usr/bin/env python3
"""A plain asyncio HTTP service (standard library and loopfleet's Python package) that runs
under `loopfleet run`, under systemd, or alone.

loopfleet.Worker gives it a worker's life: the inherited listening sockets (LISTEN_FDS),
READY=1 once serving, WATCHDOG=1 and the heartbeat region beaten from the event loop (a
blocked loop is caught and its Python stack named), counters for `loopfleet status`, and on
SIGTERM a drain: stop accepting, finish requests in flight, answer a last request on idle
keep-alive connections with "Connection: close", close them, exit 0.

    loopfleet run --workers auto --listen 127.0.0.1:8080 -- python3 examples/python/app.py
    PYTHONPATH=python python3 examples/python/app.py --listen 127.0.0.1:8080   # alone
"""
import argparse
import asyncio
import os
import sys
import time

import loopfleet

IDLE_TIMEOUT = 60.0


class App:
    def __init__(self, worker):
        self.worker = worker

    async def respond(self, method, target):
        path, _, query = target.partition("?")
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        if path == "/":
            return 200, "Hello, World!"
        if path == "/healthz":
            return 200, "ok\n"
        if path == "/slow":
            ms = int(params.get("ms", "1000"))
            print(f"slow request started ms={ms}", flush=True)
            await asyncio.sleep(ms / 1000)
            return 200, f"slept {ms} ms\n"
        if path == "/block":
            ms = int(params.get("ms", "1000"))
            print(f"blocking the loop for {ms} ms", flush=True)
            block_the_loop(ms)
            return 200, f"blocked {ms} ms\n"
        if path == "/pid":
            return 200, f"{os.getpid()}\n"
        return 404, "Not Found\n"

    async def handle(self, reader, writer):
        try:
            while True:
                try:
                    with self.worker.idle(writer):
                        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                        ConnectionError):
                    return
                with self.worker.request():
                    lines = head.decode("latin-1").split("\r\n")
                    method, target, version = lines[0].split(" ", 2)
                    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
                    length = int(headers.get("content-length", "0"))
                    if length:
                        await reader.readexactly(length)
                    status, body = await self.respond(method, target)
                    close = self.worker.draining or headers.get("connection", "").lower() == "close"
                    reason = {200: "OK", 404: "Not Found"}.get(status, "")
                    data = body.encode()
                    writer.write(f"HTTP/1.1 {status} {reason}\r\nServer: python-asyncio\r\n"
                                 f"Content-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
                                 f"{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n".encode()
                                 + (b"" if method == "HEAD" else data))
                    await writer.drain()
                if close:
                    return
        except (ConnectionError, ValueError):
            return


def block_the_loop(ms):
    """Blocks the event loop on purpose (for the watchdog demo): a synchronous sleep."""
    time.sleep(ms / 1000)


async def main(args):
    worker = loopfleet.Worker(listen=args.listen or ["127.0.0.1:8080"])
    app = App(worker)
    await worker.start_server(app.handle, limit=16384)
    names = ", ".join(str(s.getsockname()) for s in worker.sockets())
    print(f"python worker {os.getpid()} serving on {names}", file=sys.stderr, flush=True)
    worker.ready(f"serving on {names}")
    await worker.serve(drain_timeout=args.drain_timeout)
    print(f"python worker {os.getpid()} drained after {worker.requests} requests", file=sys.stderr, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="asyncio hello service for loopfleet")
    parser.add_argument("--listen", action="append", help="HOST:PORT when run without inherited sockets")
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))
