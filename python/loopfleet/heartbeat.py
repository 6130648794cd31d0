"""The heartbeat region a native worker beats into, written from Python.

The supervisor passes a memfd as LOOPFLEET_HEARTBEAT_FD (under --watchdog or --max-requests);
its layout is `heartbeat_region` in src/runtime/heartbeat.hpp and must match it byte for byte.
The supervisor reads it every 50 ms without locks, so each field is written with one aligned
store: ctypes writes a c_uint64 field with a single 8-byte copy, where struct.pack_into into
the mmap would copy byte by byte.
"""
import ctypes
import mmap
import os
import sys

MAGIC = 0x4C464842  # "LFHB"
VERSION = 1


class Layout(ctypes.Structure):
    _fields_ = [
        ("magic", ctypes.c_uint32),
        ("version", ctypes.c_uint32),
        ("beats", ctypes.c_uint64),
        ("last_beat_ns", ctypes.c_int64),  # CLOCK_MONOTONIC, as time.monotonic_ns() on Linux
        ("loop_tid", ctypes.c_int32),
        ("stack_signal", ctypes.c_int32),
        ("lag_p50_us", ctypes.c_uint32),
        ("lag_p99_us", ctypes.c_uint32),
        ("lag_max_us", ctypes.c_uint32),
        # worker_counters (include/loopfleet/runtime.hpp), 8-aligned after the lags
        ("connections", ctypes.c_uint64),
        ("in_flight", ctypes.c_uint64),
        ("requests", ctypes.c_uint64),
    ]


assert ctypes.sizeof(Layout) == 72 and Layout.connections.offset == 48


def open_region():
    """The region named by LOOPFLEET_HEARTBEAT_FD, or None (not given, or another layout)."""
    text = os.environ.pop("LOOPFLEET_HEARTBEAT_FD", None)  # not for processes the app starts
    if not text:
        return None
    fd = int(text)
    try:
        region = mmap.mmap(fd, ctypes.sizeof(Layout))
    except OSError as e:
        print(f"loopfleet: cannot map the heartbeat region: {e}; not beating", file=sys.stderr)
        return None
    finally:
        os.close(fd)
    fields = Layout.from_buffer(region)
    if fields.magic != MAGIC or fields.version != VERSION:
        print("loopfleet: the heartbeat region has another layout (a different loopfleet version?); "
              "not beating", file=sys.stderr)
        return None
    return fields  # from_buffer keeps the mapping alive as long as the fields
