"""The Celery peer for bench/jobs.py: Redis broker, default settings (acks early, prefetch 4).
noop marks itself done in a Redis set; slow does the same after 20 ms; echo returns its input
(for the call round trip, through the Redis result backend)."""
import os
import time

import redis
from celery import Celery

URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
app = Celery("bench", broker=URL, backend=URL)
done = redis.Redis.from_url(URL)


@app.task
def noop(i):
    done.sadd("done", i)


@app.task
def slow(i):
    time.sleep(0.02)
    done.sadd("done", i)


@app.task
def echo(x):
    return x


# bench/workflows.py: a chain of steps, the peer of a loopfleet workflow of steps. Step i adds
# i*i to what the previous one returned; the last marks its chain done.
@app.task
def step(prev, i, chain_id=None):
    total = prev + i * i
    if chain_id is not None:
        done.sadd("chains", chain_id)
    return total


# One chain of N steps, each recording when it ran: the gaps are the per-step overhead.
@app.task
def tick(prev, i):
    done.rpush("ticks", repr(time.time()))
    return prev
