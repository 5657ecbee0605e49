"""The accuracy-budget search of ``edgeq run`` (pipeline key ``search:``): after the
evaluation stage, every quantized cell whose measured drop exceeds the budget goes through
``edgeq.quantize.search.search_cell`` (the search of ``export --max-accuracy-drop``),
in-process and one cell at a time. The cell then stands for the chosen configuration: its
artifact (kept in ``DIR/search/<key[:16]>/`` with the chosen recipe as
``<artifact stem>.recipe.yaml``), its accuracy and a ``search`` block as export records it;
the profile stage profiles that artifact. The cell keeps the pipeline's recipe name (what
budgets select on); ``search.chosen_recipe`` names what was built. A budget no
configuration meets leaves the best found in the cell and makes the run exit 1.

Cache: the outcome is stored as ``DIR/cache/search/<key>.json``, keyed on the cell's build
key, the budget, ``max_trials``, the sensitivity sample count and the evaluation data's
identity; a hit whose chosen artifact is gone or changed is searched again."""
from __future__ import annotations

import shutil
from pathlib import Path

from edgeq.errors import EdgeqError
from edgeq.pipeline import cache

SEARCH = "search"
SEARCH_KEYS = ("max_accuracy_drop", "max_trials", "int16")


def parse_search(d, w, spec):
    """The pipeline's ``search: {max_accuracy_drop: X, max_trials: N, int16: true}`` ->
    SearchOptions (``int16``: 16-bit activations tried after the float search, where supported);
    BadInput naming file:line (called by ``spec.load_spec``)."""
    from edgeq.pipeline.spec import _int, _line, _unknown
    from edgeq.quantize.search import DEFAULT_MAX_TRIALS, SearchOptions

    s = d["search"]
    line = _line(d, "search")
    if not isinstance(s, dict):
        raise w.err(line, "'search' must be a mapping like {max_accuracy_drop: 1.0, "
                    "max_trials: 8}")
    _unknown(s, list(SEARCH_KEYS), w, " in 'search'")
    if "max_accuracy_drop" not in s:
        raise w.err(line, "'search' needs 'max_accuracy_drop: X' (the largest accepted "
                    "drop, in points of the metric, e.g. 1.0)")
    drop = s["max_accuracy_drop"]
    if not isinstance(drop, (int, float)) or isinstance(drop, bool) or drop != drop \
            or drop < 0:
        raise w.err(_line(s, "max_accuracy_drop", line), "'max_accuracy_drop' must be a "
                    f"number >= 0 (points of the metric, e.g. 1.0), got '{drop}'")
    trials = _int(s, "max_trials", w, 1, DEFAULT_MAX_TRIALS)
    int16 = s.get("int16", True)
    if not isinstance(int16, bool):
        raise w.err(_line(s, "int16", line), "'int16' must be true (try the most sensitive "
                    "layers at 16-bit activations after the float search, where the target supports "
                    f"it) or false, got '{int16}'")
    if spec.data is None:
        raise w.err(line, "'search' measures accuracy on the artifacts: add 'data: EVAL'")
    if not any(r.quantized for r in spec.recipes):
        raise w.err(line, "'search' needs a quantized recipe (e.g. int8) in 'recipes'; "
                    f"{', '.join(r.name for r in spec.recipes)} quantize nothing")
    return SearchOptions(float(drop), trials, int16=int16)


def search_key(build_key: str, sopts, data_id) -> str:
    return cache.digest({"build": build_key, "budget": sopts.budget,
                         "max_trials": sopts.max_trials, "int16": sopts.int16,
                         "sensitivity_samples": sopts.sensitivity_samples, "data": data_id})


def needs_search(cell, budget: float) -> bool:
    """A built, evaluated, quantized cell whose drop is over the budget or unmeasured."""
    if cell.manifest is None or cell.evaluation is None or not cell.recipe.quantized:
        return False
    drop = (cell.evaluation.get("accuracy") or {}).get("drop")
    return drop is None or drop > budget + 1e-9


