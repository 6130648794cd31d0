"""`--user`: the supervisor binds as root, every child (workers, their offload helpers, the
node's nats-server) runs as the given user; and the runtime directory is refused when another
user could control it (the /tmp/loopfleet-UID that someone else created first)."""
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import Lines, Supervisor, binary, free_port, get, pid_alive, stop_process, wait_until

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="--user and setpriv need root")


def ids(pid):
    """(uids, gids, supplementary groups) from /proc/PID/status."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return [int(x) for x in fields["Uid"]], [int(x) for x in fields["Gid"]], [int(x) for x in fields["Groups"]]


def assert_nobody(pid):
    uids, gids, groups = ids(pid)
    assert uids == [NOBODY] * 4, (pid, uids)  # real, effective, saved, filesystem
    assert gids == [NOBODY] * 4, (pid, gids)
    assert groups == [], (pid, groups)  # none of root's, none at all for nobody


def test_workers_and_helpers_run_as_the_user_serve_reload_and_die_with_the_supervisor(tmp_path):
    # A short --orphan-timeout: workers serve on after a supervisor's death only that long.
    sup = Supervisor(2, ["--user", "nobody", "--orphan-timeout", "1s"], [binary("offload")], tmp=str(tmp_path))
    try:
        slots = sup.status()["slots"]
        helpers = [h["pid"] for s in slots for h in s["helpers"]]
        assert helpers, slots
        for pid in [s["pid"] for s in slots] + helpers:
            assert_nobody(pid)
        assert ids(sup.proc.pid)[0][1] == 0  # the supervisor keeps root: it binds and signals
        r = get(sup, "/hash?mode=process&rounds=1")
        assert r.status == 200, r.body

        old = sup.worker_pids()
        done = sup.cli("reload")
        assert done.returncode == 0 and "serving" in done.stdout, (done.stdout, done.stderr)
        new = sup.worker_pids()
        assert not set(old) & set(new)
        for pid in new:
            assert_nobody(pid)
        assert get(sup, "/hash?mode=process&rounds=1").status == 200

        # Workers running as nobody still watch the root supervisor (a pidfd needs no rights
        # over it) and outlive it by --orphan-timeout only; their helpers go with them.
        victims = new + [h["pid"] for s in sup.status()["slots"] for h in s["helpers"]]
        os.kill(sup.proc.pid, signal.SIGKILL)
        sup.proc.wait()
        wait_until(lambda: not any(pid_alive(p) for p in victims), timeout=10, what="the workers to die with it")
    finally:
        sup.stop()


def test_unknown_user_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([binary("loopfleet"), "run", "--user", "nosuch", "--control", str(tmp_path / "c.sock"), "--",
                        binary("loopfleet-testapp")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr == ("loopfleet: error: --user 'nosuch': no such user (create it, or use a numeric uid:gid)\n")


@pytest.fixture
def reachable_dir():
    """A directory of root's that the user nobody may pass through (0711), for what nats-server opens."""
    d = tempfile.mkdtemp(prefix="loopfleet-user-test-", dir="/tmp")
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_cluster_nats_server_runs_as_the_user_and_jobs_run(tmp_path, reachable_dir):
    if not shutil.which("nats-server"):
        pytest.skip("nats-server is not installed (scripts/install-deps.sh)")
    port = free_port()
    data = os.path.join(reachable_dir, "solo")
    args = ["--user", "nobody", "--cluster", "--node", "solo", "--nats-listen", f"127.0.0.1:{port}", "--cluster-listen",
            f"127.0.0.1:{free_port()}", "--data-dir", data]
    node = Supervisor(1, args, [binary("cluster-example")], tmp=str(tmp_path))
    try:
        node.log.wait_for(r"cluster: node solo joined", timeout=60)
        status = node.status()
        assert_nobody(status["cluster"]["nats_pid"])
        assert_nobody(status["slots"][0]["pid"])
        st = os.lstat(data)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o700)
        conf = os.lstat(os.path.join(data, "nats.conf"))
        assert (conf.st_uid, stat.S_IMODE(conf.st_mode)) == (NOBODY, 0o600)
        assert os.lstat(os.path.join(data, "jetstream")).st_uid == NOBODY  # nats-server wrote its store

        def result():
            r = subprocess.run(["curl", "-s", "-w", " %{http_code}", f"http://127.0.0.1:{node.port}/run?payload=hi"],
                               capture_output=True, text=True, timeout=30)
            return r.stdout if r.stdout.endswith(" 200") else None
        out = wait_until(result, timeout=30, what="a job result")
        assert "done hi on node=solo" in out, out
    finally:
        node.stop()


