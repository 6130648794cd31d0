#!/usr/bin/env python3
"""Replacing the server's own binary under keep-alive load: loopfleet upgrade against nginx's
binary upgrade and gunicorn's, side by side in one run.

For each server: wrk -c64 keep-alive for --duration s; once all 64 connections are up, the
server's own in-place binary upgrade, the way its documentation says to do it:
  loopfleet  `loopfleet upgrade` (the successor must be ready before the old one drains)
  nginx      SIGUSR2 to the master, wait for the new master's pid file, SIGQUIT to the old one
  gunicorn   SIGUSR2 to the master, wait for the new master and its workers, SIGTERM to the old
Reported: failed requests (connect, read, write, timeout errors and non-2xx), whether the
master's pid changed, and the seconds from the trigger until the old master was gone.

    bench/upgrade.py [--workers 2] [--duration 6] [--bin build/bin] [--only loopfleet,nginx]
"""
import argparse
import os
import signal
import subprocess
import time

from loadkit import Wrk, established, pid_alive
from supervise import ROOT, Gunicorn, Loopfleet, LoopfleetShared, Nginx, children, run_each, tree, wait_for


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return 0


def upgrade_loopfleet(s):
    subprocess.run([os.path.join(s.args.bin, "loopfleet"), "upgrade", "--control", s.control], capture_output=True,
                   check=True, timeout=120)
    return s.proc.pid, lambda: s.proc.poll() is not None


class NginxDaemon(Nginx):
    """nginx as its binary upgrade needs it: daemonized. A master whose parent is the one it
    started with ignores SIGUSR2 ("the changing binary signal is ignored"), so under `daemon
    off` it cannot upgrade at all."""
    name = "nginx"

    def command(self):
        cmd = super().command()
        conf = cmd[cmd.index("-c") + 1]
        with open(conf) as f:
            text = f.read().replace("daemon off;\n", "")
        with open(conf, "w") as f:
            f.write(text)
        self.pidfile = os.path.join(self.workdir, f"nginx-{self.port}.pid")
        return cmd

    def master(self):
        return read_pid(self.pidfile)

    def worker_pids(self):
        return children(self.master()) if self.master() else []


def upgrade_nginx(s):
    old = s.master()
    os.kill(old, signal.SIGUSR2)
    wait_for(lambda: read_pid(s.pidfile) not in (0, old), 30, "nginx's new master")
    new = read_pid(s.pidfile)
    wait_for(lambda: len(children(new)) == s.workers, 30, "the new master's workers")
    os.kill(old, signal.SIGQUIT)  # graceful shutdown of the old master and its workers
    return old, lambda: not pid_alive(old)


class GunicornScript(Gunicorn):
    """Started by its console script: a master started as `python3 -m gunicorn` re-executes
    gunicorn/__main__.py by path on SIGUSR2, and the new master then imports gunicorn's own
    `http` package in place of the standard library's (aiohttp fails to import)."""

    def command(self):
        cmd = super().command()
        return ["/usr/bin/gunicorn"] + cmd[3:]


def upgrade_gunicorn(s):
    old = s.proc.pid
    workers = set(children(old))
    s.proc.send_signal(signal.SIGUSR2)
    # The new master is a child of the old one; it is ready once it has its own workers.
    wait_for(lambda: any(len(children(c)) == s.workers for c in set(children(old)) - workers), 60,
             "gunicorn's new master and its workers")
    s.proc.send_signal(signal.SIGTERM)  # graceful shutdown of the old master and its workers
    return old, lambda: s.proc.poll() is not None


UPGRADES = {"loopfleet": upgrade_loopfleet, "loopfleet-shared": upgrade_loopfleet, "nginx": upgrade_nginx,
            "gunicorn": upgrade_gunicorn}


def run_upgrade(cls, args, workdir):
    s = cls(args, args.workers, workdir)
    try:
        load = Wrk(s.port, args.duration)
        root = s.master() if hasattr(s, "master") else s.proc.pid
        wait_for(lambda: established(tree(root), s.port) == 64, 10, "64 connections")
        began = time.monotonic()
        old, gone = UPGRADES[cls.name](s)
        wait_for(gone, 60, f"{cls.name}'s old master to exit")
        took = time.monotonic() - began
        r = load.result()
        return {"failed": r["failed"], "requests": r["requests"], "connect": r["connect"], "read": r["read"],
                "non2xx": r["non2xx"], "old_gone": not pid_alive(old), "took_s": took}
    finally:
        if hasattr(s, "master") and s.master():
            os.kill(s.master(), signal.SIGTERM)  # the daemon left our process group
        # The new master is in the old one's process group (start_new_session made it ours).
        try:
            os.killpg(s.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.killpg(s.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.killpg(s.proc.pid, signal.SIGKILL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=int, default=6)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--only", default="", help="comma-separated subset: loopfleet,loopfleet-shared,nginx,gunicorn")
    args = ap.parse_args()
    rows = run_each([Loopfleet, LoopfleetShared, NginxDaemon, GunicornScript], args.only, "loopfleet-upgrade-",
                    lambda cls, workdir: run_upgrade(cls, args, workdir))
    print(f"binary upgrade under wrk -t2 -c64 keep-alive, {args.workers} workers, {args.duration} s; "
          "client and servers share 2 cores")
    print(f"{'server':<17} {'requests':>9} {'failed':>7} {'(connect/read/non-2xx)':>23} {'old master gone':>16} "
          f"{'took s':>7}")
    for name, r in rows:
        detail = f"{r['connect']}/{r['read']}/{r['non2xx']}"
        print(f"{name:<17} {r['requests']:>9} {r['failed']:>7} {detail:>23} {str(r['old_gone']):>16} "
              f"{r['took_s']:>7.2f}")


if __name__ == "__main__":
    main()
