"""The hello app for the gunicorn peer: aiohttp on uvloop workers (aiohttp.GunicornUVLoopWebWorker).
/pid names the worker; /block?ms=N blocks its event loop, for the watchdog comparison."""
import os
import time

from aiohttp import web


async def hello(request):
    return web.Response(text="Hello, World!")


async def pid(request):
    return web.Response(text=f"{os.getpid()}\n")


async def block(request):
    ms = int(request.query.get("ms", "1000"))
    time.sleep(ms / 1000)  # a synchronous call on the loop, on purpose
    return web.Response(text=f"blocked {ms} ms\n")


app = web.Application()
app.router.add_get("/", hello)
app.router.add_get("/pid", pid)
app.router.add_get("/block", block)
