"""Calls and durable jobs across nodes from Python: the Python twin of examples/cluster (same
routes, same job and call names, same output), so Python and C++ workers call each other and
take each other's jobs. An aiohttp app, run on every node with

    loopfleet run --cluster --workers 2 -- python3 -m loopfleet aiohttp cluster_app:app --app-dir examples/python

    GET /submit?n=N&key=K   submits N "work" jobs (idempotency key K-i when K is given; ms=MS
                            makes each take MS ms, size=BYTES pads its payload, retry_ms sets
                            how long a submit retries while JetStream cannot store it)
    GET /call               calls "whoami" on some worker of some node (C++ or Python)
    GET /relay              calls "relay", which a C++ worker serves with a coroutine that
                            itself calls "whoami"
    GET /run?payload=P      submits one job and waits for its result
    GET /call-rtt?n=N       N sequential "whoami" calls from this worker: p50/p99 in us, as JSON

Each job prints "job-done <payload> <id> node=<node> pid=<pid> attempt=<n>" and appends it to
the file named by JOBS_DONE_FILE, if set, as the C++ example does.
"""
import asyncio
import os
import re
import time

from aiohttp import web

import loopfleet.cluster as cluster


def where():
    return f"node={cluster.node_name()} pid={os.getpid()}"


@cluster.serve("whoami")
def whoami(payload):
    return where()


_journal = os.open(os.environ["JOBS_DONE_FILE"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644) \
    if os.environ.get("JOBS_DONE_FILE") else -1


def shown(payload):
    return payload if len(payload) <= 64 else payload[:16] + "..." + payload[-32:]


@cluster.handle_jobs("work")
async def work(job):
    payload = job.payload.decode()
    if payload.startswith("fail"):
        raise RuntimeError("asked to fail")
    if ms := re.match(r"[^:]*:(\d+)", payload):  # "label:MS..." takes MS ms, without blocking the loop
        await asyncio.sleep(int(ms.group(1)) / 1000)
    line = f"job-done {shown(payload)} {job.id} {where()} attempt={job.attempt}\n"
    print(line, end="", flush=True)
    if _journal >= 0:
        os.write(_journal, line.encode())  # one write with O_APPEND: lines never interleave
    job.result = f"done {payload} on {where()}"


@cluster.handle_jobs("sleepy")
async def sleepy(job):
    """Sleeps for as many ms as its payload says: past its time limit, the task is cancelled."""
    try:
        await asyncio.sleep(int(job.payload) / 1000)
    except asyncio.CancelledError:
        print(f"sleepy {job.id} cancelled at attempt {job.attempt}", flush=True)
        raise
    print(f"sleepy {job.id} woke", flush=True)


@cluster.handle_jobs("noop", concurrency=256)
async def noop(job):
    pass  # for benchmarks: what is measured is the job system


async def submit(request):
    q = request.query
    n, key, ms = int(q.get("n", 1)), q.get("key", ""), q.get("ms", "")
    padding = "x" * int(q.get("size", 0))
    retry_for = int(q.get("retry_ms", 10000)) / 1000
    last, stored = 0, 0
    try:
        for i in range(n):
            payload = f"{padding}job-{i}" + (f":{ms}" if ms else "")
            last = await cluster.submit("work", payload, key=f"{key}-{i}" if key else None, retry_for=retry_for)
            stored += 1
    except cluster.ClusterError as e:
        return web.Response(text=f"{e} ({stored} of {n} stored before it)\n", status=503)
    return web.Response(text=f"submitted {n}, last id {last}\n")


async def run_job(request):
    try:
        out = await cluster.submit_and_wait("work", request.query.get("payload", ""))
        return web.Response(text=out.decode() + "\n")
    except cluster.ClusterError as e:
        return web.Response(text=f"{e}\n", status=504)


def calling(name):
    async def handler(request):
        try:
            return web.Response(text=(await cluster.call(name, b"", timeout=2.0)).decode() + "\n")
        except cluster.ClusterError as e:
            return web.Response(text=f"{e}\n", status=503)
    return handler


async def call_rtt(request):
    n = max(10, int(request.query.get("n", 1000)))
    us = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            await cluster.call("whoami", b"", timeout=2.0)
            us.append((time.perf_counter() - t0) * 1e6)
    except cluster.ClusterError as e:
        return web.Response(text=f"{e}\n", status=503)
    us.sort()
    return web.json_response({"p50_us": round(us[n // 2], 1), "p99_us": round(us[n * 99 // 100], 1), "calls": n})


async def hello(request):
    return web.Response(text="Hello, World!")


app = web.Application()
app.router.add_get("/", hello)
app.router.add_get("/submit", submit)
app.router.add_get("/call", calling("whoami"))
app.router.add_get("/relay", calling("relay"))
app.router.add_get("/call-nobody", calling("nobody-serves-this"))
app.router.add_get("/run", run_job)
app.router.add_get("/call-rtt", call_rtt)
