"""The pipeline file of ``edgeq run``: read, validate up front, and resolve.

Every error names the file and the line (``edgeq.yaml:7: unknown key 'recipies' (did you
mean 'recipes'?)``) and is raised before any model is loaded or artifact built. Paths in
the file (model files, data files, recipe YAMLs, device profile YAMLs) are relative to the
file's folder.

The format::

    model: digits-cnn                # any MODEL spec `edgeq export` accepts (required)
    input_shape: 1,1,8,8             # optional, when the factory returns only a module
    trust_pickle: false              # optional: allow pickle checkpoints
    calib: digits:train              # calibration data (required by quantized recipes)
    calib_samples: 256               # optional: overrides the recipes' count
    data: digits:eval                # optional: evaluation data (accuracy, drop vs fp32)
    recipes: [fp32, int8]            # preset names or recipe YAML paths (required)
    targets: [executorch-xnnpack, onnx-cpu]   # target names, or [all] (required)
    devices:                         # optional; profile every artifact on each
      - local                        #   measured on this host
      - {profile: pixel-8}           #   estimated for a device profile (name or YAML)
      - {device: "adb:SERIAL", name: pixel-8-real}   # measured on a device (adb, ssh://)
    profile: {runs: 50, warmup: 5, threads: 1}      # optional (defaults 50, 5, 1)
    image: {resize: 256, crop: 224, mean: "0.485,0.456,0.406", std: "0.229,0.224,0.225"}
    search: {max_accuracy_drop: 1.0, max_trials: 8, int16: true}  # optional; needs data:
    budgets:                         # optional; the format of `edgeq check --budgets`
      - max_size: 2MB
      - target: executorch-*
        max_latency_p50_ms: 5

``search``: the accuracy-budget search of ``export --max-accuracy-drop`` for every
quantized cell whose measured drop exceeds ``max_accuracy_drop`` (points of the metric);
``max_trials`` (default 8) counts the plain recipe; ``int16`` (default true) tries layers at
16-bit activations after the float search (instead of its float layers) where the target supports it. See ``edgeq.pipeline.budget_search``.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.errors import BadInput

KEYS = ("model", "input_shape", "trust_pickle", "calib", "calib_samples", "data", "recipes",
        "targets", "devices", "profile", "image", "budgets", "search")
REQUIRED = ("model", "recipes", "targets")
PROFILE_KEYS = {"runs": 50, "warmup": 5, "threads": 1}
IMAGE_KEYS = ("resize", "crop", "mean", "std", "grayscale")
DEVICE_KEYS = ("profile", "device", "name", "threads")


@dataclass(frozen=True)
class DeviceEntry:
    """Where each artifact is profiled. ``kind``: ``local`` (measured on the host running
    the task), ``estimate`` (``profile`` names a device profile) or ``device`` (``spec`` is
    ``adb[:SERIAL]`` or ``ssh://...``, measured there). ``name`` labels the cells and is
    what a budget's ``device:`` selector matches."""

    kind: str
    name: str
    spec: str | None = None
    profile: str | None = None
    threads: int | None = None


@dataclass
class PipelineSpec:
    path: Path
    model: str
    recipes: list  # edgeq.recipes.Recipe, validated
    targets: list  # edgeq.targets.Target
    calib: str | None = None
    calib_samples: int | None = None
    data: str | None = None
    input_shape: str | None = None
    trust_pickle: bool = False
    devices: list[DeviceEntry] = field(default_factory=list)
    runs: int = 50
    warmup: int = 5
    threads: int = 1
    image: dict = field(default_factory=dict)
    budgets: list[dict] = field(default_factory=list)
    search: object = None  # edgeq.quantize.search.SearchOptions, or None


class _Dict(dict):
    lines: dict


class _List(list):
    lines: list


def _loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """Keeps the line of every mapping key and list item."""

        def construct_mapping(self, node, deep=False):
            d = _Dict(super().construct_mapping(node, deep=True))
            d.line = node.start_mark.line + 1
            d.lines = {self.construct_object(k, deep=True): k.start_mark.line + 1
                       for k, _ in node.value}
            return d

        def construct_sequence(self, node, deep=False):
            out = _List(super().construct_sequence(node, deep=True))
            out.line = node.start_mark.line + 1
            out.lines = [n.start_mark.line + 1 for n in node.value]
            return out

    Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_mapping)
    Loader.add_constructor("tag:yaml.org,2002:seq", Loader.construct_sequence)
    return Loader


class _Where:
    def __init__(self, path: Path):
        self.name = str(path)

    def err(self, line, msg: str) -> BadInput:
        return BadInput(f"{self.name}:{line}: {msg}" if line else f"{self.name}: {msg}")


def _line(d, key, default=None):
    return getattr(d, "lines", {}).get(key, getattr(d, "line", default))


def _resolve_path(text: str, base: Path) -> str:
    """``file.py:factory``, ``data.npz``, ``recipe.yaml`` relative to the pipeline's
    folder -> absolute; names, presets and ``module:function`` are left alone."""
    if Path(text).is_absolute():
        return text
    if (base / text).exists():
        return str((base / text).resolve())
    left, sep, right = text.rpartition(":")
    if sep and left and (base / left).exists():
        return f"{(base / left).resolve()}:{right}"
    return text


