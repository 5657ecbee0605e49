"""Run ``edgeq run``'s tasks on an existing Ray cluster (``edgeq run PIPELINE --ray ADDRESS``;
Ray is the optional extra ``edgeq[ray]``).

The cluster:

- a head node anywhere: ``ray start --head --port=6379``;
- one Ray worker on every host with devices attached, started with ``edgeq ray-worker
  --address HEAD:6379 --device NAME=SPEC ...`` (SPEC: ``local`` | ``adb[:SERIAL]`` |
  ``ssh://USER@HOST[:PORT]``). It runs ``ray start`` with each device as a custom resource
  ``device:NAME`` of capacity 1 (one profile at a time per device) and the NAME -> SPEC map
  in the worker's environment (``$EDGEQ_RAY_DEVICES``, JSON), so a profile task on that host
  knows how to reach the device;
- hosts without devices join with a plain ``ray start --address HEAD:6379``.

Scheduling: each task asks for one CPU plus its ``Task.resources``: a profile on a device
entry ``{device: ..., name: pixel-8}`` asks for ``device:pixel-8`` and so runs on the host
that advertises it, where the worker's own SPEC for ``pixel-8`` replaces the pipeline's
(``local`` there means "measure on that host"); builds, evaluations and estimates run on
any node; a ``local`` profile runs on the node of the host that runs ``edgeq run`` (its
figures are that host's, as without Ray). A measured profile's ``notes`` name the node
that took it. A task needing a resource no node advertises fails at once with a one-line
reason instead of waiting forever, and so does a waiting task whose node leaves the
cluster. Results come back to the driver, which merges them into the one report.

Failures: a task's own error arrives as its Outcome (``call_task`` runs on the worker), so
an ``EdgeqError`` keeps its exit code. A worker process or node lost mid-task (killed, out
of memory, a native crash, the host went away) ends that task as ``worker lost: ...``
(exit 3) and the other tasks go on; tasks are not retried (``max_retries=0``), so a lost
worker is reported, not hidden.

Files: task arguments carry artifact paths, not bytes. The run's output folder (and the
model and data files) must be at the same path on every node: a shared filesystem (NFS,
or one machine). Each task runs in the driver's working directory when that directory
exists on the node, so relative paths resolve as on the driver. Every node runs the same
Python, Ray and edgeq versions (Ray refuses a mismatch)."""
from __future__ import annotations

import json
import os
import re
import socket
import time
from typing import Callable

from edgeq.errors import BadInput, EdgeqError, RuntimeFailure
from edgeq.pipeline.executors import Outcome, Task

ENV_DEVICES = "EDGEQ_RAY_DEVICES"
"""JSON object NAME -> SPEC, set for a worker node's processes by ``edgeq ray-worker``."""
DEVICE_PREFIX = "device:"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ADDRESS = re.compile(r"(?:ray://)?(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9._-]+):(?P<port>\d+)")
_LOST = ("WorkerCrashedError", "NodeDiedError", "ActorDiedError", "ObjectLostError",
         "OwnerDiedError", "ObjectFetchTimedOutError", "ObjectReconstructionFailedError",
         "ObjectFreedError", "TaskCancelledError", "OutOfMemoryError", "LocalRayletDiedError")


def _first_line(text) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


# -- the worker side -------------------------------------------------------------------------
def worker_devices() -> dict:
    """This node's NAME -> SPEC map (``$EDGEQ_RAY_DEVICES``), ``{}`` when it has none."""
    raw = os.environ.get(ENV_DEVICES)
    if not raw:
        return {}
    try:
        found = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def on_this_worker(task: Task) -> Task:
    """``task`` with its device entry (``kwargs["device"]``, as ``edgeq.pipeline.tasks``
    takes it) pointed at this node's own SPEC for the device it was scheduled for."""
    mine = worker_devices()
    dev = task.kwargs.get("device")
    names = [r[len(DEVICE_PREFIX):] for r in task.resources if r.startswith(DEVICE_PREFIX)]
    if not isinstance(dev, dict) or not names or names[0] not in mine:
        return task
    spec = mine[names[0]]
    dev = dict(dev, spec=spec, kind="local" if spec == "local" else "device")
    return Task(task.key, task.func, dict(task.kwargs, device=dev), task.resources)


def run_on_worker(task: Task, cwd: str | None = None) -> dict:
    """Runs inside a Ray worker: the task through ``call_task`` (so its errors are already
    an Outcome), plus where it ran."""
    from edgeq.pipeline.executors import call_task

    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    here = on_this_worker(task)
    out = call_task(here)
    host = socket.gethostname()
    prof = out.value.get("profile") if out.ok and isinstance(out.value, dict) else None
    if isinstance(prof, dict) and prof.get("mode") == "measured":
        dev = here.kwargs.get("device")
        via = f" through {dev['spec']}" if isinstance(dev, dict) and dev.get("spec") else ""
        prof["notes"] = list(prof.get("notes") or []) + [f"measured by Ray node {host}{via}"]
    return {"ok": out.ok, "value": out.value, "error": out.error, "exit_code": out.exit_code,
            "host": host}


