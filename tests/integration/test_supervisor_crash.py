"""A supervisor that dies (SIGKILL) costs no queued connection: its keeper holds every socket
until the same `loopfleet run` is started again, which adopts them; its workers drain what
they have. Nobody coming back, the keeper lets go after --orphan-timeout and nothing is left."""
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import (SLOW, Knocker, Supervisor, Wrk, binary, established_connections, free_port, jobs_done, pid_alive,
                      wait_until)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def all_ready(sup):
    r = sup.cli("status", "--json", timeout=10)
    if r.returncode != 0:
        return None
    import json
    st = json.loads(r.stdout)
    ok = len(st["slots"]) == sup.workers and all(s["state"] == "ready" for s in st["slots"])
    return st if ok else None


# How long the node has no supervisor: systemd's RestartSec= is 100 ms by default; a person
# takes longer. Meanwhile new connections wait in the kept queues.
RESTART_DELAY = 0.5


def kill_and_restart_under_load(sup):
    """SIGKILL of the supervisor while wrk keeps 64 keep-alive connections busy and a knocker
    opens new ones; then, RESTART_DELAY later, the same command again. Returns what status said
    before, the old workers, wrk's result, the knocker, status after, the seconds from the kill
    until the new supervisor had every slot ready, and how many connections the knocker opened
    in that gap."""
    before = sup.status()
    workers = sup.worker_pids()
    assert before["keeper"] and pid_alive(before["keeper"]), before
    load = Wrk(sup.port, duration=6, connections=64)
    wait_until(lambda: sum(established_connections(p, sup.port) for p in workers) == 64, what="64 connections")
    knock = Knocker(sup.port, timeout=20 * SLOW)
    time.sleep(1)  # some load before the kill: the gap is what is measured
    killed = time.monotonic()
    os.kill(sup.proc.pid, signal.SIGKILL)
    sup.proc.wait()
    time.sleep(RESTART_DELAY)
    restarted = time.monotonic()
    sup.restart(wait_ready=False)
    st = wait_until(lambda: all_ready(sup), timeout=30, what="the new supervisor's workers ready")
    owned_at = time.monotonic()
    r = load.result()
    knock.stop()
    in_gap = sum(1 for t in knock.began if killed <= t <= owned_at)
    assert in_gap > 0, "no new connection was opened while the node had no supervisor"
    # The dead supervisor's workers served on: connections opened after the kill were answered
    # before anyone started a new supervisor.
    orphans_served = sum(1 for began, done in knock.served if killed <= began and done < restarted)
    assert orphans_served > 0, "nothing was answered between the kill and the restart"
    return before, workers, r, knock, st, owned_at - killed, in_gap


PYTHON = "/usr/bin/python3"
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples",
                        "python")
WORKERS = {
    "reuseport": (["--distribution", "reuseport"], None),
    "shared": (["--distribution", "shared"], None),
    # The Python launchers outlive it too (python/loopfleet/life.py); a patient watchdog, as
    # in test_python.py: under wrk an interpreter may go unscheduled past 1 s.
    "fastapi": (["--watchdog", "5"], [PYTHON, "-m", "loopfleet", "uvicorn", "fastapi_app:app", "--app-dir", EXAMPLES,
                                      "--no-access-log"]),
    "aiohttp": (["--watchdog", "5"], [PYTHON, "-m", "loopfleet", "aiohttp", "aiohttp_app:app", "--app-dir",
                                      EXAMPLES]),
}


