#!/usr/bin/env python3
"""A plain asyncio HTTP service (standard library only) that runs under `loopfleet run`,
under systemd, or alone.

It speaks systemd's protocol, which is all loopfleet asks of a worker in any language:
- LISTEN_FDS / LISTEN_PID: serve the listening sockets passed as fds 3, 4, ... ;
- NOTIFY_SOCKET: send READY=1 once serving, STOPPING=1 when draining, WATCHDOG=1 from the
  event loop every WATCHDOG_USEC / 2 (so a blocked loop stops the beats);
- SIGTERM: drain (stop accepting, finish requests in flight, answer a last request on idle
  keep-alive connections with "Connection: close", close them) and exit 0.

    loopfleet run --workers auto --listen 127.0.0.1:8080 -- python3 examples/python/app.py
    python3 examples/python/app.py --listen 127.0.0.1:8080          # alone
"""
import argparse
import asyncio
import os
import signal
import socket
import sys
import time

DRAIN_IDLE_TIMEOUT = 1.0  # an idle connection may send one more request during a drain
IDLE_TIMEOUT = 60.0


def notify(message):
    """Sends a state line to NOTIFY_SOCKET (sd_notify); a no-op when not supervised."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(message.encode(), path)
        except OSError:
            pass


def inherited_sockets():
    """The sockets passed by systemd's rules, or [] when none are meant for this process."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0"))
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)  # not for processes we start
    return [socket.socket(fileno=3 + i) for i in range(count)]


def bound_sockets(addresses):
    out = []
    for addr in addresses or ["127.0.0.1:8080"]:
        host, _, port = addr.rpartition(":")
        s = socket.create_server((host.strip("[]"), int(port)), reuse_port=False)
        out.append(s)
    return out


class App:
    def __init__(self):
        self.draining = False
        self.idle = set()     # writers of connections waiting for their next request
        self.busy = 0         # requests being handled
        self.connections = set()
        self.served = 0

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
        self.connections.add(writer)
        try:
            while True:
                self.idle.add(writer)
                try:
                    timeout = DRAIN_IDLE_TIMEOUT if self.draining else IDLE_TIMEOUT
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                        ConnectionError):
                    return
                finally:
                    self.idle.discard(writer)
                self.busy += 1
                try:
                    lines = head.decode("latin-1").split("\r\n")
                    method, target, version = lines[0].split(" ", 2)
                    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
                    length = int(headers.get("content-length", "0"))
                    if length:
                        await reader.readexactly(length)
                    status, body = await self.respond(method, target)
                    close = self.draining or headers.get("connection", "").lower() == "close"
                    reason = {200: "OK", 404: "Not Found"}.get(status, "")
                    data = body.encode()
                    writer.write(f"HTTP/1.1 {status} {reason}\r\nServer: python-asyncio\r\n"
                                 f"Content-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
                                 f"{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n".encode()
                                 + (b"" if method == "HEAD" else data))
                    await writer.drain()
                    self.served += 1
                finally:
                    self.busy -= 1
                if close:
                    return
        except (ConnectionError, ValueError):
            return
        finally:
            self.connections.discard(writer)
            writer.close()


def block_the_loop(ms):
    """Blocks the event loop on purpose (for the watchdog demo): a synchronous sleep."""
    time.sleep(ms / 1000)


async def watchdog_pings(interval):
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def main(args):
    socks = inherited_sockets() or bound_sockets(args.listen)
    app = App()
    servers = [await asyncio.start_server(app.handle, sock=s, limit=16384) for s in socks]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if usec and os.environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid()):
        asyncio.ensure_future(watchdog_pings(usec / 2e6))
    names = ", ".join(str(s.getsockname()) for s in socks)
    print(f"python worker {os.getpid()} serving on {names}", file=sys.stderr, flush=True)
    notify(f"READY=1\nSTATUS=serving on {names}")

    await stop.wait()
    notify("STOPPING=1\nSTATUS=draining")
    app.draining = True

    def close_idle():  # idle connections had their chance to send one more request
        for writer in list(app.idle):
            writer.close()
    loop.call_later(DRAIN_IDLE_TIMEOUT, close_idle)
    for server in servers:
        server.close()  # stop accepting; the supervisor keeps the queue for the next worker
    deadline = time.monotonic() + args.drain_timeout
    while app.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print(f"python worker {os.getpid()} drained after {app.served} requests", file=sys.stderr, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="asyncio hello service for loopfleet")
    parser.add_argument("--listen", action="append", help="HOST:PORT when run without inherited sockets")
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))