def _str(d, key, w: _Where, required=False):
    v = d.get(key)
    if v is None:
        if required:
            raise w.err(getattr(d, "line", None), f"missing key '{key}'")
        return None
    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
        raise w.err(_line(d, key), f"'{key}' must be a string, got {type(v).__name__}")
    return str(v)


def _int(d, key, w: _Where, minimum: int, default=None):
    v = d.get(key, default)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise w.err(_line(d, key), f"'{key}' must be an integer >= {minimum}, got '{v}'")
    return v


def _str_list(d, key, w: _Where) -> list:
    v = d.get(key)
    if isinstance(v, str):
        v = _List([v])
        v.lines = [_line(d, key)]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise w.err(_line(d, key), f"'{key}' must be a non-empty list of names")
    return list(zip(v, getattr(v, "lines", None) or [_line(d, key)] * len(v)))


def _unknown(d, allowed, w: _Where, where: str = "") -> None:
    for key in d:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, 1)
            raise w.err(_line(d, key), f"unknown key '{key}'{where}"
                        + (f" (did you mean '{near[0]}'?)" if near else
                           f"; valid keys: {', '.join(allowed)}"))


def load_spec(path: Path) -> PipelineSpec:
    """Read and validate a pipeline file; BadInput (exit 2) naming file:line otherwise."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"pipeline file '{path}' not found")
    w = _Where(path)
    try:
        d = yaml.load(path.read_text(), Loader=_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise w.err(mark.line + 1 if mark else None,
                    f"not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(d, dict):
        raise w.err(None, "expected a mapping with model, recipes, targets (see "
                    "`edgeq run --help`)")
    _unknown(d, KEYS, w)
    base = path.resolve().parent
    spec = PipelineSpec(path=path, model=_resolve_path(_str(d, "model", w, True), base),
                        recipes=_recipes(d, w, base), targets=_targets(d, w))
    for key in ("calib", "data"):
        v = _str(d, key, w)
        setattr(spec, key, _resolve_path(v, base) if v else None)
    spec.input_shape = _str(d, "input_shape", w)
    tp = d.get("trust_pickle", False)
    if not isinstance(tp, bool):
        raise w.err(_line(d, "trust_pickle"), "'trust_pickle' must be true or false")
    spec.trust_pickle = tp
    spec.calib_samples = _int(d, "calib_samples", w, 1)
    if spec.calib is None and any(r.quantized for r in spec.recipes):
        q = next(r.name for r in spec.recipes if r.quantized)
        raise w.err(_line(d, "recipes"), f"recipe '{q}' quantizes activations and needs "
                    "calibration data: add 'calib: DATA'")
    _profile_settings(spec, d, w)
    spec.devices = _devices(d, w, base)
    spec.image = _image(d, w)
    if d.get("budgets") is not None:
        spec.budgets = _budgets(d, w, spec)
    if d.get("search") is not None:
        from edgeq.pipeline.budget_search import parse_search

        spec.search = parse_search(d, w, spec)
    return spec


def _recipes(d, w: _Where, base: Path) -> list:
    from edgeq.recipes import load_recipe

    out, seen = [], {}
    for name, line in _str_list(d, "recipes", w):
        try:
            r = load_recipe(_resolve_path(name, base))
        except BadInput as e:
            raise w.err(line, str(e).replace("--recipe ", "recipe ", 1)) from None
        if r.name in seen:
            raise w.err(line, f"two recipes are named '{r.name}' (line {seen[r.name]}); "
                        "give one a different 'name:'")
        seen[r.name] = line
        out.append(r)
    return out


def _targets(d, w: _Where) -> list:
    from edgeq.targets import all_targets

    known = all_targets()
    names = _str_list(d, "targets", w)
    if any(n == "all" for n, _ in names):
        return list(known.values())
    out = []
    for name, line in names:
        if name not in known:
            near = difflib.get_close_matches(name, known, 1)
            raise w.err(line, f"target '{name}' does not exist; valid targets: "
                        f"{', '.join(known)}" + (f" (did you mean '{near[0]}'?)" if near else ""))
        if known[name] not in out:
            out.append(known[name])
    return out


def _profile_settings(spec: PipelineSpec, d, w: _Where) -> None:
    p = d.get("profile")
    if p is None:
        return
    if not isinstance(p, dict):
        raise w.err(_line(d, "profile"), "'profile' must be a mapping like "
                    "{runs: 50, warmup: 5, threads: 1}")
    _unknown(p, list(PROFILE_KEYS), w, " in 'profile'")
    spec.runs = _int(p, "runs", w, 1, PROFILE_KEYS["runs"])
    spec.warmup = _int(p, "warmup", w, 0, PROFILE_KEYS["warmup"])
    spec.threads = _int(p, "threads", w, 1, PROFILE_KEYS["threads"])


def _devices(d, w: _Where, base: Path) -> list[DeviceEntry]:
    from edgeq.devices.profiles import load_profile

    raw = d.get("devices")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise w.err(_line(d, "devices"), "'devices' must be a list (local, {profile: NAME}, "
                    "{device: adb:SERIAL, name: NAME})")
    out: list[DeviceEntry] = []
    for i, entry in enumerate(raw):
        line = raw.lines[i] if getattr(raw, "lines", None) else _line(d, "devices")
        if entry == "local":
            dev = DeviceEntry("local", "local")
        elif isinstance(entry, dict):
            _unknown(entry, DEVICE_KEYS, w, " in a device entry")
            threads = _int(entry, "threads", w, 1)
            if ("profile" in entry) == ("device" in entry):
                raise w.err(line, "a device entry needs exactly one of 'profile: NAME' "
                            "(estimated) or 'device: SPEC' (measured)")
            if "profile" in entry:
                prof = _resolve_path(_str(entry, "profile", w), base)
                try:
                    name = load_profile(prof).name
                except BadInput as e:
                    raise w.err(_line(entry, "profile"),
                                str(e).replace("--profile ", "device profile ", 1)) from None
                dev = DeviceEntry("estimate", _str(entry, "name", w) or name, profile=prof,
                                  threads=threads)
            else:
                spec_s = _str(entry, "device", w)
                if not (spec_s == "local" or spec_s.startswith(("adb", "ssh://"))):
                    raise w.err(_line(entry, "device"), f"device '{spec_s}': expected local, "
                                "adb, adb:SERIAL or ssh://USER@HOST[:PORT]")
                kind = "local" if spec_s == "local" else "device"
                dev = DeviceEntry(kind, _str(entry, "name", w) or spec_s, spec=spec_s,
                                  threads=threads)
        else:
            raise w.err(line, f"device entry '{entry}': expected local, {{profile: NAME}} or "
                        "{device: SPEC, name: NAME}")
        if any(o.name == dev.name for o in out):
            raise w.err(line, f"two devices are named '{dev.name}'; add 'name: ...' to one")
        out.append(dev)
    return out


def _image(d, w: _Where) -> dict:
    img = d.get("image")
    if img is None:
        return {}
    if not isinstance(img, dict):
        raise w.err(_line(d, "image"), "'image' must be a mapping (resize, crop, mean, std, "
                    "grayscale)")
    _unknown(img, IMAGE_KEYS, w, " in 'image'")
    from edgeq.cli.options import build_image_options

    try:  # validate now; the tasks rebuild it from these plain values
        build_image_options(img.get("resize"), img.get("crop"), img.get("mean", "0"),
                            img.get("std", "1"), bool(img.get("grayscale", False)))
    except BadInput as e:
        raise w.err(_line(d, "image"), str(e)) from None
    return dict(img)


def _budgets(d, w: _Where, spec: PipelineSpec) -> list[dict]:
    """Each entry through ``budgets.parse_budgets`` (its messages, prefixed with file:line);
    then a ``target:`` / ``recipe:`` / ``device:`` selector matching nothing in the matrix
    is refused: it would silently check nothing."""
    from edgeq.report.budgets import BUDGETS, parse_budgets

    raw = d["budgets"]
    entries = [raw] if isinstance(raw, dict) else raw
    if not isinstance(entries, list) or not entries:
        raise w.err(_line(d, "budgets"), "'budgets' must be a list of budget mappings")
    names = {"target": [t.name for t in spec.targets],
             "recipe": [r.name for r in spec.recipes],
             "device": [n for dv in spec.devices for n in (dv.name, dv.spec, dv.profile)
                        if n]}
    out = []
    for i, entry in enumerate(entries):
        line = entry.line if hasattr(entry, "line") else (
            raw.lines[i] if getattr(raw, "lines", None) else _line(d, "budgets"))
        try:
            parsed = parse_budgets([entry], "")
        except BadInput as e:
            msg = str(e).replace("budgets : ", "budgets: ", 1)
            if isinstance(entry, dict):  # point at the offending key's own line
                line = next((_line(entry, k) for k in entry if f"'{k}'" in msg
                             or f" {k} " in msg or f" {k}:" in msg), line)
            raise w.err(line, msg) from None
        for b in parsed:
            if BUDGETS[b["key"]].relative:
                raise w.err(_line(entry, b["key"], line) if isinstance(entry, dict) else line,
                            f"'{b['key']}' compares with a baseline report: put it in a "
                            "budgets file for `edgeq check REPORT --budgets FILE --baseline "
                            "OLD` after the run")
        for sel, valid in names.items():
            pattern = entry.get(sel) if isinstance(entry, dict) else None
            if pattern is None:
                continue
            patterns = pattern if isinstance(pattern, list) else [pattern]
            if not any(fnmatch.fnmatchcase(v, str(p)) for v in valid for p in patterns):
                raise w.err(_line(entry, sel, line), f"budget for {sel} '{pattern}', which is "
                            f"not in the matrix ({', '.join(valid) or 'no devices'})")
        out.extend(parsed)
    return out