@pytest.mark.parametrize("mode", WORKERS)
def test_a_killed_supervisor_started_again_under_load_fails_no_request(supervise, mode):
    args, command = WORKERS[mode]
    sup = supervise(2, args, command=command)
    before, workers, r, knock, after, owned, gap = kill_and_restart_under_load(sup)
    print(f"supervisor SIGKILL ({mode}): restarted {RESTART_DELAY} s after the kill, every slot ready "
          f"{owned:.2f} s after it ({gap} new connections opened meanwhile); wrk {r['requests']} requests, "
          f"failed {r['failed']} (connect {r['connect']}, read {r['read']}, write {r['write']}, "
          f"timeout {r['timeout']}), non-2xx {r['non2xx']}; new connections: {knock.answered} answered, "
          f"{knock.refused} refused, {len(knock.failed)} failed")
    sup.log.wait_for(r"adopted \d+ sockets from the keeper")
    sup.log.wait_for(r"every slot serves: the dead supervisor's workers drain")
    assert r["requests"] > 0 and knock.answered > 0, r["text"]
    assert knock.refused == 0 and not knock.failed, knock.failed
    assert r["failed"] == 0, r["text"]
    # The same keeper serves the new supervisor; its workers are new, the dead one's are gone.
    assert after["keeper"] == before["keeper"]
    assert after["pid"] != before["pid"] and after["generation"] == before["generation"] + 1
    assert not set(workers) & {s["pid"] for s in after["slots"]}
    wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=30, what="the dead supervisor's workers gone")
    # It is a whole instance again: a clean stop takes the keeper along.
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(timeout=60 * SLOW) == 0
    assert not pid_alive(after["keeper"]) and not os.path.exists(sup.control + ".keeper")
    assert not os.path.exists(sup.control)


def test_under_systemd_socket_activate_the_activated_socket_is_kept_too(tmp_path):
    """systemd-socket-activate binds the port and execs the supervisor in its own process, which
    serves the inherited socket (no --listen). Killed, it is started again as a unit's ExecStart
    would be, without the activator (which can bind only once): the socket is adopted from the
    keeper, and not one connection is refused."""
    port = free_port()
    sup = Supervisor(2, [], None, tmp=str(tmp_path), port=port, wait_ready=False, listen=False,
                     wrapper=["systemd-socket-activate", "-l", f"127.0.0.1:{port}"])
    try:
        # The activator execs us at the first connection; that one is answered once we serve.
        sup.log.wait_for(r"Listening on 127\.0\.0\.1:\d+ as 3")
        with socket.create_connection(("127.0.0.1", port), timeout=30 * SLOW) as s:
            s.sendall(REQUEST)
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        wait_until(lambda: all_ready(sup), timeout=30, what="the activated supervisor ready")
        before, workers, r, knock, after, owned, gap = kill_and_restart_under_load(sup)
        print(f"supervisor SIGKILL under systemd-socket-activate: every slot ready {owned:.2f} s after the kill "
              f"({gap} new connections opened meanwhile); "
              f"wrk {r['requests']} requests, failed {r['failed']}; new connections: {knock.answered} answered, "
              f"{knock.refused} refused, {len(knock.failed)} failed")
        assert knock.refused == 0 and not knock.failed, knock.failed
        assert r["failed"] == 0, r["text"]
        assert after["listen"] == before["listen"], (before["listen"], after["listen"])
        # The default --listen (127.0.0.1:8080) was not bound beside the adopted socket.
        assert "8080" not in after["listen"], after["listen"]
    finally:
        sup.stop()


def get_pid(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) as s:
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data
    return int(data.split(b"\r\n\r\n", 1)[1])


def test_orphaned_workers_serve_on_then_nobody_coming_back_nothing_is_left(supervise):
    sup = supervise(2, ["--orphan-timeout", f"{int(3 * SLOW)}s"])
    st = sup.status()
    keeper, workers = st["keeper"], [s["pid"] for s in st["slots"]]
    os.kill(sup.proc.pid, signal.SIGKILL)
    sup.proc.wait()
    # With no supervisor (their log lines went to it), its workers still answer new connections.
    served_by = {get_pid(sup.port) for _ in range(20)}
    assert served_by <= set(workers), (served_by, workers)
    wait_until(lambda: not pid_alive(keeper), timeout=30, what="the keeper to exit after --orphan-timeout")
    wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=30, what="the workers to drain and exit")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", sup.port), timeout=5)
    assert not os.path.exists(sup.control + ".keeper")
    # And the name is free: a fresh start binds anew.
    sup.restart()
    assert not any("adopted" in l for l in sup.log.lines)
    assert sup.status()["keeper"]


