"""Offload under a real worker: crash isolation, no orphan helpers, and a loop that stays
responsive while heavy work runs on the pools."""
import os
import signal
import threading
import time

import pytest

from conftest import SLOW, Wrk, binary, exchange, pid_alive, wait_until


def get(sup, path):
    with sup.connect() as s:
        (r,) = exchange(s, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return r


def test_helpers_show_in_status_and_die_with_a_killed_worker(supervise):
    sup = supervise(1, command=[binary("offload")])
    slot = sup.status()["slots"][0]
    helpers = [h["pid"] for h in slot["helpers"]]
    assert helpers, slot
    assert "helpers:" in sup.cli("status").stdout
    os.kill(slot["pid"], signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(h) for h in helpers), timeout=5, what="helpers to die")
    sup.log.wait_for(r"slot 0: pid \d+ ready in", count=2)
    assert get(sup, "/hash?mode=process&rounds=1").status == 200  # the new worker has new helpers


def test_a_crashing_task_fails_only_its_own_request(supervise):
    sup = supervise(1, command=[binary("offload")])
    worker = sup.worker_pids()[0]
    r = get(sup, "/crash")
    assert r.status == 500 and b"SIGSEGV" in r.body, r.body
    assert get(sup, "/hash?mode=process&rounds=2").status == 200
    assert get(sup, "/hash?mode=thread&rounds=2").status == 200
    assert sup.worker_pids() == [worker]


def probe_p99_ms(sup, seconds):
    """GET / latencies on one keep-alive connection for `seconds`; returns (p99 ms, count)."""
    latencies = []
    with sup.connect() as s:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            began = time.monotonic()
            (r,) = exchange(s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert r.status == 200
            latencies.append(time.monotonic() - began)
    latencies.sort()
    return latencies[int(len(latencies) * 0.99)] * 1000, len(latencies)


def test_loop_stays_responsive_only_when_heavy_work_is_offloaded(supervise, monkeypatch):
    # One pool thread and one helper: the other core stays free for the loop, the client
    # and the probe. Each heavy request is ~5 ms of CPU.
    monkeypatch.setenv("LOOPFLEET_OFFLOAD_THREADS", "1")
    monkeypatch.setenv("LOOPFLEET_OFFLOAD_PROCESSES", "1")
    sup = supervise(1, command=[binary("offload")])
    results = {}
    for mode in ("thread", "process", "inline"):
        load = Wrk(sup.port, duration=3, connections=4, path=f"/hash?mode={mode}&rounds=5", threads=1)
        wait_until(lambda: sup.status()["slots"][0]["in_flight"] > 0, what=f"{mode} load")
        results[mode] = probe_p99_ms(sup, 2.0)
        r = load.result()
        assert r["requests"] > 0 and r["failed"] == 0, r["text"]
    print("GET / p99 while /hash is saturated: " +
          ", ".join(f"{m} {p:.2f} ms ({n} probes)" for m, (p, n) in results.items()))
    assert results["thread"][0] < 5 * SLOW
    assert results["process"][0] < 5 * SLOW
    assert results["inline"][0] > 5  # the loop itself computes: every probe waits behind it
