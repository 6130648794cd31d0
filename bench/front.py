#!/usr/bin/python3
"""Two nodes behind a balancer, in one run: `loopfleet front` (HAProxy fed by each node's agent
check) against nginx as the balancer (upstream with its default passive checks and retries).
The nodes are the same in both: `loopfleet run --agent-check` with one loopfleet-testapp worker.

  rolling   wrk for 14 s while node A is stopped gracefully (SIGTERM) and started again, then
            node B the same: the failed requests, for GET and for POST;
  kill      wrk for 10 s while node B (supervisor and worker) is SIGKILLed: failed GETs;
  speed     requests per second through the balancer, GET /, 5 s.

    bench/front.py [--bin build/bin]
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadkit import Wrk  # noqa: E402
from supervise import ROOT, free_port, kill_tree, serving, wait_for  # noqa: E402


class Node:
    def __init__(self, args, workdir, port=None, agent=None):
        self.port, self.agent = port or free_port(), agent or free_port()
        name = f"bn{self.port}"
        self.proc = subprocess.Popen(
            [os.path.join(args.bin, "loopfleet"), "run", "--workers", "1", "--listen", f"127.0.0.1:{self.port}",
             "--agent-check", f"127.0.0.1:{self.agent}", "--name", name, "--control",
             os.path.join(workdir, f"{name}.sock"), "--", os.path.join(args.bin, "loopfleet-testapp")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: serving(self.port), 10, "a node")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

    def kill(self):
        kill_tree(self.proc)


class Front:
    name = "loopfleet front (HAProxy)"

    def __init__(self, args, workdir, nodes):
        self.port = free_port()
        cmd = [os.path.join(args.bin, "loopfleet"), "front", "--listen", f"127.0.0.1:{self.port}", "--state-dir",
               workdir, "--name", f"f{self.port}"]
        for n in nodes:
            cmd += ["--server", f"127.0.0.1:{n.port}@{n.agent}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: serving(self.port), 10, "the front")
        time.sleep(2.5)  # both nodes checked up (rise 2 x 1 s)

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(timeout=30)


class Nginx:
    name = "nginx (upstream, defaults)"

    def __init__(self, args, workdir, nodes):
        self.port = free_port()
        w = workdir
        conf = os.path.join(w, f"nginx-{self.port}.conf")
        upstream = "".join(f"    server 127.0.0.1:{n.port};\n" for n in nodes)
        with open(conf, "w") as f:
            f.write(f"""worker_processes auto;
daemon off;
pid {w}/nginx-{self.port}.pid;
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {w}/body; proxy_temp_path {w}/proxy; fastcgi_temp_path {w}/fcgi;
  uwsgi_temp_path {w}/uwsgi; scgi_temp_path {w}/scgi;
  upstream nodes {{
{upstream}    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://nodes;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
""")
        self.proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", w, "-c", conf, "-e", "stderr"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: serving(self.port), 10, "nginx")

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(timeout=30)


def scenario(args, workdir, balancer_cls, kind, script):
    nodes = [Node(args, workdir), Node(args, workdir)]
    lb = balancer_cls(args, workdir, nodes)
    try:
        duration = {"rolling": 14, "kill": 10, "speed": 5}[kind]
        load = Wrk(lb.port, duration=duration, connections=32, threads=1,
                   path="/echo" if script else "/", script=script)
        if kind == "rolling":
            for i in range(2):
                time.sleep(1.5)
                old = nodes[i]
                old.stop()
                nodes[i] = Node(args, workdir, port=old.port, agent=old.agent)
                time.sleep(2.5)  # back in the balancer before the next node goes
        elif kind == "kill":
            time.sleep(3)
            nodes[1].kill()
        return load.result()
    finally:
        lb.stop()
        for n in nodes:
            if n.proc.poll() is None:
                n.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="loopfleet-front-")
    post = os.path.join(workdir, "post.lua")
    with open(post, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = "order=42"\nwrk.headers["Content-Type"] = "text/plain"\n')
    rows = []
    try:
        for cls in (Front, Nginx):
            r = {k: scenario(args, workdir, cls, *v) for k, v in
                 {"get": ("rolling", None), "post": ("rolling", post), "kill": ("kill", None),
                  "speed": ("speed", None)}.items()}
            rows.append((cls.name, r))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("two nodes (1 loopfleet-testapp worker each) behind a balancer, wrk -c32, one 2-core machine")
    print(f"{'balancer':<30} {'rolling GET':>16} {'rolling POST':>16} {'node killed':>16} {'GET req/s':>10}")
    for name, r in rows:
        cell = lambda x: f"{x['failed']}/{x['requests']}"  # noqa: E731
        print(f"{name:<30} {cell(r['get']):>16} {cell(r['post']):>16} {cell(r['kill']):>16} {r['speed']['rps']:>10.0f}")
    print("(failed/total requests: socket errors, timeouts and non-2xx)")


if __name__ == "__main__":
    main()
