"""How the pipeline's tasks run: in this process, in a local process pool, or (engineer D's
``edgeq.pipeline.ray_executor.RayExecutor``) on a Ray cluster.

A :class:`Task` names an importable function and plain keyword arguments, so any executor
can ship it anywhere; the function returns a JSON-serialisable dict. Executors never raise
for a task failure: each task ends in exactly one :class:`Outcome`, handed to ``on_done`` in
the calling thread, where the pipeline merges it into report.json (its resume state).

Failure mapping (shared by every executor):

- the task raised an ``EdgeqError`` -> ``Outcome(False, error=str(e), exit_code=e.exit_code)``
- any other exception -> ``Outcome(False, error="TypeName: message", exit_code=3)``
- the process running it died -> ``Outcome(False, error="worker lost: ...", exit_code=3)``
"""
from __future__ import annotations

import importlib
import traceback
from dataclasses import dataclass, field
from typing import Callable, Protocol


@dataclass(frozen=True)
class Task:
    """One unit of pipeline work."""

    key: str
    """Unique within a run, e.g. ``build/int8/onnx-xnnpack`` or
    ``profile/int8/onnx-xnnpack/pixel-8``."""
    func: str
    """``package.module:function``, importable on any worker host."""
    kwargs: dict = field(default_factory=dict)
    """Plain picklable data only (str/int/float/bool/list/dict/None)."""
    resources: dict = field(default_factory=dict)
    """Extra resources the task needs, e.g. ``{"device:pixel-8": 1}``; ``{}`` means it may
    run anywhere (export, evaluation, local profiling and estimates)."""


@dataclass
class Outcome:
    """How one task ended."""

    ok: bool
    value: object = None
    """The JSON-serialisable dict the function returned."""
    error: str | None = None
    """One line when not ok."""
    exit_code: int = 0
    """edgeq exit code of the failure (``EdgeqError.exit_code``; 3 otherwise)."""


class Executor(Protocol):
    def run(self, tasks: list[Task], on_done: Callable[[Task, Outcome], None]) -> None:
        """Run independent tasks; call ``on_done`` in the calling process/thread as each
        finishes. Never raises for a task failure."""

    def close(self) -> None: ...


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def resolve(func: str) -> Callable:
    """``package.module:function`` -> the function."""
    module, _, name = func.partition(":")
    if not module or not name:
        raise ValueError(f"task function '{func}' is not 'package.module:function'")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def call_task(task: Task) -> Outcome:
    """Import ``task.func``, call it with ``task.kwargs``, and wrap the result or the error
    as an :class:`Outcome`. Never raises (except KeyboardInterrupt / SystemExit)."""
    from edgeq.errors import EdgeqError

    try:
        value = resolve(task.func)(**task.kwargs)
    except EdgeqError as e:
        return Outcome(False, error=_one_line(str(e)) or type(e).__name__,
                       exit_code=e.exit_code)
    except Exception as e:  # noqa: BLE001 -- every task failure becomes an Outcome
        msg = _one_line(str(e))
        if not msg:  # e.g. a bare AssertionError: say where it came from
            tb = traceback.extract_tb(e.__traceback__)
            msg = f"at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""
        return Outcome(False, error=f"{type(e).__name__}: {msg}".rstrip(": "), exit_code=3)
    return Outcome(True, value=value)


class InProcessExecutor:
    """Runs tasks one after another in this process (the default)."""

    def run(self, tasks: list[Task], on_done: Callable[[Task, Outcome], None]) -> None:
        for task in tasks:
            on_done(task, call_task(task))

    def close(self) -> None:
        pass


class PoolExecutor:
    """Runs tasks in ``jobs`` local worker processes (``spawn`` start method: torch and
    ``fork`` do not mix).

    Tasks that ask for the same resource (``{"device:pixel-8": 1}``) never run at the same
    time (each resource has capacity 1 unless ``capacity`` says otherwise). When a worker
    dies, the pool breaks and every task in flight is lost with it; those tasks are then
    re-run one at a time in a fresh single-worker pool, so only the task that really kills
    its worker ends as "worker lost" and innocent neighbours still finish."""

    def __init__(self, jobs: int, capacity: dict | None = None, start_method: str = "spawn"):
        if jobs < 1:
            raise ValueError("jobs must be >= 1")
        self.jobs = jobs
        self.capacity = dict(capacity or {})
        self.start_method = start_method
        self._pool = None

    def _new_pool(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=workers,
                                   mp_context=multiprocessing.get_context(self.start_method))

    def _fits(self, task: Task, used: dict) -> bool:
        return all(used.get(r, 0) + n <= self.capacity.get(r, 1)
                   for r, n in task.resources.items())

    def run(self, tasks: list[Task], on_done: Callable[[Task, Outcome], None]) -> None:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        pending = list(tasks)
        used: dict = {}
        running: dict = {}  # future -> task
        lost: list[Task] = []
        if self._pool is None:
            self._pool = self._new_pool(self.jobs)
        try:
            while pending or running:
                broken = False
                for task in list(pending):
                    if len(running) >= self.jobs or broken:
                        break
                    if not self._fits(task, used):
                        continue
                    try:
                        fut = self._pool.submit(call_task, task)
                    except BrokenProcessPool:
                        broken = True
                        break
                    pending.remove(task)
                    running[fut] = task
                    for r, n in task.resources.items():
                        used[r] = used.get(r, 0) + n
                if not running:
                    if broken:  # nothing in flight but the pool is dead: start afresh
                        self._pool.shutdown(wait=False, cancel_futures=True)
                        self._pool = self._new_pool(self.jobs)
                        continue
                    # every pending task needs a resource that is over capacity by itself
                    for task in pending:
                        on_done(task, Outcome(False, error=f"needs {task.resources}, more "
                                              f"than this executor has", exit_code=3))
                    return
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    task = running.pop(fut)
                    for r, n in task.resources.items():
                        used[r] -= n
                    try:
                        outcome = fut.result()
                    except BrokenProcessPool:
                        lost.append(task)
                        broken = True
                        continue
                    except Exception as e:  # e.g. a result that does not pickle
                        outcome = Outcome(False, error=f"{type(e).__name__}: "
                                          f"{_one_line(str(e))}", exit_code=3)
                    on_done(task, outcome)
                if broken:
                    # the whole pool is gone: collect the rest of what was in flight
                    for fut, task in list(running.items()):
                        lost.append(task)
                        for r, n in task.resources.items():
                            used[r] -= n
                    running.clear()
                    self._pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._new_pool(self.jobs)
            for task in lost:
                on_done(task, self._run_isolated(task))
        except BaseException:
            self.close()
            raise

    def _run_isolated(self, task: Task) -> Outcome:
        from concurrent.futures.process import BrokenProcessPool

        pool = self._new_pool(1)
        try:
            return pool.submit(call_task, task).result()
        except BrokenProcessPool:
            return Outcome(False, error=f"worker lost: the process running '{task.key}' "
                           "died (killed, out of memory, or a native crash)", exit_code=3)
        except Exception as e:
            return Outcome(False, error=f"{type(e).__name__}: {_one_line(str(e))}",
                           exit_code=3)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
