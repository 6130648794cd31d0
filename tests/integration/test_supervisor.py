"""`loopfleet run` with real workers on loopback, under real load (wrk): kill, reload, crash
loops, balance, stop, bad usage."""
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from conftest import (PYTHON_APP, SLOW, Wrk, binary, established_connections, exchange, free_port, log_time,
                      read_response, wait_until)

MODES = ["reuseport", "shared"]
CPP = None  # the default command: the C++ test app
PY = [sys.executable if sys.executable.startswith("/usr/") else "/usr/bin/python3", PYTHON_APP]


def refill_ms(sup, slot, victim):
    """Milliseconds from the victim's exit to its replacement's READY, from the log, and how
    much of that the replacement itself took to start (its "ready in" figure)."""
    (exited,) = sup.log.wait_for(rf"slot {slot}: pid {victim} exited")
    (ready,) = sup.log.wait_for(rf"slot {slot}: pid (?!{victim}\b)\d+ ready in")
    own = int(re.search(r"ready in (\d+) ms", ready).group(1))
    return (log_time(ready) - log_time(exited)) * 1000, own


def kill_one_worker_under_load(sup):
    # The supervisor's part of a refill is the 100 ms first backoff plus a fork; the worker's
    # own start-up comes on top (an interpreter's, under wrk load, varies with the machine).
    budget = 200 * SLOW
    load = Wrk(sup.port, duration=4, connections=64)
    pids = sup.worker_pids()
    victim = pids[1]
    # Once all of wrk's connections are up, the victim's share is what the kill may cost.
    wait_until(lambda: sum(established_connections(p, sup.port) for p in pids) == 64, what="64 connections")
    held = established_connections(victim, sup.port)
    os.kill(victim, signal.SIGKILL)
    r = load.result()
    took, own = refill_ms(sup, 1, victim)
    print(f"kill: victim held {held} connections; wrk {r['requests']} requests, failed {r['failed']} "
          f"(connect {r['connect']}, read {r['read']}, write {r['write']}, timeout {r['timeout']}, "
          f"non-2xx {r['non2xx']}); slot refilled and ready {took:.0f} ms after the exit, {own} ms of it "
          f"the new worker's own start")
    assert r["requests"] > 0, r["text"]
    assert r["connect"] == 0, r["text"]
    assert r["non2xx"] == 0, r["text"]
    # Only requests in flight on the victim may fail: at most one per connection it held.
    assert r["failed"] <= held, r["text"]
    assert took - own <= budget, f"the supervisor took {took - own:.0f} ms to start the replacement"
    return r


def reload_under_load(sup, reloads=2):
    # Long enough that all 64 are seen open before it ends, also on a sanitizer build beside
    # another test (pytest -n 2), where 5 s once was not.
    load = Wrk(sup.port, duration=int(5 * SLOW), connections=64)
    pids = sup.worker_pids()
    # A shared socket may hand every connection to one worker: wait for all 64, wherever.
    wait_until(lambda: sum(established_connections(p, sup.port) for p in pids) == 64, what="64 connections")
    for _ in range(reloads):
        done = sup.cli("reload")
        assert done.returncode == 0, done.stderr
        assert "serving" in done.stdout
    r = load.result()
    print(f"reload x{reloads}: wrk {r['requests']} requests, failed {r['failed']}, non-2xx {r['non2xx']}")
    assert r["requests"] > 0, r["text"]
    assert r["failed"] == 0, r["text"]
    status = sup.status()
    assert status["generation"] == 1 + reloads
    assert all(s["generation"] == 1 + reloads and s["state"] == "ready" for s in status["slots"])
    assert not set(pids) & set(sup.worker_pids())
    return r


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_one_worker_under_load(supervise, mode):
    sup = supervise(2, ["--distribution", mode])
    kill_one_worker_under_load(sup)


