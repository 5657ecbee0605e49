"""Run a pipeline's matrix: recipes x targets built, then evaluated and profiled on every
device, through an executor, with the content cache (``edgeq.pipeline.cache``).

Stages: (1) every build not in the cache; (2) evaluations, estimates and device profiles;
(3) measured profiles on the local host, one at a time, so no two timings (and none of our
other work) overlap. After every finished task the result goes to the cache and
``report.json`` is rewritten atomically: a run killed at any point leaves a valid report
and resumes from where it stopped."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.errors import EdgeqError
from edgeq.pipeline import cache
from edgeq.pipeline.executors import Outcome, Task
from edgeq.report.schema import new_report, result_from_manifest, save_report

TASKS = "edgeq.pipeline.tasks"


@dataclass
class Cell:
    """One (recipe, target) of the matrix and everything known about it so far."""

    recipe: object
    target: object
    key: str | None = None
    manifest: dict | None = None
    cache: dict = field(default_factory=dict)  # stage -> "hit" | "miss"
    error: str | None = None  # the first failure, "<stage>: reason"
    exit_code: int = 0
    evaluation: dict | None = None  # {"accuracy": ...[, "accuracy_reason"]}
    profiles: dict = field(default_factory=dict)  # device name -> {"profile": ...}

    @property
    def name(self) -> str:
        return f"{self.recipe.name}/{self.target.name}"

    def fail(self, stage: str, error: str, code: int) -> None:
        if self.error is None:
            self.error = f"{stage}: {error}"
        self.exit_code = max(self.exit_code, code)


@dataclass
class RunResult:
    report: dict
    report_path: Path
    passed: bool
    exit_code: int
    counts: dict


class Matrix:
    def __init__(self, spec, out_dir: Path, executor, say=lambda msg: None):
        self.spec, self.out, self.executor, self.say = spec, Path(out_dir), executor, say
        self.cells: list[Cell] = []
        self.report: dict = {}
        self.done = 0
        self.total = 0
        self.t0 = time.monotonic()
        self.counts = {"built": 0, "evaluated": 0, "profiled": 0, "cached": 0,
                       "tasks_cached": 0, "failed": 0}

    # -- setup -------------------------------------------------------------------------
    def load(self, model) -> None:
        """Compute every build key and pick up cached builds."""
        from edgeq.runtimes import get_runtime

        spec = self.spec
        self.model = model
        self.common = {"model": spec.model, "model_sha256": model.sha256,
                       "input_shape": spec.input_shape, "trust_pickle": spec.trust_pickle,
                       "image": spec.image or None}
        calib_id = cache.data_identity(spec.calib, spec.image)
        self.data_id = cache.data_identity(spec.data, spec.image)
        self.inputs_id = cache.data_identity(spec.data or spec.calib, spec.image)
        for recipe in spec.recipes:
            for target in spec.targets:
                cell = Cell(recipe, target)
                self.cells.append(cell)
                try:
                    versions = get_runtime(target.runtime).versions()
                except EdgeqError as e:  # e.g. the runtime's package is not installed
                    cell.fail("build", str(e), e.exit_code)
                    continue
                cell.key = cache.build_key(model.sha256, recipe.to_dict(), target, calib_id,
                                           spec.calib_samples, versions)
                cell.manifest = cache.cached_build(self.out, cell.key)
                cell.cache["build"] = "hit" if cell.manifest else "miss"
        self.report = new_report(model.summary())
        self.report["pipeline"] = {"file": str(Path(spec.path).resolve()),
                                   "executor": type(self.executor).__name__}

    # -- bookkeeping in the calling thread ---------------------------------------------
    def _progress(self, what: str, status: str) -> None:
        self.done += 1
        self.say(f"edgeq: [{self.done}/{self.total} {time.monotonic() - self.t0:6.1f} s] "
                 f"{what}: {status}")

    def _save(self) -> None:
        self.report["results"] = self.results()
        save_report(self.out / "report.json", self.report)

    def results(self) -> list[dict]:
        out = []
        for c in self.cells:
            if c.manifest is None:
                out.append({"target": c.target.name, "recipe": c.recipe.name,
                            "artifact": None, "error": c.error or "not built yet",
                            "cache": dict(c.cache)})
                continue
            base = result_from_manifest(c.manifest, c.manifest["artifact"]["path"])
            base["build_key"] = c.key
            base["recipe"] = c.recipe.name  # a searched cell: see search.chosen_recipe
            base.update(c.evaluation or {})
            if c.error:
                base["error"] = c.error
            devices = self.spec.devices or [None]
            for dev in devices:
                r = dict(base, cache={k: v for k, v in c.cache.items()
                                      if not k.startswith("profile:")})
                if dev is not None:  # the pipeline's name: what `device:` budgets match
                    r["device"] = dev.name
                    got = c.profiles.get(dev.name)
                    r.update(got or {"profile": None, "profile_reason":
                                     f"not profiled on '{dev.name}' yet"})
                    r["cache"]["profile"] = c.cache.get(f"profile:{dev.name}")
                out.append(r)
        return out

    # -- stages ------------------------------------------------------------------------
    def _run(self, tasks: list[Task], handlers: dict, one_at_a_time: bool = False) -> None:
        def on_done(task: Task, outcome: Outcome) -> None:
            cell, stage, extra = handlers[task.key]
            if outcome.ok:
                getattr(self, f"_{stage}_done")(cell, outcome.value, extra)
                self._progress(task.key, "done")
            else:
                cell.fail(stage if stage != "profile" else f"profile on {extra[0].name}",
                          outcome.error, outcome.exit_code)
                self.counts["failed"] += 1
                self._progress(task.key, f"FAILED: {outcome.error}")
            self._save()

        if one_at_a_time:
            for t in tasks:
                self.executor.run([t], on_done)
        else:
            self.executor.run(tasks, on_done)

    def _build_done(self, cell: Cell, manifest: dict, _extra) -> None:
        cell.manifest = manifest
        self.counts["built"] += 1

    def _evaluate_done(self, cell: Cell, value: dict, key: str) -> None:
        cell.evaluation = value
        cache.save_result(self.out, "evaluate", key, value)
        self.counts["evaluated"] += 1

    def _profile_done(self, cell: Cell, value: dict, extra) -> None:
        dev, key = extra
        cell.profiles[dev.name] = value
        cache.save_result(self.out, "profile", key, value)
        self.counts["profiled"] += 1

    def run(self) -> None:
        spec = self.spec
        builds, handlers = [], {}
        for c in self.cells:
            if c.key and c.manifest is None:
                t = Task(f"build/{c.name}", f"{TASKS}:build_cell",
                         dict(self.common, recipe=c.recipe.to_dict(), target=c.target.name,
                              out_dir=str(cache.artifact_dir(self.out, c.key)),
                              build_key=c.key, calib=spec.calib,
                              calib_samples=spec.calib_samples), {})
                builds.append(t)
                handlers[t.key] = (c, "build", None)
        hits = [c for c in self.cells if c.cache.get("build") == "hit"]
        self.counts["cached"] = len(hits)
        per_cell = 1 + bool(spec.data) + len(spec.devices)
        self.total = len(self.cells) * per_cell
        for c in self.cells:
            if c.key is None:  # failed before it could be keyed (a runtime is missing)
                self.counts["failed"] += 1
                self._progress(f"build/{c.name}", f"FAILED: {c.error}")
        for c in hits:
            self._progress(f"build/{c.name}", "cached")
        self._save()
        self._run(builds, handlers)
        # Evaluation and profiling depend on the built artifacts only.
        second, local, handlers = [], [], {}
        for c in self.cells:
            if c.manifest is None:
                self.total -= per_cell - 1  # nothing to evaluate or profile
                continue
            art = c.manifest["artifact"]
            if spec.data:
                key = cache.eval_key(art["sha256"], self.data_id, self.model.sha256)
                self._stage(c, "evaluate", f"evaluate/{c.name}", "evaluate_cell", key,
                            dict(self.common, artifact=art["path"], data=spec.data),
                            key, second, handlers)
        if getattr(spec, "search", None) and spec.data:
            # The search needs every evaluation and must finish before the profiles: a
            # searched cell is profiled on the artifact the search chose.
            from edgeq.pipeline.budget_search import run_searches

            self._run(second, handlers)
            second = []
            run_searches(self)
        for c in self.cells:
            if c.manifest is None:
                continue
            art = c.manifest["artifact"]
            for dev in spec.devices:
                dev_d = {"kind": dev.kind, "name": dev.name, "spec": dev.spec,
                         "profile": dev.profile, "threads": dev.threads}
                settings = {"runs": spec.runs, "warmup": spec.warmup, "threads": spec.threads}
                key = cache.profile_key(art["sha256"], dev_d, settings,
                                        None if dev.kind == "estimate" else self.inputs_id)
                resources = {f"device:{dev.name}": 1} if dev.kind == "device" else {}
                self._stage(c, "profile", f"profile/{c.name}/{dev.name}", "profile_cell", key,
                            dict(self.common, artifact=art["path"], device=dev_d,
                                 data=spec.data or spec.calib, **settings),
                            (dev, key), local if dev.kind == "local" else second, handlers,
                            resources)
        self._run(second, handlers)
        self._run(local, handlers, one_at_a_time=True)
        self._save()

    def _stage(self, c: Cell, stage: str, tkey: str, func: str, key: str, kwargs: dict,
               extra, into: list, handlers: dict, resources: dict | None = None) -> None:
        """A hit fills the cell from the cache; a miss becomes a task."""
        slot = f"profile:{extra[0].name}" if stage == "profile" else stage
        value = cache.load_result(self.out, stage, key)
        c.cache[slot] = "hit" if value is not None else "miss"
        if value is not None:
            if stage == "evaluate":
                if (value.get("accuracy") or {}).get("data"):  # same content, maybe moved
                    value["accuracy"]["data"] = kwargs["data"]
                c.evaluation = value
            else:
                c.profiles[extra[0].name] = value
            self.counts["tasks_cached"] += 1
            self._progress(tkey, "cached")
            return
        t = Task(tkey, f"{TASKS}:{func}", kwargs, resources or {})
        into.append(t)
        handlers[t.key] = (c, stage, extra)

    def finish(self) -> RunResult:
        from edgeq.report.budgets import check

        if self.spec.budgets:
            self.report["budgets"] = check(self.report, self.spec.budgets)
        self._save()
        rows = self.report.get("budgets") or []
        passed = all(r["passed"] for r in rows)
        worst = max([c.exit_code for c in self.cells] + [0])
        code = 1 if not passed else worst
        self.counts["cells"] = len(self.report["results"])
        return RunResult(self.report, self.out / "report.json", passed, code, self.counts)


def run_pipeline(spec, out_dir: Path, executor, force: bool = False,
                 say=lambda msg: None) -> RunResult:
    """Run the whole matrix of ``spec`` into ``out_dir``; see the module docstring."""
    from edgeq.artifacts import prepare_output_dir
    from edgeq.errors import BadInput
    from edgeq.flow import open_report
    from edgeq.pipeline import tasks

    out = prepare_output_dir(Path(out_dir), [], True)
    try:
        model = tasks.load(spec.model, spec.input_shape, spec.trust_pickle)
    except BadInput as e:
        raise BadInput(f"{spec.path}: model: {e}") from None
    for key in ("calib", "data"):  # bad data is bad input, found before any build
        source = getattr(spec, key)
        if source:
            try:
                tasks.dataset(source, model, spec.image or None)
            except BadInput as e:
                raise BadInput(f"{spec.path}: {key}: {e}") from None
    open_report(out, model, force)  # refuses another model's report without --force
    m = Matrix(spec, out, executor, say)
    m.load(model)
    m.run()
    return m.finish()
