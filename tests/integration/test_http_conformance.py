"""RFC 9112 (HTTP/1.1 message syntax) rules that a server MUST keep, each tested over a real
socket. Most guard the framing of a request: two parties that disagree about where a request
ends (a front and a node, say) are how requests get smuggled."""
import pytest

from conftest import exchange, get, peer_closed, read_response


@pytest.fixture
def start(http_start):
    """Every test here runs on io_uring and on epoll (conftest.http_start)."""
    return http_start

# name: (RFC 9112 section, request bytes, status, must the connection close after it)
RULES = {
    # 6.3 (4): Transfer-Encoding whose final coding is not chunked: 400, then close.
    "te-not-chunked": ("6.3", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400, True),
    "te-chunked-not-last": ("6.3", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
                            b"3\r\nabc\r\n0\r\n\r\n", 400, True),
    "te-split-over-fields": ("6.3", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                             b"Transfer-Encoding: gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400, True),
    # 6.1: a transfer coding the server does not implement: 501 (and the framing is unknown).
    "te-unknown-coding": ("6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                          b"3\r\nabc\r\n0\r\n\r\n", 501, True),
    # 6.3 (3): Transfer-Encoding and Content-Length together: rejected here, and closed.
    "te-and-content-length": ("6.3", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400, True),
    # 6.3 (5): an invalid Content-Length: 400, then close.
    "content-length-differing": ("6.3", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                                 b"Content-Length: 4\r\n\r\nabcd", 400, True),
    "content-length-negative": ("6.3", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400, True),
    "content-length-signed": ("6.3", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc", 400, True),
    # 3.2: no Host in HTTP/1.1, two Host fields, or an invalid Host: 400.
    "host-missing": ("3.2", b"GET / HTTP/1.1\r\n\r\n", 400, True),
    "host-twice": ("3.2", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, True),
    "host-with-space": ("3.2", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, True),
    "host-with-slash": ("3.2", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, True),
    # 5.1: whitespace between a field name and the colon: 400.
    "space-before-colon": ("5.1", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400, True),
    # 2.2: whitespace between the start line and the first field: reject (or ignore the line).
    "space-before-first-field": ("2.2", b"GET / HTTP/1.1\r\n Host: t\r\n\r\n", 400, True),
    # 2.2 and 5: a bare CR, a NUL in a value: invalid.
    "bare-cr": ("2.2", b"GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n", 400, True),
    "nul-in-value": ("5.5", b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400, True),
    # 3: an invalid request line: 400.
    "space-in-target": ("3", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400, True),
    # 3.2.2: a server MUST accept the absolute form.
    "absolute-form": ("3.2.2", b"GET http://t/users/5?full=1 HTTP/1.1\r\nHost: t\r\n\r\n", 200, False),
    "absolute-form-no-path": ("3.2.2", b"GET http://t HTTP/1.1\r\nHost: t\r\n\r\n", 200, False),
    # 2.2 (SHOULD): empty lines before the request line are ignored.
    "leading-empty-line": ("2.2", b"\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n", 200, False),
    # 5.2: obs-fold is rejected or replaced by spaces (here: replaced).
    "obs-fold": ("5.2", b"GET /header HTTP/1.1\r\nHost: t\r\nX-Probe: a\r\n b\r\n\r\n", 200, False),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_rfc9112_server_rule(start, rule):
    section, data, status, closes = RULES[rule]
    w = start()
    with w.connect() as s:
        (r,) = exchange(s, data)
        assert r.status == status, f"RFC 9112 {section}: {rule} answered {r.status}"
        if closes:
            assert r.header("connection") == "close" and peer_closed(s, 5), f"RFC 9112 {section}: {rule} kept open"
        else:
            assert r.header("connection") is None
            (again,) = exchange(s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # and the framing held
            assert again.status == 200
    if rule == "absolute-form":
        assert r.body == b"user 5"
    if rule == "obs-fold":
        assert r.body == b"a b"
    assert get(w, "/").status == 200


def test_absolute_form_host_comes_from_the_target(start):
    # 3.2.2: the origin server MUST ignore the Host field and use the target's authority.
    w = start()
    with w.connect() as s:
        (r,) = exchange(s, b"GET http://real.example:8080/header?name=host HTTP/1.1\r\nHost: other\r\n\r\n")
        assert (r.status, r.body) == (200, b"real.example:8080")
        (r,) = exchange(s, b"GET /header?name=host HTTP/1.1\r\nHost: other\r\n\r\n")
        assert r.body == b"other"


def test_http10_transfer_encoding_closes_after_the_response(start):
    # 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing: close after it, even
    # when it asked to keep the connection.
    w = start()
    with w.connect() as s:
        (r,) = exchange(s, b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"3\r\nabc\r\n0\r\n\r\n")
        assert r.status == 200 and r.header("connection") == "close"
        assert peer_closed(s, 5)


def test_connection_close_ends_the_connection_and_later_requests_are_not_served(start):
    # 9.6: after the response to a request with "close", no further request is processed.
    w = start()
    with w.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /users/2 HTTP/1.1\r\nHost: t\r\n\r\n")
        f = s.makefile("rb")
        r = read_response(f)
        assert r.status == 200 and r.header("connection") == "close"
        assert f.read() == b""  # the pipelined second request got nothing


def test_no_100_continue_to_an_http10_client(start):
    # RFC 9110 10.1.1 / 15.2: a 100-continue expectation from HTTP/1.0 is ignored, and no 1xx is
    # sent to an HTTP/1.0 client.
    w = start()
    with w.connect() as s:
        s.sendall(b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        s.settimeout(0.5)
        try:
            early = s.recv(100)
        except OSError:
            early = b""
        assert early == b"", early
        s.settimeout(10)
        s.sendall(b"abc")
        r = read_response(s.makefile("rb"))
        assert (r.status, r.body) == (200, b"method=POST length=3 body=abc")
