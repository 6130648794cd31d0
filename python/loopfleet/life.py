"""A worker's life under `loopfleet run` or systemd, shared by every launcher: the inherited
sockets, READY / STOPPING / WATCHDOG on NOTIFY_SOCKET, the heartbeat region and the stack
signal. Everything here is a no-op when the process runs alone.
"""
import asyncio
import ctypes
import faulthandler
import os
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback

from . import heartbeat

# An idle keep-alive connection may send one more request this long into a drain: closing it
# at once fails the request its client is sending right then.
DRAIN_IDLE_TIMEOUT = 1.0
BEAT_INTERVAL = 0.05  # the supervisor reads the region every 50 ms
# The supervisor asks a stalled loop for its stack with this signal (tgkill to the loop
# thread); faulthandler prints the Python stack from the C signal handler, so it works while
# the loop is blocked.
STACK_SIGNAL = signal.SIGUSR2


PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


def fail(message, code=2):
    """Exits with one line, as the supervisor's own start-up errors do."""
    print(f"loopfleet: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def drain_timeout_reached():
    print("loopfleet: drain timeout reached; closing the connections still open", file=sys.stderr, flush=True)


def where(failure):
    """The innermost frame of an exception or of a traceback's text, as " (file:line in f)"."""
    if isinstance(failure, BaseException):
        frames = [(f.filename, f.lineno, f.name) for f in traceback.extract_tb(failure.__traceback__)]
    else:
        frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', failure)
    if not frames:
        return ""
    file, line, function = frames[-1]
    return f" ({os.path.basename(file)}:{line} in {function})"


def inherited_sockets():
    """The listening sockets passed by systemd's rules (fd 3 on), or [] when none are meant
    for this process. TCP and Unix alike: each socket learns its family from its fd."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS") or 0)
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)  # not for processes the app starts
    return [socket.socket(fileno=3 + i) for i in range(count)]


def bound_sockets(addresses):
    """Sockets for `HOST:PORT` or `unix:PATH` addresses, for a worker run alone."""
    out = []
    for addr in addresses:
        if addr.startswith("unix:"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(addr[5:])
            s.listen(1024)
        else:
            host, _, port = addr.rpartition(":")
            host = host.strip("[]") or "0.0.0.0"
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.create_server((host, int(port)), family=family, backlog=1024)
        out.append(s)
    return out


def describe(socks):
    return ", ".join(str(s.getsockname()) for s in socks)


class Handoff:
    """Connections the supervisor accepted for this worker from the queue of a slot whose loop
    went silent or whose worker died (the contract is src/runtime/handoff.hpp): one message per
    connection on a SOCK_SEQPACKET socket, the listener's index (LISTEN_FDS order) as a native
    uint32 and the connection's fd as SCM_RIGHTS. Each is served like one this worker accepted
    itself, through the protocol factory of that listener."""

    READY_KEY = "X_LOOPFLEET_HANDOFF=1"  # with READY=1: "send me such connections"

    def __init__(self):
        fd = os.environ.pop("LOOPFLEET_HANDOFF_FD", None)
        self.channel = None
        if fd and fd.isdigit():
            try:
                self.channel = socket.socket(fileno=int(fd))
                self.channel.setblocking(False)
                self.channel.set_inheritable(False)
            except OSError:
                self.channel = None

    def adopt(self, factories):
        """Serves handed-over connections with `factories[listener index]`; False if there is
        no channel (not under loopfleet run)."""
        if self.channel is None:
            return False
        self._factories = factories
        asyncio.get_running_loop().add_reader(self.channel.fileno(), self._receive)
        return True

    def _receive(self):
        """Adopts every connection queued on the channel; returns their tasks (each done once
        the connection's protocol is made)."""
        loop = asyncio.get_running_loop()
        factories = self._factories
        tasks = []
        while self.channel is not None:
            try:
                data, fds, _, _ = socket.recv_fds(self.channel, 4, 1)
            except (BlockingIOError, InterruptedError):
                return tasks
            except OSError:
                self._close()
                return tasks
            if not data and not fds:
                self._close()  # the supervisor's end is closed, or ours is shut
                return tasks
            index = struct.unpack("=I", data)[0] if len(data) == 4 else len(factories)
            for fd in fds:
                conn = socket.socket(fileno=fd)
                conn.set_inheritable(False)
                if index >= len(factories):  # not one of our listeners: the two sides disagree
                    conn.close()
                    continue
                conn.setblocking(False)
                tasks.append(loop.create_task(loop.connect_accepted_socket(factories[index], conn)))
        return tasks

    async def stop(self):
        """A draining worker takes no more: shut for reading, the supervisor's next send fails
        and it hands that connection to another worker. Those it sent before are still queued
        here, each with a request on its way: adopted (and awaited until the app has them, so
        the drain counts them), not dropped with the channel."""
        if self.channel is None:
            return
        try:
            self.channel.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        adopted = self._receive()
        self._close()
        if adopted:
            await asyncio.gather(*adopted, return_exceptions=True)

    def _close(self):
        if self.channel is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.channel.fileno())
            except (RuntimeError, ValueError):
                pass
            self.channel.close()
            self.channel = None


class Life:
    """READY and STOPPING, and the beats that prove the loop turns.

    `sample` returns (connections open, requests in flight, requests served); the beat copies
    it into the heartbeat region, where `loopfleet status` and --max-requests read it.
    """

    def __init__(self, sample=lambda: (0, 0, 0)):
        self.sample = sample
        self.region = heartbeat.open_region()
        self._notify_to = self._notify_address()
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if self._notify_to else None
        self._lags = []
        self._next_lag = 0
        self._expected = 0.0
        self.handoff = Handoff()

    @staticmethod
    def _notify_address():
        path = os.environ.get("NOTIFY_SOCKET")
        if not path:
            return None
        return "\0" + path[1:] if path.startswith("@") else path

    def notify(self, message, wait=False):
        """Sends one datagram. A receiver that reads slowly must not stall the loop: a ping
        that does not fit is dropped (the next follows in WATCHDOG_USEC / 2); a state change
        (`wait`) is worth waiting a second for."""
        if self._notify:
            self._notify.settimeout(1.0 if wait else 0)
            try:
                self._notify.sendto(message.encode(), self._notify_to)
            except OSError:
                pass  # full, or a supervisor gone away: PDEATHSIG tells us that

    def start(self):
        """Starts beating from the running loop. Call it before the app's startup, so the
        beats and the stack signal are in place when READY goes out (the supervisor watches
        a worker from READY on; until then --ready-timeout bounds the startup)."""
        loop = asyncio.get_running_loop()
        if self.region is not None:
            try:
                # chain: then the signal's default action ends the process, so the supervisor
                # sees the end of the stack at once instead of waiting to kill it.
                faulthandler.register(STACK_SIGNAL, file=sys.stderr, all_threads=False, chain=True)
                self.region.stack_signal = STACK_SIGNAL
            except (ValueError, OSError, AttributeError):
                pass  # no usable stderr: beat anyway, the stall is still caught
            self.region.loop_tid = threading.get_native_id()
            self._expected = time.monotonic()
            self._beat(loop)
        usec = int(os.environ.get("WATCHDOG_USEC") or 0)
        if usec and os.environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid()):
            self._ping(loop, usec / 2e6)
        watch_supervisor(loop)

    def _ping(self, loop, interval):
        self.notify("WATCHDOG=1")
        loop.call_later(interval, self._ping, loop, interval)

    def _beat(self, loop):
        now = time.monotonic()
        late_us = max(0, int((now - self._expected) * 1e6))
        if len(self._lags) < 200:  # 10 s of beats, as the C++ worker keeps
            self._lags.append(late_us)
        else:
            self._lags[self._next_lag] = late_us
            self._next_lag = (self._next_lag + 1) % 200
        ordered = sorted(self._lags)
        n = len(ordered)
        r = self.region
        r.lag_p50_us = min(ordered[n // 2], 0xFFFFFFFF)
        r.lag_p99_us = min(ordered[min(n - 1, n * 99 // 100)], 0xFFFFFFFF)
        r.lag_max_us = min(ordered[-1], 0xFFFFFFFF)
        r.connections, r.in_flight, r.requests = self.sample()
        r.beats += 1
        r.last_beat_ns = time.monotonic_ns()  # last: the reader takes it as "all of the above is fresh"
        self._expected = now + BEAT_INTERVAL
        loop.call_later(BEAT_INTERVAL, self._beat, loop)

    def ready(self, status, factories=None):
        """READY=1. `factories` (one protocol factory per listener, in LISTEN_FDS order) lets
        the supervisor hand this worker connections queued on a stalled or restarting slot."""
        takes = bool(factories) and self.handoff.adopt(factories)
        self.notify("READY=1\n" + (Handoff.READY_KEY + "\n" if takes else "") + f"STATUS={status}", wait=True)

    async def stopping(self):
        """STOPPING=1, then no more handed-over connections (those already sent are adopted)."""
        self.notify("STOPPING=1\nSTATUS=draining", wait=True)
        await self.handoff.stop()


def watch_supervisor(loop):
    """Outliving a supervisor that died, as a C++ worker does (src/runtime/orphan.hpp): with a
    keeper holding the sockets, the parent-death signal is cleared and the supervisor watched
    through a pidfd; once it dies the worker serves on until the one started again drains it
    (SIGTERM), or for LOOPFLEET_ORPHAN_TIMEOUT_MS at most, when it sends itself that SIGTERM:
    each launcher's own drain then runs as usual."""
    try:
        pid = int(os.environ.pop("LOOPFLEET_SUPERVISOR_PID", "") or 0)
        ms = int(os.environ.pop("LOOPFLEET_ORPHAN_TIMEOUT_MS", "") or 0)
    except ValueError:
        return
    if pid <= 0 or ms <= 0 or not hasattr(os, "pidfd_open"):
        return
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return  # the parent-death signal stays: it still drains us
    gone = os.getppid() != pid  # only now that the pidfd holds it: dead before, we are the reaper's
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)

    def orphaned():
        loop.remove_reader(fd)
        os.close(fd)
        try:
            print(f"loopfleet: the supervisor (pid {pid}) died: serving on until a new one drains this worker, "
                  f"for {ms} ms at most", file=sys.stderr, flush=True)
        except OSError:
            pass  # our stderr was a pipe to it
        loop.call_later(ms / 1000, os.kill, os.getpid(), signal.SIGTERM)

    if gone:
        loop.call_soon(orphaned)
    else:
        loop.add_reader(fd, orphaned)  # a pidfd turns readable when its process exits


def cluster_in_use():
    """loopfleet.cluster when the app imported it and the worker is in a cluster, else None:
    the launchers start it before READY and drain it on SIGTERM."""
    module = sys.modules.get("loopfleet.cluster")
    return module if module is not None and module.in_use() else None


class ClusterDrain:
    """The cluster's side of a worker's drain: begun with the HTTP drain (no more jobs are
    fetched), awaited before the worker exits (the jobs in flight finish and are acked)."""

    def __init__(self):
        self._module = cluster_in_use()  # its drain() returns at once if it never started
        self._task = asyncio.ensure_future(self._module.drain()) if self._module else None

    async def finish(self):
        if self._task is not None:
            await self._task
            self._module.stop()


def unread(transport):
    """Whether bytes (or the client's FIN) wait in the kernel for the loop to read them: on a
    busy loop, a connection that looks idle may already hold its next request, and closing
    it with unread bytes resets it and loses that request."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    poller = select.poll()
    try:
        poller.register(sock.fileno(), select.POLLIN)
    except (OSError, ValueError):
        return False  # already closed
    return bool(poller.poll(0))


async def accepted_ones_settle():
    """Lets the connections accepted just before the listeners stopped reach the app: asyncio
    runs a connection's protocol factory and connection_made a turn or two of the loop after
    accept(). A drain that counted connections before would miss them, exit, and drop them."""
    for _ in range(3):
        await asyncio.sleep(0)


async def stop_accepting(servers):
    """Stops asyncio servers accepting, losing no connection they accepted; the supervisor
    keeps the listening sockets' queues for the next worker.

    Server.close() alone drops a connection accepted in the loop's last turn: its transport is
    made a turn later, and a closed Server refuses to attach it (an AssertionError that asyncio
    swallows outside debug mode), so the socket is closed with its request unread. Hence: the
    listeners leave the selector, the connections already accepted get their transports and
    reach the app, and only then do the servers close."""
    loop = asyncio.get_running_loop()
    for server in servers:
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
    await accepted_ones_settle()
    for server in servers:
        server.close()


async def stop_requested():
    """Returns on the first SIGTERM or SIGINT (a drain under loopfleet and systemd)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
