"""python3 -m loopfleet uvicorn MODULE:APP [--drain-timeout S] [uvicorn options]
python3 -m loopfleet aiohttp MODULE:APP [--app-dir DIR] [--drain-timeout S]

Runs an unchanged app as a loopfleet worker (see loopfleet/__init__.py)."""
import sys

USAGE = __doc__.split("\n\n")[0]


def main():
    command, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command == "uvicorn":
        from . import run_uvicorn
        run_uvicorn.main(args)
    elif command == "aiohttp":
        from . import run_aiohttp
        run_aiohttp.main(args)
    else:
        print(f"usage: {USAGE.splitlines()[0]}\n       {USAGE.splitlines()[1]}", file=sys.stderr)
        raise SystemExit(2)


main()