@pytest.mark.parametrize("mode", MODES)
def test_connections_queued_on_a_dead_worker_are_served_by_its_replacement(supervise, mode):
    sup = supervise(2, ["--distribution", mode])
    victim = sup.worker_pids()[1]
    os.kill(victim, signal.SIGSTOP)  # its accept queue fills but nothing is accepted
    clients = []
    for i in range(16):
        s = sup.connect()
        s.sendall(f"GET /users/{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        clients.append(s)
    os.kill(victim, signal.SIGKILL)
    bodies = []
    for s in clients:
        r = read_response(s.makefile("rb"))
        assert r is not None, "a queued connection was reset"
        bodies.append(r.body)
        s.close()
    assert bodies == [f"user {i}".encode() for i in range(16)]


@pytest.mark.parametrize("mode", MODES)
def test_reload_under_load_fails_no_request(supervise, mode):
    sup = supervise(2, ["--distribution", mode])
    reload_under_load(sup)


def test_reload_to_a_broken_command_rolls_back(supervise, tmp_path):
    config = tmp_path / "app.toml"
    config.write_text(f'command = ["{binary("loopfleet-testapp")}"]\n')
    sup = supervise(2, ["--config", str(config)], command=[])
    before = sup.worker_pids()
    config.write_text('command = ["/bin/sh", "-c", "echo cannot start >&2; exit 3"]\n')
    done = sup.cli("reload")
    assert done.returncode == 1
    assert "rolled back" in done.stderr and "exit code 3" in done.stderr, done.stderr
    assert sup.worker_pids() == before
    with sup.connect() as s:
        assert exchange(s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0].status == 200
    # A broken config file is refused before anything starts.
    config.write_text("command = [\n")
    done = sup.cli("reload")
    assert done.returncode == 1 and "app.toml:" in done.stderr, done.stderr
    assert sup.worker_pids() == before


def test_crash_loop_backs_off_and_degrades_one_slot_only(supervise):
    crashy = ["/bin/sh", "-c", 'if [ "$LOOPFLEET_SLOT" = 1 ]; then exit 1; fi; exec "$0"',
              binary("loopfleet-testapp")]
    sup = supervise(2, ["--backoff-initial", "0.05", "--backoff-max", "0.4", "--degraded-after", "3"],
                    command=crashy, wait_ready=False)
    sup.log.wait_for(r"slot 0: pid \d+ ready in")
    load = Wrk(sup.port, duration=3, connections=16)
    sup.log.wait_for(r"slot 1 degraded")
    delays = [int(m) for m in re.findall(r"slot 1: restarting in (\d+) ms",
                                         "\n".join(sup.log.wait_for(r"slot 1: restarting in", count=6)))]
    assert delays[:6] == [50, 100, 200, 400, 400, 400], delays
    slot1 = sup.status()["slots"][1]
    assert slot1["state"] == "degraded" and slot1["last_exit"] == "exit code 1", slot1
    r = load.result()
    print(f"crash loop: backoff {delays[:6]} ms; the healthy slot served {r['requests']} requests, "
          f"failed {r['failed']}")
    assert r["requests"] > 0 and r["failed"] == 0, r["text"]


@pytest.mark.parametrize("mode", MODES)
def test_balance_of_keep_alive_connections(supervise, mode):
    sup = supervise(2, ["--distribution", mode])
    pids = sup.worker_pids()
    handed = lambda: [s.get("handed_over", 0) for s in sup.status()["slots"]]  # noqa: E731
    handed_before = handed()
    load = Wrk(sup.port, duration=3, connections=64)
    counts = wait_until(lambda: (lambda c: c if sum(c) == 64 else None)(
        [established_connections(p, sup.port) for p in pids]), what="64 connections")
    load.result()
    # On a busy machine (or the sanitizer build) a loop may miss two beats while wrk
    # connects, and the supervisor then hands what queued on its slot to the other worker: a
    # latency win that skews who holds the connections, not how the kernel spread them. With
    # two slots, what slot 0 handed went to worker 1 and the other way round.
    moved = [a - b for a, b in zip(handed(), handed_before)]
    spread = [counts[0] + moved[0] - moved[1], counts[1] + moved[1] - moved[0]]
    share = max(spread) / 64
    print(f"balance ({mode}): connections per worker {counts}, handed over {moved}, as the kernel spread them "
          f"{spread}, largest share {share:.0%}")
    if mode == "reuseport":  # the default
        # The steering program picks a serving slot at random per connection: the larger of
        # two shares of 64 is binomial, sd 4. 42 of 64 (66 %) comes by chance about 1 run in
        # 55 and failed a busy CI run; 48 (75 %) about 1 in 20,000, while a shared socket
        # commonly gives one worker 60 or all 64.
        assert share <= 0.75


def test_sigterm_lets_slow_requests_finish_then_exits_0(supervise):
    sup = supervise(2)
    clients = [sup.connect() for _ in range(4)]
    for s in clients:
        s.sendall(b"GET /slow?ms=1500 HTTP/1.1\r\nHost: t\r\n\r\n")
    sup.log.wait_for(r"slow request started", count=4)
    sup.proc.send_signal(signal.SIGTERM)
    for s in clients:
        r = read_response(s.makefile("rb"))
        assert (r.status, r.body) == (200, b"slept 1500 ms\n")
        s.close()
    assert sup.proc.wait(timeout=10 * SLOW) == 0
    sup.log.wait_for(r"stopped")


def test_scale_up_and_down(supervise):
    sup = supervise(1)
    done = sup.cli("scale", "3")
    assert done.returncode == 0, done.stderr
    sup.log.wait_for(r"ready in", count=3)
    assert [s["state"] for s in sup.status()["slots"]] == ["ready"] * 3
    assert sup.cli("scale", "1").returncode == 0
    assert len(sup.status()["slots"]) == 1
    with sup.connect() as s:
        assert exchange(s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0].status == 200


def test_status_table(supervise):
    sup = supervise(2)
    table = sup.cli("status")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[1].split()[:5] == ["SLOT", "PID", "GEN", "STATE", "UPTIME_S"]
    assert len(lines) == 4 and all(" ready " in l for l in lines[2:])


def test_ready_started_for_commands_that_never_notify(supervise):
    sup = supervise(1, ["--ready", "started", "--ready-delay", "0.2"], command=["/bin/sleep", "30"])
    assert sup.status()["slots"][0]["state"] == "ready"


def test_no_worker_ever_ready_exits_1_with_its_stderr(tmp_path):
    port = free_port()
    r = subprocess.run([binary("loopfleet"), "run", "--control", str(tmp_path / "c.sock"), "--listen",
                        f"127.0.0.1:{port}", "--workers", "2", "--", "/bin/sh", "-c", "echo broken config >&2; exit 3"],
                       capture_output=True, text=True, timeout=30 * SLOW)
    assert r.returncode == 1
    assert "no worker became ready (exit code 3)" in r.stderr
    assert "  broken config" in r.stderr


# --- the Python asyncio example gets the same guarantees ---

def test_python_example_sigkill_under_load(supervise):
    sup = supervise(2, command=PY)
    kill_one_worker_under_load(sup)


def test_python_example_reload_under_load(supervise):
    sup = supervise(2, command=PY)
    reload_under_load(sup, reloads=1)


# --- bad usage: one line, exit code 2 ---

def one_line_error(args, **kw):
    r = subprocess.run([binary("loopfleet"), *args], capture_output=True, text=True, timeout=30 * SLOW, **kw)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loopfleet: error: "), r.stderr
    return lines[0]


def test_bad_usage_is_one_line_and_exit_2(tmp_path):
    app = binary("loopfleet-testapp")
    listen = ["--listen", f"127.0.0.1:{free_port()}", "--control", str(tmp_path / "c.sock")]
    assert "unknown flag --wrokers" in one_line_error(["run", "--wrokers", "2", *listen, "--", app])
    assert "no worker command" in one_line_error(["run", *listen])
    assert "not found" in one_line_error(["run", *listen, "--", "/nonexistent/app"])
    assert "workers 'lots'" in one_line_error(["run", "--workers", "lots", *listen, "--", app])
    bad = tmp_path / "bad.toml"
    bad.write_text("workers = 2\nlisten = 8080\n")
    assert "bad.toml:2: listen must be" in one_line_error(["run", "--config", str(bad), "--", app])
    assert "unknown command" in one_line_error(["frobnicate"])


def test_port_in_use_is_one_line_and_exit_2(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    for mode in MODES:
        err = one_line_error(["run", "--distribution", mode, "--listen", f"127.0.0.1:{port}", "--control",
                              str(tmp_path / "c.sock"), "--", binary("loopfleet-testapp")])
        assert "address already in use" in err
    holder.close()


def test_second_instance_with_the_same_name_refuses(supervise):
    sup = supervise(1)
    err = one_line_error(["run", "--name", sup.name, "--control", sup.control, "--listen", f"127.0.0.1:{free_port()}",
                          "--", binary("loopfleet-testapp")])
    assert "another loopfleet instance named" in err
    assert sup.status()["slots"][0]["state"] == "ready"  # the first one is untouched


# --- and so does a plain Node app ---

NODE = ["/usr/bin/node", os.path.join(os.path.dirname(PYTHON_APP), "..", "node", "app.js")]


def test_node_example_sigkill_under_load(supervise):
    sup = supervise(2, command=NODE)
    kill_one_worker_under_load(sup)


def test_node_example_reload_under_load(supervise):
    sup = supervise(2, command=NODE)
    reload_under_load(sup, reloads=1)


def test_supervisor_itself_socket_activated(tmp_path):
    from conftest import Lines
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    port = lsock.getsockname()[1]
    fd = lsock.fileno()
    env = dict(os.environ, LISTEN_FDS="1", LISTEN_FDNAMES="http")
    # As systemd would: the socket at fd 3 and LISTEN_PID naming the supervisor; no --listen.
    proc = subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', binary("loopfleet"), "run", "--workers", "2",
                             "--control", str(tmp_path / "c.sock"), "--", binary("loopfleet-testapp")],
                            env=env, pass_fds=(3,), preexec_fn=lambda: os.dup2(fd, 3), stderr=subprocess.PIPE)
    try:
        log = Lines(proc.stderr)
        log.wait_for(r"ready in", count=2)
        lsock.close()
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", port)) as s:
                assert exchange(s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0].body == b"Hello, World!"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10 * SLOW) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
