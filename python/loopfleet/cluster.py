"""The cluster from Python: calls and durable jobs shared by every node, as asyncio coroutines.

The same semantics as the C++ API (include/loopfleet/cluster.hpp), and the same code: this
module drives the C++ cluster client (the `_loopfleet` extension, over nats.c), which runs on a
thread of its own, so retries, idempotency, in-progress signals, dead letters and the drain
are one implementation. Nothing here blocks the event loop on NATS.

    import loopfleet.cluster as cluster

    @cluster.serve("price")                       # calls: one worker of any node answers
    async def price(payload):                     # bytes in; bytes or str out
        return b"42"

    @cluster.handle_jobs("resize", concurrency=16)
    async def resize(job):                        # job.payload, job.id, job.attempt, job.name, job.key
        ...
        job.result = b"done"                      # sent to a submit_and_wait()

    answer = await cluster.call("price", b"sku-1", timeout=2.0)
    job_id = await cluster.submit("resize", b"img-7", key="img-7")

Register handlers at import time (before the worker starts). Under `loopfleet run --cluster`
(or --join/--nats), which gives every worker LOOPFLEET_NATS_URL, the launchers (`python3 -m
loopfleet uvicorn|aiohttp`) and `loopfleet.Worker` start the client before READY and drain it
on SIGTERM: no job is fetched after the drain begins, the jobs in flight finish and are
acknowledged before the worker exits. Elsewhere `call` and `submit` raise NotConfigured.
Handlers may be coroutines or plain functions; a handler that raises fails that call (the
caller gets HandlerFailed with its message) or that attempt of the job (run again, up to
max_attempts, then moved to the dead letters).
"""
import asyncio
import atexit
import os

__all__ = ["serve", "handle_jobs", "call", "submit", "submit_and_wait", "node_name", "Job", "ClusterError",
           "NotConfigured", "NoResponders", "CallTimeout", "HandlerFailed", "PublishFailed"]


class ClusterError(Exception):
    """A call or submit that did not succeed; `reason` names why, as the C++ cluster_error."""
    reason = "error"


class NotConfigured(ClusterError):
    reason = "not_configured"


class NoResponders(ClusterError):
    reason = "no_responders"


class CallTimeout(ClusterError, TimeoutError):
    reason = "timeout"


class HandlerFailed(ClusterError):
    reason = "handler_failed"


class PublishFailed(ClusterError):
    reason = "publish_failed"


class Job:
    """One delivery of a job to its handler."""
    __slots__ = ("name", "payload", "id", "attempt", "key", "result")

    def __init__(self, name, payload, id, attempt, key=""):
        self.name = name          # the job's name
        self.payload = payload    # bytes, as submitted
        self.id = id              # the stream sequence: unique per job
        self.attempt = attempt    # 1 on first delivery
        self.key = key            # its idempotency key, "" if none; a scheduled job's: "schedule:NAME@<tick ms>"
        self.result = b""         # bytes or str: sent to a submitter that waits for it

    def __repr__(self):
        return f"Job({self.name!r}, id={self.id}, attempt={self.attempt})"


_native = None      # the extension, once loaded
_loop = None        # the asyncio loop the client serves
_started = False


def _load():
    global _native
    if _native is None:
        try:
            import _loopfleet
        except ImportError as e:
            raise NotConfigured(f"loopfleet's cluster extension is not available ({e}): run the worker under "
                                "`loopfleet run`, which puts it on PYTHONPATH, or build loopfleet "
                                "(scripts/build.sh) and add build/lib/loopfleet/python to PYTHONPATH") from None
        _native = _loopfleet
    return _native


def _bytes(value, what):
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if value is None:
        return b""
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def _check_registering(kind, name):
    if _started:
        raise RuntimeError(f"cannot add {kind} {name!r}: the cluster client has started; register handlers at "
                           "import time, before the worker starts")
    if not isinstance(name, str) or not name or any(c in name for c in " .*>"):
        raise ValueError(f"{kind} name {name!r} must be a non-empty string without spaces, '.', '*' or '>'")


def serve(name):
    """Decorator: serve calls named `name` from this worker. The handler gets the payload
    (bytes) and returns bytes or str; it may be a coroutine function."""
    def register(handler):
        _check_registering("call", name)
        _load().serve(name, handler)
        return handler
    return register


def handle_jobs(name, concurrency=64):
    """Decorator: run jobs named `name` on this worker, at most `concurrency` at once. The
    handler gets a Job; it may be a coroutine function. A job runs at least once: it is
    acknowledged only after its handler returned."""
    if int(concurrency) < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")

    def register(handler):
        _check_registering("job handler", name)
        _load().handle_jobs(name, handler, int(concurrency))
        return handler
    return register


def node_name():
    """This node's name (LOOPFLEET_NODE), for handlers that say where they ran."""
    return os.environ.get("LOOPFLEET_NODE", "")


