"""The HTTP/1.1 server, driven over real sockets by a real worker process."""
import json
import os
import select
import signal
import socket
import threading
import time

import pytest

from conftest import SLOW, exchange, get, peer_closed, read_response, rss_kib


@pytest.fixture
def start(http_start):
    """Every test here runs on io_uring and on epoll (conftest.http_start)."""
    return http_start


def test_hello_example_routes(start):
    w = start(name="hello")
    r = get(w, "/")
    assert (r.status, r.body) == (200, b"Hello, World!")
    assert r.header("server") == "loopfleet"
    assert r.header("date").endswith("GMT")
    r = get(w, "/json")
    assert r.header("content-type") == "application/json"
    assert json.loads(r.body) == {"message": "Hello, World!"}
    assert get(w, "/healthz").status == 200
    assert get(w, "/missing").status == 404


def test_wrong_method_is_405_with_allow(start):
    w = start()
    with w.connect() as s:
        (r,) = exchange(s, b"DELETE / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert r.status == 405
        assert r.header("allow") == "GET, HEAD"


def test_keep_alive_serves_many_requests_on_one_connection(start):
    w = start()
    with w.connect() as s:
        for i in range(5):
            (r,) = exchange(s, f"GET /users/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            assert (r.status, r.body) == (200, f"user {i}".encode())
            assert r.header("connection") is None  # HTTP/1.1: keep-alive is the default


def test_http10_keep_alive_only_when_asked(start):
    w = start()
    with w.connect() as s:
        (r,) = exchange(s, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert r.header("connection") == "keep-alive"
        (r,) = exchange(s, b"GET / HTTP/1.0\r\n\r\n")
        assert r.header("connection") == "close"
        assert peer_closed(s, 5)


def test_pipelined_requests_are_answered_in_order(start):
    w = start()
    batch = b"".join(f"GET /users/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(10))
    batch += b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
    batch += b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"
    batch += b"GET /users/last HTTP/1.1\r\nHost: t\r\n\r\n"
    with w.connect() as s:
        s.sendall(batch)
        f = s.makefile("rb")
        bodies = [read_response(f).body for _ in range(11)]
        head = read_response(f, head=True)
        last = read_response(f)
    assert bodies[:10] == [f"user {i}".encode() for i in range(10)]
    assert bodies[10] == b"method=POST length=3 body=abc"
    assert head.status == 200 and head.header("content-length") == "13"
    assert last.body == b"user last"  # so HEAD sent no body bytes


def test_a_response_larger_than_the_socket_buffers_arrives_whole_and_the_connection_lives_on(start):
    # More than the kernel's largest send buffer (tcp_wmem's 4 MiB), to a client with a small
    # receive buffer: the server's send stops part-way, and the rest leaves only after the
    # socket has told the server it is writable again.
    w = start(["--max-body-bytes", "16m"])
    body = bytes(range(256)) * 32768  # 8 MiB
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30 * SLOW)
    s.connect(("127.0.0.1", w.port))
    with s:
        (r,) = exchange(s, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert r.body == b"method=POST length=%d body=" % len(body) + body
        (r,) = exchange(s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (r.status, r.body) == (200, b"Hello, World!")


def sockets_of(pid):
    """The sockets a process holds, by inode."""
    links = (os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
    return {link for link in links if link.startswith("socket:")}


def test_a_client_that_pipelines_without_reading_is_held_back_then_answered_in_full(start):
    # A client that sends requests and never reads the answers: once the server's sends are
    # stuck, it must stop taking input, so that what the client sends waits in the kernel
    # (and TCP slows the client down) rather than in the worker's memory. Then the client
    # reads, and every request it sent is answered.
    w = start()
    request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    with w.connect() as probe:
        (one,) = exchange(probe, request)
    response_size = len(b"HTTP/1.1 200 OK\r\n") + sum(len(k) + len(v) + 4 for k, v in one.headers.items()) + 2 + 13
    before = rss_kib(w.proc.pid) * 1024
    s = w.connect()
    s.setblocking(False)
    batch = request * 2048
    cap = 256 * 1024 * 1024  # far more than any socket buffers: reaching it means nothing held back
    sent = 0
    pending = memoryview(batch)
    with s:
        while sent < cap:
            try:
                n = s.send(pending)
            except BlockingIOError:
                if not select.select([], [s], [], 3 * SLOW)[1]:
                    break  # the server has stopped reading
                continue
            sent += n
            pending = pending[n:] or memoryview(batch)
        assert sent < cap, "the server took everything the client sent"
        grown = rss_kib(w.proc.pid) * 1024 - before
        assert grown < 16 * 1024 * 1024, f"the worker grew by {grown >> 20} MiB holding a client's input"
        # The last request may be cut off: finish it, and read the answers to every one. The
        # rest is sent beside the reading: the server reads again only once answers leave, so
        # sending it first can wait on a full socket buffer until the send timeout ends it all.
        s.setblocking(True)
        rest = bytes(pending[:len(pending) % len(request)] if len(pending) != len(batch) else b"")
        finisher = threading.Thread(target=s.sendall, args=(rest,))
        finisher.start()
        requests = -(-sent // len(request))
        want, got = requests * response_size, 0
        while got < want:
            chunk = s.recv(1 << 20)
            assert chunk, f"the connection ended after {got} of {want} bytes of answers"
            got += len(chunk)
        finisher.join()
        assert got == want
    assert get(w, "/").status == 200


def test_a_client_that_does_not_read_its_response_is_cut_off_after_the_send_timeout(start):
    # The response (8 MiB) cannot leave: the client reads nothing. After --send-timeout the
    # server closes the connection, its send still under way (on io_uring, the bytes that send
    # reads stay allocated until the kernel has let go of them), and serves on.
    w = start(["--send-timeout", "1", "--max-body-bytes", "16m"])
    body = b"x" * (8 << 20)
    # Its sockets: the count of all descriptors moves on its own (a signal pipe made after READY).
    baseline = sockets_of(w.proc.pid)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30 * SLOW)
    s.connect(("127.0.0.1", w.port))
    with s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        deadline = time.monotonic() + 30 * SLOW
        while sockets_of(w.proc.pid) != baseline:  # the connection's, until the timeout closes it
            assert time.monotonic() < deadline, "the server never gave up on a client that does not read"
            time.sleep(0.05)
        got = 0
        try:
            while chunk := s.recv(1 << 20):
                got += len(chunk)
        except ConnectionResetError:
            pass
        assert 0 < got < len(body), f"{got} bytes arrived of an 8 MiB response"
    assert get(w, "/").body == b"Hello, World!"


def test_request_bodies_content_length_and_chunked(start):
    w = start()
    with w.connect() as s:
        (r,) = exchange(s, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        assert r.body == b"method=POST length=5 body=hello"
        chunked = (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n")
        (r,) = exchange(s, chunked)
        assert r.body == b"method=POST length=9 body=Wikipedia"


def test_body_sent_in_pieces_and_expect_100_continue(start):
    w = start()
    with w.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nExpect: 100-continue\r\n\r\n")
        f = s.makefile("rb")
        assert read_response(f).status == 100  # the client may now send the body
        s.sendall(b"abc")
        s.sendall(b"def")
        r = read_response(f)
        assert r.body == b"method=POST length=6 body=abcdef"


MALFORMED = {
    "bad request line": (b"GARBAGE\r\n\r\n", 400),
    "bad method token": (b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "bad version": (b"GET / HTTP/9.9\r\nHost: t\r\n\r\n", 400),
    "header without colon": (b"GET / HTTP/1.1\r\nHost t\r\n\r\n", 400),
    "missing Host in HTTP/1.1": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "bad content length": (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 12x\r\n\r\n", 400),
    "bad chunk size": (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400),
    "oversized header": (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n", 431),
    "oversized body": (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000, 413),
    "oversized chunked body": (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                               + b"".join(b"400\r\n" + b"y" * 1024 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n", 413),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_gets_status_and_worker_keeps_serving(start, case):
    w = start(["--max-header-bytes", "2k", "--max-body-bytes", "4k"])
    data, status = MALFORMED[case]
    with w.connect() as s:
        (r,) = exchange(s, data)
        assert r.status == status, case
        assert r.header("connection") == "close"
        assert peer_closed(s, 5)
    assert get(w, "/").status == 200
    assert w.proc.poll() is None


def test_handler_exception_is_500_and_connection_lives(start):
    w = start()
    with w.connect() as s:
        (r,) = exchange(s, b"GET /throw HTTP/1.1\r\nHost: t\r\n\r\n")
        assert r.status == 500
        (r,) = exchange(s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert r.status == 200
    w.stderr.wait_for(r"GET /throw: handler threw: boom on purpose")


def test_slow_header_client_is_cut_off_with_408(start):
    w = start(["--header-timeout", "1.5"])
    header = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"z" * 20 + b"\r\n\r\n"
    with w.connect() as s:
        began = time.monotonic()
        sent = 0
        s.settimeout(1.0)
        reply = b""
        # One byte a second, as a slowloris client does; bounded by the header length.
        while sent < len(header):
            try:
                s.sendall(header[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            try:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
            except socket.timeout:
                continue
            except ConnectionResetError:
                break
        elapsed = time.monotonic() - began
    assert sent < len(header), "the slow client was never cut off"
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    print(f"slow header client cut off after {elapsed:.2f} s and {sent} bytes")
    assert elapsed < 1.5 + 2.0 * SLOW
    assert get(w, "/").status == 200


def test_idle_keep_alive_connection_is_closed(start):
    w = start(["--idle-timeout", "0.5"])
    with w.connect() as s:
        (r,) = exchange(s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert r.status == 200
        assert peer_closed(s, 3)


def test_connection_limit_answers_503(start):
    w = start(["--max-connections", "2"])
    held = [w.connect(), w.connect()]
    try:
        for s in held:  # make sure both are accepted and counted
            assert exchange(s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0].status == 200
        with w.connect() as third:
            (r,) = exchange(third, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert r.status == 503
    finally:
        for s in held:
            s.close()


def test_sigterm_lets_requests_in_flight_finish_then_exits_0(start):
    w = start()
    idle = w.connect()
    assert exchange(idle, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0].status == 200
    slow = [w.connect() for _ in range(3)]
    for s in slow:
        s.sendall(b"GET /slow?ms=1500 HTTP/1.1\r\nHost: t\r\n\r\n")
    w.stdout.wait_for(r"slow request started", count=3)

    w.signal(signal.SIGTERM)
    w.notify.wait_for("STOPPING=1")
    # An idle keep-alive connection may send one more request (answered with close), then
    # it is closed after --drain-idle-timeout (1 s).
    assert peer_closed(idle, 3), "the drain must close idle keep-alive connections"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", w.port), timeout=2).close()
    for s in slow:
        r = read_response(s.makefile("rb"))
        assert (r.status, r.body) == (200, b"slept 1500 ms\n")
        assert r.header("connection") == "close"
        s.close()
    assert w.wait() == 0
    idle.close()


def test_drain_answers_a_last_request_on_an_idle_connection_then_closes(start):
    w = start(["--drain-idle-timeout", "5"])
    s = w.connect()
    assert exchange(s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0].status == 200
    w.signal(signal.SIGTERM)
    w.notify.wait_for("STOPPING=1")
    # The request a keep-alive client sends just as the drain begins must not fail.
    (r,) = exchange(s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (r.status, r.header("connection")) == (200, "close")
    assert peer_closed(s, 3)
    assert w.wait() == 0


def test_drain_timeout_bounds_the_wait(start):
    w = start(["--drain-timeout", "0.5"])
    s = w.connect()
    s.sendall(b"GET /slow?ms=20000 HTTP/1.1\r\nHost: t\r\n\r\n")
    w.stdout.wait_for(r"slow request started")
    began = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(timeout=10) == 0
    assert time.monotonic() - began < 0.5 + 3 * SLOW
    w.stderr.wait_for(r"drain timeout reached")
    s.close()


def test_sigquit_exits_at_once(start):
    w = start()
    s = w.connect()
    s.sendall(b"GET /slow?ms=20000 HTTP/1.1\r\nHost: t\r\n\r\n")
    w.stdout.wait_for(r"slow request started")
    w.signal(signal.SIGQUIT)
    assert w.wait(timeout=5) == 0
    s.close()


def test_ready_status_and_watchdog_pings(start):
    w = start(env={"WATCHDOG_USEC": "200000"})
    assert "STATUS=serving on 127.0.0.1:" in w.ready
    for _ in range(3):  # at half the interval, from the loop
        w.notify.seen.clear()
        w.notify.wait_for("WATCHDOG=1", timeout=1)


def test_inherited_socket_is_served(start):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    port = lsock.getsockname()[1]
    # The socket must be fd 3 in the child and LISTEN_PID its pid: a shell sets the pid, then
    # execs the worker under the same pid, as a supervisor's child would.
    wrapper = ["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"']
    w = start(listen=False, wrapper=wrapper, fd3=lsock.fileno(),
              env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"})
    lsock.close()  # only the worker holds it now
    w.port = port
    assert f"serving on 127.0.0.1:{port}" in w.ready
    assert get(w, "/").body == b"Hello, World!"


def test_listen_fds_for_another_pid_are_ignored(start):
    w = start(env={"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    assert get(w, "/").status == 200  # bound its own --listen address instead


def test_unix_and_ipv6_listeners(start, tmp_path):
    path = str(tmp_path / "hello.sock")
    port6 = None
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        port6 = probe.getsockname()[1]
        probe.close()
    except OSError:
        pass  # no IPv6 on this host: test the Unix socket alone
    args = ["--listen", f"unix:{path}"] + (["--listen", f"[::1]:{port6}"] if port6 else [])
    w = start(args)
    u = socket.socket(socket.AF_UNIX)
    u.connect(path)
    assert exchange(u, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0].body == b"Hello, World!"
    u.close()
    if port6:
        with socket.create_connection(("::1", port6)) as s6:
            assert exchange(s6, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0].status == 200
    w.signal(signal.SIGTERM)
    assert w.wait() == 0
    import os
    assert not os.path.exists(path), "the worker removes the socket file it created"