def run_searches(m) -> None:
    """Search every cell of the ``Matrix`` ``m`` that needs it (see the module docstring)."""
    sopts = m.spec.search
    rankings: dict = {}  # sensitivity rankings shared by cells simulated alike
    m.counts["searched"] = 0  # in --json only when the pipeline has a search: key
    for c in m.cells:
        if not needs_search(c, sopts.budget):
            continue
        key = search_key(c.key, sopts, m.data_id)
        folder = Path(m.out) / SEARCH / key[:16]
        value = _cached(m.out, key, folder)
        c.cache["search"] = "hit" if value is not None else "miss"
        if value is None:
            try:
                value = _search(m, c, folder, sopts, rankings)
            except EdgeqError as e:
                c.fail("search", str(e), e.exit_code)
                m.counts["failed"] += 1
                m.say(f"edgeq: search/{c.name}: FAILED: {e}")
                m._save()
                continue
            cache.save_result(m.out, SEARCH, key, value)
            m.counts["searched"] += 1
        else:
            m.counts["tasks_cached"] += 1
            m.say(f"edgeq: search/{c.name}: cached")
        _apply(c, value, folder)
        m._save()


def _cached(out: Path, key: str, folder: Path) -> dict | None:
    from edgeq.artifacts import sha256_file

    value = cache.load_result(out, SEARCH, key)
    if value is None or "search" not in value:
        return None
    man = value.get("manifest")
    if man:  # the chosen artifact must still be there, unchanged
        art = folder / man["artifact"]["path"]
        if not art.is_file() or sha256_file(art) != man["artifact"].get("sha256"):
            return None
    return value


def _search(m, c, folder: Path, sopts, rankings: dict) -> dict:
    """Run ``search_cell`` on a one-cell report; the outcome as stored in the cache."""
    from edgeq.artifacts import read_manifest
    from edgeq.flow import FlowOptions
    from edgeq.pipeline import tasks
    from edgeq.quantize.search import search_cell
    from edgeq.report.schema import result_from_manifest

    spec = m.spec
    shutil.rmtree(folder, ignore_errors=True)  # a search killed half-way starts over
    folder.mkdir(parents=True)
    base = result_from_manifest(c.manifest, c.manifest["artifact"]["path"])
    base.update(c.evaluation)
    report = {"results": [base]}
    image = spec.image or None
    opts = FlowOptions(folder, calib=spec.calib, calib_samples=spec.calib_samples,
                       image_opts=tasks._image_opts(image))
    calib = tasks.dataset(spec.calib, m.model, image)
    eval_ds = tasks.dataset(spec.data, m.model, image)
    missed = search_cell(report, base, m.model, calib, eval_ds, opts, sopts, rankings)
    chosen = next(r for r in report["results"] if "search" in r)
    value = {"search": chosen["search"], "missed": missed, "manifest": None,
             "evaluation": None}
    if chosen is not base:  # a configuration with layers in float, kept in ``folder``
        art = Path(chosen["artifact"]["path"])
        manifest = read_manifest(art)
        manifest["artifact"] = dict(manifest["artifact"], path=art.name)
        value["manifest"] = manifest
        value["evaluation"] = {"accuracy": chosen["accuracy"]}
    return value


def _apply(c, value: dict, folder: Path) -> None:
    """The cell now stands for the chosen configuration (or keeps the plain one)."""
    if value.get("manifest"):
        man = dict(value["manifest"])
        man["artifact"] = dict(man["artifact"],
                               path=str((folder / man["artifact"]["path"]).resolve()))
        c.manifest = man
        c.evaluation = dict(value["evaluation"])
    c.evaluation = dict(c.evaluation, search=value["search"])
    if value.get("missed"):
        c.exit_code = max(c.exit_code, 1)