def test_a_killed_keeper_is_replaced_and_the_next_crash_is_still_survived(supervise):
    sup = supervise(2)
    first = sup.status()["keeper"]
    os.kill(first, signal.SIGKILL)
    sup.log.wait_for(r"the socket keeper \(pid \d+\) is gone; starting another")
    second = wait_until(lambda: (lambda k: k if k and k != first else None)(sup.status()["keeper"]), timeout=10,
                        what="a new keeper")
    assert pid_alive(second)
    workers = sup.worker_pids()
    os.kill(sup.proc.pid, signal.SIGKILL)
    sup.proc.wait()
    with socket.create_connection(("127.0.0.1", sup.port), timeout=10 * SLOW) as waiting:
        waiting.sendall(REQUEST)
        sup.restart()
        waiting.settimeout(30 * SLOW)
        assert waiting.recv(4096).startswith(b"HTTP/1.1 200")
    assert sup.status()["keeper"] == second
    wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=30, what="the old workers gone")


def test_orphan_timeout_zero_runs_no_keeper_and_a_bad_value_is_one_line(supervise, tmp_path):
    sup = supervise(1, ["--orphan-timeout", "0"])
    assert sup.status()["keeper"] is None and not sup.keeper_pids()
    r = subprocess.run([binary("loopfleet"), "run", "--orphan-timeout", "soon", "--control", str(tmp_path / "c.sock"),
                        "--", binary("loopfleet-testapp")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--orphan-timeout" in r.stderr, r.stderr


def test_after_an_upgrade_the_successor_owns_the_same_keeper(supervise, tmp_path):
    sup = supervise(2)
    before = sup.status()
    done = sup.cli("upgrade", timeout=120)
    assert done.returncode == 0, done.stderr
    assert sup.proc.wait(timeout=60 * SLOW) == 0
    after = sup.status()
    successor = after["pid"]
    try:
        assert after["keeper"] == before["keeper"] and pid_alive(after["keeper"])
        # The successor dies: its keeper held on for it, as for any supervisor.
        os.kill(successor, signal.SIGKILL)
        wait_until(lambda: not pid_alive(successor), timeout=10, what="the successor dead")
        sup.restart()
        assert sup.status()["keeper"] == before["keeper"]
        sup.log.wait_for(r"adopted \d+ sockets from the keeper")
    finally:
        if pid_alive(successor):
            os.kill(successor, signal.SIGKILL)


def test_a_cluster_node_whose_supervisor_is_killed_loses_no_job(tmp_path):
    """One node with its own nats-server: the supervisor is SIGKILLed during a stream of jobs;
    its nats-server stops (its parent-death signal) and the supervisor started again runs its
    own on the same ports and store once that one has exited. The dead one's workers serve on
    meanwhile and reconnect. Every job submitted before, during and after completes."""
    port = free_port()
    journal = tmp_path / "jobs-done"
    node = Supervisor(2, ["--cluster", "--node", "solo", "--nats-listen", f"127.0.0.1:{port}", "--data-dir",
                          str(tmp_path / "solo")], [binary("cluster-example")], tmp=str(tmp_path),
                      env={"JOBS_DONE_FILE": str(journal)})
    try:
        node.log.wait_for(r"cluster: node solo joined", timeout=60)
        submitter = subprocess.Popen([binary("loopfleet"), "job", "submit", "work", "crash:200", "--count", "800",
                                      "--retry-for", f"{int(120 * SLOW)}s", "--nats", f"nats://127.0.0.1:{port}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: len(jobs_done(journal)) >= 50, timeout=60, what="50 jobs done")
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait()
        node.restart(wait_ready=False)
        # Its nats-server may still be stopping (then ours waits for it) or already gone.
        node.log.wait_for(r"cluster: started nats-server pid \d+ for node solo", timeout=60)
        out, err = submitter.communicate(timeout=180 * SLOW)
        assert submitter.returncode == 0, err
        assert "stored 800 job(s)" in out, out
        wait_until(lambda: len({p for p, _ in jobs_done(journal)}) >= 800, timeout=180, what="800 jobs done")
        assert {p for p, _ in jobs_done(journal)} == {f"crash:200-{i}" for i in range(800)}
        status = node.status()
        assert status["cluster"]["nats_ready"], status["cluster"]
        print(f"cluster node's supervisor killed: 800 jobs all done, {len(jobs_done(journal)) - 800} run twice")
    finally:
        node.stop()
