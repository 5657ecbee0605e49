"""Task functions for tests/pipeline/test_executors.py (importable by spawned workers:
they inherit the test process's sys.path)."""
from __future__ import annotations

import os
import time


def echo(x):
    return {"x": x, "pid": os.getpid()}


def bad_input(name):
    from edgeq.errors import BadInput

    raise BadInput(f"data '{name}' not found")


def boom():
    raise ValueError("first line\nsecond line")


def die():
    os._exit(7)  # the worker process vanishes mid-task


def hold(seconds):
    start = time.time()
    time.sleep(seconds)
    return {"start": start, "end": time.time(), "pid": os.getpid()}
