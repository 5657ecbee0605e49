"""ModelSpec -> (module, example inputs).

A spec is ``path/to/file.py:factory``, ``package.module:factory``, a ``.pt2`` file saved
by ``torch.export.save``, a pickled checkpoint (``.pt``/``.pth``/``.ckpt``, only with
``trust_pickle``), or a built-in name (``edgeq.zoo.BUILTINS``). A factory returns
``(module, example_inputs)`` or a module, in which case ``input_shape`` is required.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import BadInput

PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".pkl"}


@dataclass
class LoadedModel:
    """An fp32 model ready to export: the module in eval mode and its example inputs."""

    spec: str
    module: Any  # torch.nn.Module, or None for a model given as a runtime's own file
    example_inputs: tuple  # torch tensors, or numpy arrays when ``module`` is None
    input_names: list[str]
    sha256: str
    params: int | None
    source_file: Path | None = None  # an existing .onnx / .tflite given as MODEL
    source_target: str | None = None  # the target whose runtime reads ``source_file``

    @property
    def input_shapes(self) -> list[tuple]:
        return [tuple(t.shape) for t in self.example_inputs]

    @property
    def metric(self) -> str | None:
        """The headline accuracy metric the model declares (``edgeq_metric`` on the module,
        e.g. ``cosine`` for a sentence encoder, whose argmax means nothing), else None:
        top-1 with labels, else agreement (``edgeq.evaluate.accuracy_block``)."""
        return getattr(self.module, "edgeq_metric", None) if self.module is not None else None

    def summary(self) -> dict:
        return {"spec": self.spec, "sha256": self.sha256, "params": self.params}


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise BadInput(f"--input-shape '{text}': give positive integers like 1,3,224,224")
    return shape


def import_module(name: str):
    """Import ``name`` with the current folder on sys.path, as ``python -m`` would have it:
    the ``edgeq`` console script does not put it there."""
    import os

    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    finally:
        if added:
            sys.path.remove(cwd)


def _import_factory(spec: str):
    target, _, name = spec.rpartition(":")
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise BadInput(f"model file '{target}' not found")
        mod_name = f"_edgeq_model_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
        try:
            mspec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(mspec)
            sys.modules[mod_name] = module
            sys.path.insert(0, str(path.parent.resolve()))
            try:
                mspec.loader.exec_module(module)
            finally:
                sys.path.pop(0)
        except PermissionError as e:
            raise BadInput(f"model file '{target}' is not readable ({e.strerror})") from e
        except Exception as e:
            raise BadInput(f"model file '{target}' failed to import: "
                           f"{type(e).__name__}: {e}") from e
        where = f"model file '{target}'"
    else:
        try:
            module = import_module(target)
        except ImportError as e:
            raise BadInput(f"model '{spec}': cannot import module '{target}' ({e})") from e
        where = f"module '{target}'"
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        found = sorted(n for n, v in vars(module).items()
                       if callable(v) and not n.startswith("_") and
                       getattr(v, "__module__", None) == module.__name__)
        raise BadInput(f"{where} has no factory '{name}'"
                       + (f" (callables there: {', '.join(found[:8])})" if found else ""))
    return factory


def _as_inputs(example, spec: str) -> tuple:
    import torch

    if isinstance(example, torch.Tensor):
        example = (example,)
    if isinstance(example, dict):
        example = tuple(example.values())
    if not isinstance(example, (tuple, list)) or not all(isinstance(t, torch.Tensor)
                                                         for t in example):
        raise BadInput(f"model '{spec}': example inputs must be a tensor or a tuple of "
                       f"tensors, got {type(example).__name__}")
    return tuple(example)


def _forward_names(module, n: int) -> list[str]:
    try:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = [p.name for p in params][:n]
    except (TypeError, ValueError):
        names = []
    return names if len(names) == n else [f"input_{i}" for i in range(n)]


def model_hash(module) -> str:
    """sha256 over the class name and every parameter/buffer (names, shapes, bytes)."""
    import torch

    h = hashlib.sha256(type(module).__qualname__.encode())
    for k, v in module.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes()
                 if t.numel() else b"")
    return h.hexdigest()


def _runtime_file_target(path: Path):
    """The target that reads ``path`` when it is a runtime's own model file (.onnx,
    .tflite), None for PyTorch model specs."""
    if path.suffix in ("", ".py", ".pt2") or path.suffix in PICKLE_SUFFIXES:
        return None
    from edgeq.targets import target_for_file

    return target_for_file(path.suffix)


def _load_runtime_file(spec: str, path: Path) -> LoadedModel:
    import numpy as np

    from edgeq.artifacts import sha256_file
    from edgeq.runtimes import get_runtime

    if not path.is_file():
        raise BadInput(f"model file '{spec}' not found")
    target = _runtime_file_target(path)
    session = get_runtime(target.runtime).open(path)
    names = list(getattr(session, "input_names", None) or
                 [f"input_{i}" for i in range(len(session.input_shapes))])
    dtypes = getattr(session, "input_dtypes", None) or ["float32"] * len(names)
    example = tuple(np.zeros(s, dtype=d) for s, d in zip(session.input_shapes, dtypes))
    return LoadedModel(spec, None, example, names, sha256_file(path), None, path, target.name)


def load_model(spec: str, input_shape: str | None = None,
               trust_pickle: bool = False) -> LoadedModel:
    """Build the fp32 model named by ``spec`` (see the module docstring)."""
    import torch

    from edgeq.zoo import BUILTINS

    path = Path(spec)
    example = None
    if _runtime_file_target(path) is not None:
        return _load_runtime_file(spec, path)
    if spec in BUILTINS:
        result = _import_factory(BUILTINS[spec][0])()
    elif path.suffix == ".pt2":
        if not path.is_file():
            raise BadInput(f"model file '{spec}' not found")
        try:
            ep = torch.export.load(str(path))
        except Exception as e:
            raise BadInput(f"model file '{spec}' is not a torch.export .pt2 archive ({e})") from e
        result = (ep.module(), tuple(ep.example_inputs[0]) if ep.example_inputs else None)
    elif path.suffix in PICKLE_SUFFIXES:
        if not path.is_file():
            raise BadInput(f"model file '{spec}' not found")
        if not trust_pickle:
            raise BadInput(f"model file '{spec}' is a pickle checkpoint, which can run "
                           "arbitrary code when loaded; pass --trust-pickle if you trust it, "
                           "or give a .pt2 file or file.py:factory")
        try:
            result = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as e:
            raise BadInput(f"model file '{spec}' could not be unpickled ({e})") from e
        if isinstance(result, dict):
            raise BadInput(f"model file '{spec}' holds a state dict, not a module; give "
                           "file.py:factory that builds the module and loads it")
    elif ":" in spec:
        factory = _import_factory(spec)
        try:
            result = factory()
        except Exception as e:
            raise BadInput(f"model factory '{spec}' raised {type(e).__name__}: {e}") from e
    elif path.exists() or path.suffix:
        raise BadInput(f"model '{spec}': unsupported kind of file; give file.py:factory, "
                       "package.module:factory, a .pt2 file, or a built-in "
                       f"({', '.join(BUILTINS)})")
    else:
        raise BadInput(f"model '{spec}' not found: give file.py:factory, package.module:"
                       f"factory, a .pt2 file, or a built-in ({', '.join(BUILTINS)})")

    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module):
        module, example = result
    else:
        module = result
    if not isinstance(module, torch.nn.Module):
        raise BadInput(f"model '{spec}': the factory returned {type(module).__name__}; it must "
                       "return an nn.Module or (module, example_inputs)")
    if input_shape:
        example = (torch.randn(parse_shape(input_shape)),)
    if example is None:
        raise BadInput(f"model '{spec}': no example inputs; return (module, example_inputs) "
                       "from the factory or pass --input-shape")
    example = _as_inputs(example, spec)
    declared = getattr(module, "edgeq_metric", None)
    if declared is not None and declared not in ("top1", "agreement", "cosine", "sqnr"):
        raise BadInput(f"model '{spec}': edgeq_metric '{declared}' is not one of top1, "
                       "agreement, cosine, sqnr")
    if path.suffix != ".pt2":  # an exported program's mode was fixed when it was exported
        module = module.eval()
    return LoadedModel(spec, module, example, _forward_names(module, len(example)),
                       model_hash(module), sum(p.numel() for p in module.parameters()))


def output_size(model: LoadedModel) -> int:
    """Number of values per sample in the model's first output (classes for a classifier)."""
    import torch

    if model.module is None:
        from edgeq.runtimes import get_runtime
        from edgeq.targets import get_target

        session = get_runtime(get_target(model.source_target).runtime).open(model.source_file)
        return int(session.run(list(model.example_inputs))[0][0].size)
    with torch.no_grad():
        out = model.module(*model.example_inputs)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return int(out[0].numel())
