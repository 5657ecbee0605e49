"""The task functions of ``edgeq run``: one cell's build, evaluation or profile, taking
plain keyword arguments (so an executor can run them in another process or on another
host) and returning JSON-serialisable dicts. They are thin wrappers over
``edgeq.stages`` (export, evaluate, profile_local, profile_estimate) and
``edgeq.profiling.remote.profile_on_device``.

Loaded models and data sets are kept per process: a pool worker or the in-process executor
loads each once per run, not once per task."""
from __future__ import annotations

from pathlib import Path

from edgeq.errors import BadInput, CannotRunHere
from edgeq.progress import QUIET

_MODELS: dict = {}
_DATA: dict = {}


def _quiet() -> None:
    """A spawned or remote worker did not go through the CLI: keep the libraries' import
    chatter off the user's terminal there too (EDGEQ_DEBUG=1 shows it)."""
    if not _MODELS:
        from edgeq.cli import quiet_libraries

        quiet_libraries()


def load(model: str, input_shape: str | None = None, trust_pickle: bool = False):
    """``edgeq.models.load_model``, once per process."""
    from edgeq.models import load_model

    _quiet()

    key = (model, input_shape, trust_pickle)
    if key not in _MODELS:
        _MODELS[key] = load_model(model, input_shape, trust_pickle)
    return _MODELS[key]


def _model(model: str, model_sha256: str, input_shape: str | None, trust_pickle: bool):
    loaded = load(model, input_shape, trust_pickle)
    if loaded.sha256 != model_sha256:
        raise BadInput(f"model '{model}' changed while the pipeline ran (sha256 "
                       f"{loaded.sha256[:12]}, expected {model_sha256[:12]}); run again")
    return loaded


def _image_opts(image: dict | None):
    if not image:
        return None
    from edgeq.cli.options import build_image_options

    return build_image_options(image.get("resize"), image.get("crop"), image.get("mean", "0"),
                               image.get("std", "1"), bool(image.get("grayscale", False)))


def dataset(source: str, model, image: dict | None = None):
    """A data set checked against the model (``flow``'s loader), cached per process."""
    from edgeq.flow import FlowOptions, _load_data

    key = (source, model.sha256, repr(sorted((image or {}).items())))
    if key not in _DATA:
        _DATA[key] = _load_data(source, model, FlowOptions(Path("."),
                                                           image_opts=_image_opts(image)))
    return _DATA[key]


def build_cell(*, model: str, model_sha256: str, recipe: dict, target: str, out_dir: str,
               build_key: str, calib: str | None = None, calib_samples: int | None = None,
               input_shape: str | None = None, trust_pickle: bool = False,
               image: dict | None = None) -> dict:
    """Quantize and lower one (recipe, target) cell into ``out_dir`` (the cell's own cache
    folder); returns the manifest, with ``build_key`` recorded and an absolute path."""
    from edgeq.artifacts import manifest_path, write_json
    from edgeq.recipes import from_dict
    from edgeq.stages import ExportOptions, export
    from edgeq.targets import get_target

    loaded = _model(model, model_sha256, input_shape, trust_pickle)
    rec = from_dict(dict(recipe), f"'{recipe.get('name')}'")
    ds = dataset(calib, loaded, image) if calib and rec.quantized else None
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    manifest = export(loaded, get_target(target), rec, ds, None,
                      ExportOptions(Path(out_dir), force=True, calib_samples=calib_samples),
                      QUIET)
    art = Path(manifest["artifact"]["path"])
    # The key goes in last: a manifest without it (killed in between) is a cache miss.
    manifest["build_key"] = build_key
    write_json(manifest_path(art), dict(manifest, artifact=dict(manifest["artifact"],
                                                                path=art.name)))
    return manifest


def evaluate_cell(*, artifact: str, data: str, model: str, model_sha256: str,
                  input_shape: str | None = None, trust_pickle: bool = False,
                  image: dict | None = None) -> dict:
    """``{"accuracy": block}`` of the artifact on ``data`` against the fp32 model, or
    ``{"accuracy": None, "accuracy_reason": why}`` when this host cannot run it."""
    from edgeq.stages import evaluate

    loaded = _model(model, model_sha256, input_shape, trust_pickle)
    ds = dataset(data, loaded, image)
    try:
        block = evaluate(Path(artifact), ds, loaded, None, QUIET)
    except CannotRunHere as e:
        return {"accuracy": None, "accuracy_reason": str(e)}
    block["data"] = ds.source
    return {"accuracy": block}


def _inputs(model: str, model_sha256: str, input_shape, trust_pickle, data, image) -> list:
    from edgeq.flow import FlowOptions, profile_inputs

    loaded = _model(model, model_sha256, input_shape, trust_pickle)
    if data:
        return dataset(data, loaded, image).sample(0)
    return profile_inputs(loaded, None, FlowOptions(Path(".")))


def profile_cell(*, artifact: str, device: dict, runs: int, warmup: int, threads: int,
                 model: str, model_sha256: str, data: str | None = None,
                 input_shape: str | None = None, trust_pickle: bool = False,
                 image: dict | None = None) -> dict:
    """``{"profile": block}`` of the artifact on one device entry (``kind`` local, estimate
    or device; see ``spec.DeviceEntry``), or ``{"profile": None, "profile_reason": why}``
    when the artifact cannot run there. Inputs: the first sample of ``data``, else the
    model's example inputs."""
    from edgeq.stages import artifact_info, profile_estimate, profile_local

    threads = device.get("threads") or threads
    try:
        if device["kind"] == "estimate":
            block = profile_estimate(Path(artifact), device["profile"], threads)
        else:
            inputs = _inputs(model, model_sha256, input_shape, trust_pickle, data, image)
            if device["kind"] == "local":
                block = profile_local(Path(artifact), inputs, runs, warmup, threads, QUIET)
            else:
                from edgeq.devices.transport import open_device
                from edgeq.profiling.remote import profile_on_device

                _, target = artifact_info(Path(artifact))
                dev = open_device(device["spec"])
                try:
                    block = profile_on_device(dev, Path(artifact), target.runtime, inputs,
                                              runs, warmup, threads, delegate=target.delegate,
                                              progress=QUIET)
                finally:
                    dev.close()
    except CannotRunHere as e:
        return {"profile": None, "profile_reason": str(e)}
    return {"profile": block}