def placement(task: Task, driver_ip: str) -> dict:
    """The Ray resources ``task`` asks for besides its CPU: its own, and for a measured
    ``local`` profile (device entry of kind ``local``) the driver's node, so that "local"
    stays the host that ran ``edgeq run`` rather than whichever node was free."""
    res = dict(task.resources)
    dev = task.kwargs.get("device")
    if isinstance(dev, dict) and dev.get("kind") == "local" and not any(
            r.startswith(DEVICE_PREFIX) for r in res):
        res[f"node:{driver_ip}"] = 0.001  # Ray's built-in resource of every node at that IP
    return res


# -- the driver side -------------------------------------------------------------------------
def check_address(address: str) -> tuple[str, int] | None:
    """``HOST:PORT`` or ``ray://HOST:PORT`` -> (host, port); ``auto`` -> None (Ray finds
    the cluster started on this machine). BadInput otherwise."""
    a = (address or "").strip()
    if a == "auto":
        return None
    m = _ADDRESS.fullmatch(a)
    if not m or not 0 < int(m["port"]) < 65536:
        raise BadInput(f"--ray '{address}': expected HOST:PORT (the head's GCS port, e.g. "
                       "head:6379), ray://HOST:PORT (Ray Client) or auto")
    return m["host"].strip("[]"), int(m["port"])


def _reachable(address: str, timeout_s: float) -> None:
    # ray.init on a dead address retries for minutes and prints C++ warnings: ask first.
    hp = check_address(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=timeout_s).close()
    except OSError as e:
        raise RuntimeFailure(f"no Ray cluster at {address} ({e.strerror or e}): start one with "
                             "`ray start --head` or check --ray") from None


class RayExecutor:
    """The :class:`~edgeq.pipeline.executors.Executor` for a Ray cluster at ``address``
    (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``); see the module docstring.

    ``max_retries``: Ray's retries of a task whose worker died (0: report it as lost).
    ``poll_s``: seconds between checks that every waiting task still has a node that can
    run it. An already connected Ray (``ray.is_initialized()``) is reused and left open."""

    def __init__(self, address: str, *, max_retries: int = 0, poll_s: float = 2.0,
                 connect_timeout_s: float = 5.0):
        try:
            import ray
        except ImportError:
            raise BadInput("--ray needs the 'ray' package, which is not installed: "
                           "pip install 'edgeq[ray]'") from None
        check_address(address)  # a malformed --ray is bad input even when connected
        self.address, self.max_retries, self.poll_s = address, max_retries, poll_s
        self._owned = False
        if not ray.is_initialized():
            _reachable(address, connect_timeout_s)
            _quiet(ray)
            import logging

            try:
                ray.init(address=address.strip(), log_to_driver=False,
                         logging_level=logging.ERROR, include_dashboard=False)
            except ConnectionError:
                if address.strip() != "auto":
                    raise RuntimeFailure(f"no Ray cluster answers at {address}: start one "
                                         "with `ray start --head` or check --ray") from None
                raise RuntimeFailure("--ray auto: no Ray cluster runs on this machine: start "
                                     "one with `ray start --head` or give --ray "
                                     "HOST:PORT") from None
            except Exception as e:  # version mismatch, Ray Client not installed, ...
                raise RuntimeFailure(f"cannot join the Ray cluster at {address}: "
                                     f"{type(e).__name__}: {_first_line(e)}") from None
            self._owned = True
        self._remote = ray.remote(run_on_worker)
        self._cwd = os.getcwd()
        self._ip = ray.util.get_node_ip_address()

    # -- scheduling ------------------------------------------------------------------------
    def _unmet(self, task: Task, totals: dict) -> str | None:
        """Why no node of the cluster (as ``totals`` says) can run ``task``, or None."""
        for res, need in {"CPU": 1, **placement(task, self._ip)}.items():
            if totals.get(res, 0) >= need:
                continue
            if res.startswith("node:"):
                return (f"a local profile measures the host running edgeq ({self._ip}), "
                        "which is not a node of the Ray cluster: run edgeq on a node, or "
                        "profile on a named device (edgeq ray-worker --device NAME=local)")
            if res.startswith(DEVICE_PREFIX):
                name = res[len(DEVICE_PREFIX):]
                return (f"no Ray node advertises {res}; on the host that holds it, run "
                        f"`edgeq ray-worker --address {self.address} --device {name}=SPEC`")
            return (f"no Ray node has {need} {res} free for tasks (the cluster has "
                    f"{totals.get(res, 0):g}); add a worker with `ray start --address "
                    f"{self.address}`")
        return None

    def run(self, tasks: list[Task], on_done: Callable[[Task, Outcome], None]) -> None:
        """Submit every task at once; call ``on_done`` here as each one ends."""
        import ray

        totals = ray.cluster_resources()
        refs: dict = {}  # ObjectRef -> Task
        for task in tasks:
            why = self._unmet(task, totals)
            if why:
                on_done(task, Outcome(False, error=why, exit_code=3))
                continue
            ref = self._remote.options(
                num_cpus=1, resources=placement(task, self._ip), max_retries=self.max_retries,
                retry_exceptions=False, name=f"edgeq:{task.key}").remote(task, self._cwd)
            refs[ref] = task
        stranded: dict = {}  # ObjectRef -> why it was cancelled
        checked = time.monotonic()
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=self.poll_s)
                for ref in ready:
                    task = refs.pop(ref)
                    on_done(task, self._outcome(ray, ref, task, stranded.pop(ref, None)))
                if refs and time.monotonic() - checked >= self.poll_s:
                    self._cancel_stranded(ray, refs, stranded)
                    checked = time.monotonic()
        except BaseException:  # Ctrl-C or on_done failed: leave nothing running
            for ref in refs:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 -- already finished or gone
                    pass
            raise

    def _cancel_stranded(self, ray, refs: dict, stranded: dict) -> None:
        # A task still waiting for a device whose node has left would wait forever.
        totals = ray.cluster_resources()
        for ref, task in refs.items():
            if ref in stranded:
                continue
            if self._unmet(task, totals):
                lacking = [r for r, n in placement(task, self._ip).items()
                           if totals.get(r, 0) < n]
                stranded[ref] = (f"'{task.key}': no Ray node advertises "
                                 f"{', '.join(lacking) or 'a CPU'} any more (the host that "
                                 "had it left the cluster)")
                ray.cancel(ref)

    def _outcome(self, ray, ref, task: Task, stranded: str | None) -> Outcome:
        try:
            got = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # run_on_worker itself failed
            cause = getattr(e, "cause", None) or e
            if isinstance(cause, EdgeqError):
                return Outcome(False, error=_first_line(cause) or type(cause).__name__,
                               exit_code=cause.exit_code)
            return Outcome(False, error=f"{type(cause).__name__}: {_first_line(cause)}",
                           exit_code=3)
        except Exception as e:  # noqa: BLE001 -- every way of losing a task is an Outcome
            name = type(e).__name__
            if stranded and name == "TaskCancelledError":  # we cancelled it: say why
                return Outcome(False, error=f"worker lost: {stranded}", exit_code=3)
            if name in _LOST or isinstance(e, ray.exceptions.ObjectLostError):
                why = {"WorkerCrashedError": "the worker process died (killed, out of memory "
                                            "or a native crash)",
                       "NodeDiedError": "its node left the cluster",
                       "OutOfMemoryError": "Ray killed it: its node ran out of memory",
                       "TaskCancelledError": "the task was cancelled"}.get(
                           name, _first_line(e) or name)
                return Outcome(False, error=f"worker lost: '{task.key}': {why} [{name}]",
                               exit_code=3)
            return Outcome(False, error=f"ray: {name}: {_first_line(e)}", exit_code=3)
        if not got["ok"] and got["host"] != socket.gethostname():
            got["error"] = f"{got['error']} (on Ray node {got['host']})"
        return Outcome(got["ok"], value=got["value"], error=got["error"],
                       exit_code=got["exit_code"])

    def close(self) -> None:
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False