def test_data_dir_the_user_cannot_reach_is_one_line_and_exit_2(tmp_path):
    # tmp_path is root's 0700: nats-server as nobody could not open its store there.
    r = subprocess.run([binary("loopfleet"), "run", "--user", "nobody", "--cluster", "--nats-listen",
                        f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d"), "--control",
                        str(tmp_path / "c.sock"), "--", binary("loopfleet-testapp")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "nobody (uid 65534) cannot reach it" in lines[0] and "chmod o+x" in lines[0], r.stderr


def test_data_dir_left_by_a_run_without_user_is_refused_with_the_chown(tmp_path, reachable_dir):
    data = os.path.join(reachable_dir, "solo")
    os.mkdir(data, 0o700)  # root's, as a run without --user leaves it

    def run():
        return subprocess.run([binary("loopfleet"), "run", "--user", "nobody", "--cluster", "--nats-listen",
                               f"127.0.0.1:{free_port()}", "--data-dir", data, "--control", str(tmp_path / "c.sock"),
                               "--", binary("loopfleet-testapp")], capture_output=True, text=True, timeout=30)
    r = run()
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "is owned by root (uid 0)" in r.stderr and f"chown -R 65534:65534 {data}" in r.stderr, r.stderr
    # The directory handed over but its store still root's: the same advice.
    os.chown(data, NOBODY, NOBODY)
    os.mkdir(os.path.join(data, "jetstream"))
    r = run()
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "jetstream belongs to uid 0, but nats-server runs as uid 65534" in r.stderr and "chown -R" in r.stderr


# --- the runtime directory, as a user without root ---

AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.fixture
def xdg():
    """An XDG_RUNTIME_DIR of nobody's, as a login would prepare."""
    d = tempfile.mkdtemp(prefix="loopfleet-xdg-", dir="/tmp")
    os.chown(d, NOBODY, NOBODY)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_unprivileged(env, as_user=AS_NOBODY, wait=True):
    name = f"u{os.getpid()}-{time.monotonic_ns()}"
    cmd = as_user + [binary("loopfleet"), "run", "--name", name, "--workers", "1", "--listen",
                     f"127.0.0.1:{free_port()}", "--", binary("loopfleet-testapp")]
    e = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    e.update(env)
    if wait:
        return name, subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=30)
    proc = subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return name, proc


def refused(env, *expected, as_user=AS_NOBODY):
    _, r = run_unprivileged(env, as_user)
    lines = r.stderr.splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("loopfleet: error: runtime directory "), r.stderr
    for e in expected:
        assert e in lines[0], lines[0]
    return lines[0]


def test_runtime_dir_owned_by_another_user_is_refused(xdg):
    os.mkdir(os.path.join(xdg, "loopfleet"), 0o700)  # root's: "another user" to nobody
    line = refused({"XDG_RUNTIME_DIR": xdg}, "is owned by root (uid 0)", "not by nobody (uid 65534)", "rm -r")
    print(line)


def test_runtime_dir_writable_by_others_is_refused(xdg):
    d = os.path.join(xdg, "loopfleet")
    os.mkdir(d)
    os.chmod(d, 0o777)
    os.chown(d, NOBODY, NOBODY)
    print(refused({"XDG_RUNTIME_DIR": xdg}, "is mode 0777", f"chmod 700 {d}"))


def test_runtime_dir_that_is_a_symlink_is_refused(xdg):
    target = os.path.join(xdg, "elsewhere")
    os.mkdir(target, 0o700)
    os.chown(target, NOBODY, NOBODY)
    os.symlink(target, os.path.join(xdg, "loopfleet"))
    print(refused({"XDG_RUNTIME_DIR": xdg}, "is a symbolic link"))


def test_tmp_runtime_dir_created_first_by_another_user_is_refused():
    # The bug this closes: without XDG_RUNTIME_DIR a user's directory is /tmp/loopfleet-UID,
    # and whoever creates it first held the control socket. A uid nobody uses here.
    uid = 54321
    d = f"/tmp/loopfleet-{uid}"
    if os.path.lexists(d):
        pytest.skip(f"{d} exists already")
    os.mkdir(d, 0o777)  # made by root, the "other user", world-writable
    os.chmod(d, 0o777)
    try:
        refused({}, f"runtime directory {d} is owned by root (uid 0)",
                as_user=["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"])
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_fresh_runtime_dir_is_created_0700_with_a_0600_socket(xdg):
    name, proc = run_unprivileged({"XDG_RUNTIME_DIR": xdg}, wait=False)
    log = Lines(proc.stderr)
    try:
        log.wait_for(r"ready in \d+ ms")
        d = os.path.join(xdg, "loopfleet")
        st = os.lstat(d)
        assert stat.S_ISDIR(st.st_mode) and (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o700)
        sock = os.lstat(os.path.join(d, f"{name}.sock"))
        assert stat.S_ISSOCK(sock.st_mode) and (sock.st_uid, stat.S_IMODE(sock.st_mode)) == (NOBODY, 0o600)
        e = dict(os.environ, XDG_RUNTIME_DIR=xdg)
        r = subprocess.run(AS_NOBODY + [binary("loopfleet"), "status", "--name", name], env=e, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 and " ready " in r.stdout, (r.stdout, r.stderr)
    finally:
        stop_process(proc)


def test_cli_refuses_a_runtime_dir_another_user_controls(xdg):
    d = os.path.join(xdg, "loopfleet")
    os.mkdir(d, 0o777)
    os.chmod(d, 0o777)
    e = dict(os.environ, XDG_RUNTIME_DIR=xdg)
    r = subprocess.run(AS_NOBODY + [binary("loopfleet"), "status"], env=e, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "is owned by root (uid 0)" in r.stderr, r.stderr


def test_user_other_than_ourselves_without_root_is_one_line_and_exit_2(xdg):
    e = dict(os.environ, XDG_RUNTIME_DIR=xdg)
    r = subprocess.run(AS_NOBODY + [binary("loopfleet"), "run", "--user", "root", "--", binary("loopfleet-testapp")],
                       env=e, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.startswith("loopfleet: error: --user 'root' needs the supervisor to run as root (it runs as uid "
                               "65534)") and r.stderr.count("\n") == 1, r.stderr