def in_use():
    """Whether this worker is in a cluster (LOOPFLEET_NATS_URL, set by loopfleet run)."""
    return bool(os.environ.get("LOOPFLEET_NATS_URL"))


def start(loop=None):
    """Starts the client on `loop` (the running one by default): connects, subscribes the
    calls served and starts fetching the jobs handled. The launchers call it before READY."""
    global _loop, _started
    if _started:
        return
    native = _load()
    _loop = loop or asyncio.get_running_loop()
    _started = True
    native.start(_loop.call_soon_threadsafe, _settle, _run_call, _run_job, _cancel)
    atexit.register(native.stop)


async def drain():
    """Fetches no more jobs and takes no more calls; returns once the jobs and calls in flight
    have finished and been acknowledged. The launchers await it on SIGTERM."""
    if not _started:
        return
    future = _loop.create_future()
    _native.drain(future)
    await future


def stop():
    """Disconnects (after drain()). Also done at exit."""
    if _started:
        _native.stop()


def _client():
    if not _started:
        if not in_use():
            raise NotConfigured("this worker is not in a cluster: run it under loopfleet run --cluster "
                                "(LOOPFLEET_NATS_URL)")
        start()
    elif asyncio.get_running_loop() is not _loop:
        raise RuntimeError("the cluster client serves the event loop it started on; call it from that loop")
    return _native


async def call(name, payload=b"", timeout=5.0):
    """Calls `name` on one worker of any node; returns its answer (bytes). Raises NoResponders
    at once when nobody serves it, CallTimeout, or HandlerFailed with the remote error."""
    args = name, _bytes(payload, "the payload"), _ms(timeout, "timeout")
    native = _client()
    future = _loop.create_future()
    native.call(*args, future)
    return await future


async def submit(name, payload=b"", key=None, max_attempts=5, time_limit=30.0, retry_for=10.0):
    """Stores a job; returns its id once JetStream has it (replicated). `key`: a second submit
    with the same key within 10 minutes is dropped. `time_limit` (s) bounds each attempt;
    `retry_for` (s) is how long to retry while JetStream cannot take it. Raises PublishFailed."""
    args = (name, _bytes(payload, "the payload"), key or "", _attempts(max_attempts), _ms(time_limit, "time_limit"),
            _ms(retry_for, "retry_for"))
    native = _client()
    future = _loop.create_future()
    native.submit(*args, future)
    return await future


async def submit_and_wait(name, payload=b"", timeout=30.0, key=None, max_attempts=5, time_limit=30.0, retry_for=10.0):
    """Stores a job and waits up to `timeout` (s) for its result (bytes, what the handler set
    as job.result). A timeout here does not cancel the job: it stays durable."""
    args = (name, _bytes(payload, "the payload"), key or "", _attempts(max_attempts), _ms(time_limit, "time_limit"),
            _ms(retry_for, "retry_for"), _ms(timeout, "timeout"))
    native = _client()
    future = _loop.create_future()
    native.submit_and_wait(*args, future)
    return await future


def _ms(seconds, what):
    if not isinstance(seconds, (int, float)) or seconds < 0:
        raise ValueError(f"{what} must be a number of seconds >= 0, not {seconds!r}")
    return int(seconds * 1000)


def _attempts(n):
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"max_attempts must be an integer >= 1, not {n!r}")
    return n


_ERRORS = None


def _error(reason, message):
    global _ERRORS
    if _ERRORS is None:
        by_name = {cls.reason: cls for cls in (NotConfigured, NoResponders, CallTimeout, HandlerFailed, PublishFailed)}
        _ERRORS = {number: by_name[name] for name, number in _native.REASONS.items()}
    return _ERRORS.get(reason, ClusterError)(message)


# --- called on the event loop by the client's thread (through call_soon_threadsafe) ---

def _settle(future, reason, message, value):
    if future.done():  # the awaiting task was cancelled
        return
    if reason < 0:
        future.set_result(value)
    else:
        future.set_exception(_error(reason, message))


def _run_call(handler, payload, token):
    token.task = _loop.create_task(_answer(token, handler, payload))


def _run_job(handler, name, payload, id, attempt, key, token):
    job = Job(name, payload, id, attempt, key)
    # The result is job.result, or what the handler returned when it set none.
    token.task = _loop.create_task(_answer(token, handler, job, result=lambda out: job.result or out))


def _cancel(token):
    task = getattr(token, "task", None)
    if task is not None:
        task.cancel()


async def _answer(token, handler, arg, result=None):
    try:
        out = handler(arg)
        if asyncio.iscoroutine(out) or isinstance(out, asyncio.Future):
            out = await out
        if result is not None:
            out = result(out)
        token.finish(_bytes(out, "a handler's answer"))
    except asyncio.CancelledError:
        token.fail("cancelled")
    except Exception as e:
        token.fail(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
    except BaseException as e:  # SystemExit, KeyboardInterrupt: fail the attempt, then let it end the worker
        token.fail(type(e).__name__)
        raise
    finally:
        token.task = None