def _quiet(ray) -> None:
    """Ray prints its workers' and raylets' messages on the driver's stdout, where ``--json``
    output goes; the edgeq report says what failed. EDGEQ_DEBUG=1 keeps them."""
    if os.environ.get("EDGEQ_DEBUG"):
        return
    import ray._private.worker as rw  # the switch ray.util.rpdb uses for the same reason

    rw._worker_logs_enabled = False


# -- joining a device host -------------------------------------------------------------------
def parse_device(text: str) -> tuple[str, str]:
    """``NAME=SPEC`` -> (NAME, SPEC); BadInput naming ``--device`` otherwise."""
    name, eq, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not eq or not _NAME.fullmatch(name) or not spec:
        raise BadInput(f"--device '{text}': expected NAME=SPEC, e.g. pixel-8=adb:SERIAL, "
                       "board=ssh://pi@board.local or host=local (NAME: letters, digits, "
                       ". _ -)")
    if not (spec == "local" or spec == "adb" or spec.startswith(("adb:", "ssh://"))):
        raise BadInput(f"--device '{text}': SPEC '{spec}' should be local, adb, adb:SERIAL "
                       "or ssh://USER@HOST[:PORT]")
    return name, spec


def worker_command(ray_exe: str, address: str, devices: dict, num_cpus: int | None = None,
                   block: bool = True, extra: tuple = ()) -> tuple[list[str], dict]:
    """The ``ray start`` argv and the environment variables that make this host a worker
    of the cluster at ``address`` advertising ``devices`` (NAME -> SPEC)."""
    check_address(address)
    if address.strip().startswith("ray://"):
        raise BadInput(f"--address '{address}': a worker joins through the head's GCS port "
                       "(HOST:6379), not a ray:// client address")
    resources = {f"{DEVICE_PREFIX}{n}": 1 for n in devices}
    argv = [ray_exe, "start", f"--address={address.strip()}",
            f"--resources={json.dumps(resources)}", "--disable-usage-stats"]
    if num_cpus is not None:
        argv.append(f"--num-cpus={num_cpus}")
    if block:
        argv.append("--block")
    return argv + list(extra), {ENV_DEVICES: json.dumps(devices)}
