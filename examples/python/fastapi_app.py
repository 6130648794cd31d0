"""The hello service in FastAPI, unchanged for loopfleet: the launcher runs it on uvicorn.

    loopfleet run --workers 2 -- python3 -m loopfleet uvicorn fastapi_app:app --app-dir examples/python
"""
import asyncio
import os
import time

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.get("/", response_class=PlainTextResponse)
async def hello():
    return "Hello, World!"


@app.get("/pid", response_class=PlainTextResponse)
async def pid():
    return f"{os.getpid()}\n"


@app.get("/slow", response_class=PlainTextResponse)
async def slow(ms: int = 1000):
    await asyncio.sleep(ms / 1000)  # waits without blocking: the loop serves others meanwhile
    return f"slept {ms} ms\n"


@app.get("/block", response_class=PlainTextResponse)
async def block(ms: int = 1000):
    # A synchronous call in an async handler blocks the whole loop: the watchdog names this
    # function, steers new connections to the other workers and replaces this one.
    print(f"blocking the loop for {ms} ms", flush=True)
    time.sleep(ms / 1000)
    return f"blocked {ms} ms\n"
