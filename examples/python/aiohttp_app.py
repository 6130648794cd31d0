"""The hello service in aiohttp, unchanged for loopfleet.

    loopfleet run --workers 2 -- python3 -m loopfleet aiohttp aiohttp_app:app --app-dir examples/python
"""
import asyncio
import os
import time

from aiohttp import web


async def hello(request):
    return web.Response(text="Hello, World!")


async def pid(request):
    return web.Response(text=f"{os.getpid()}\n")


async def slow(request):
    ms = int(request.query.get("ms", "1000"))
    await asyncio.sleep(ms / 1000)  # waits without blocking: the loop serves others meanwhile
    return web.Response(text=f"slept {ms} ms\n")


async def block(request):
    ms = int(request.query.get("ms", "1000"))
    print(f"blocking the loop for {ms} ms", flush=True)
    time.sleep(ms / 1000)  # blocks the loop on purpose: the watchdog names this function
    return web.Response(text=f"blocked {ms} ms\n")


app = web.Application()
app.add_routes([web.get("/", hello), web.get("/pid", pid), web.get("/slow", slow),
                web.get("/block", block)])
