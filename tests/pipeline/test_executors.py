"""edgeq.pipeline.executors: the Task/Outcome contract, in process and in a process pool
(spawned workers, a worker that dies, resources that must not overlap)."""
from __future__ import annotations

import os

import pytest

from edgeq.pipeline.executors import InProcessExecutor, Outcome, PoolExecutor, Task, call_task

F = "pipeline_task_funcs"


def run_all(executor, tasks) -> dict:
    got = {}
    executor.run(tasks, lambda t, o: got.__setitem__(t.key, o))
    executor.close()
    assert set(got) == {t.key for t in tasks}  # every task ends in exactly one Outcome
    return got


def test_call_task_maps_errors():
    assert call_task(Task("a", f"{F}:echo", {"x": 1})) == Outcome(
        True, {"x": 1, "pid": os.getpid()})
    o = call_task(Task("b", f"{F}:bad_input", {"name": "x.npz"}))
    assert o == Outcome(False, None, "data 'x.npz' not found", 2)
    o = call_task(Task("c", f"{F}:boom", {}))
    assert o.ok is False and o.exit_code == 3
    assert o.error == "ValueError: second line"  # one line, never a traceback
    o = call_task(Task("d", f"{F}:no_such_function", {}))
    assert o.ok is False and o.exit_code == 3 and o.error.startswith("AttributeError")
    o = call_task(Task("e", "not-a-function-spec", {}))
    assert o.ok is False and "package.module:function" in o.error


def test_in_process_runs_in_order_here():
    order = []
    ex = InProcessExecutor()
    ex.run([Task(str(i), f"{F}:echo", {"x": i}) for i in range(3)],
           lambda t, o: order.append((t.key, o.value["pid"])))
    assert order == [(str(i), os.getpid()) for i in range(3)]


def test_pool_runs_elsewhere_and_survives_a_dying_worker():
    tasks = [Task("a", f"{F}:echo", {"x": 1}), Task("die", f"{F}:die", {}),
             Task("b", f"{F}:echo", {"x": 2}), Task("bad", f"{F}:bad_input", {"name": "q"}),
             Task("c", f"{F}:echo", {"x": 3})]
    got = run_all(PoolExecutor(2), tasks)
    assert got["die"].ok is False and got["die"].exit_code == 3
    assert got["die"].error.startswith("worker lost:") and "'die'" in got["die"].error
    # Only the task that killed its worker is lost; its neighbours are re-run and finish.
    for k, x in (("a", 1), ("b", 2), ("c", 3)):
        assert got[k].ok and got[k].value["x"] == x and got[k].value["pid"] != os.getpid()
    assert got["bad"] == Outcome(False, None, "data 'q' not found", 2)


def test_pool_never_overlaps_tasks_of_one_device():
    tasks = [Task(f"dev{i}", f"{F}:hold", {"seconds": 0.4}, {"device:pixel-8": 1})
             for i in range(2)] + [Task("free", f"{F}:hold", {"seconds": 0.4})]
    got = run_all(PoolExecutor(2), tasks)
    d0, d1 = sorted((got["dev0"].value, got["dev1"].value), key=lambda v: v["start"])
    assert d0["end"] <= d1["start"]  # one device, one task at a time
    free = got["free"].value  # the task without resources ran beside one of them
    assert free["start"] < max(d0["end"], d1["end"]) and free["end"] > d0["start"]


def test_pool_rejects_zero_jobs():
    with pytest.raises(ValueError):
        PoolExecutor(0)
