"""The hello app for the gunicorn peer: aiohttp on uvloop workers (aiohttp.GunicornUVLoopWebWorker)."""
from aiohttp import web


async def hello(request):
    return web.Response(text="Hello, World!")


app = web.Application()
app.router.add_get("/", hello)
