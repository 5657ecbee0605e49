"""Task functions for tests/pipeline/test_ray_executor.py, imported by the Ray workers
(the test cluster's nodes get this folder on PYTHONPATH)."""
from __future__ import annotations

import os


def where(tag: str = "") -> dict:
    """Which node and process ran the task, and the devices that node advertises."""
    import ray

    return {"tag": tag, "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "devices": os.environ.get("EDGEQ_RAY_DEVICES")}


def fail(kind: str) -> dict:
    from edgeq.errors import BadInput, BudgetExceeded, RuntimeFailure

    errors = {"bad": BadInput("calib.npz: no array 'x'"),
              "budget": BudgetExceeded("max_size 2MB exceeded"),
              "runtime": RuntimeFailure("the runner crashed"),
              "value": ValueError("not a number")}
    raise errors[kind]


def crash() -> dict:
    """Kill the worker process running this task, as a native crash would."""
    os._exit(1)


def seen_device(device: dict) -> dict:
    """The device entry as the task received it on the worker."""
    return {"device": device}


def hold(marker: str, seconds: float) -> dict:
    """Say it started (a file), then take ``seconds``."""
    import time
    from pathlib import Path

    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return {"held": seconds}


def unpicklable() -> dict:
    """A result Ray cannot send back."""
    import threading

    return {"lock": threading.Lock()}
