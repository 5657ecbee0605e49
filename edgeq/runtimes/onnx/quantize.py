"""Static int8 post-training quantization of an fp32 ``.onnx`` with onnxruntime.quantization,
in QDQ format, with the activation observer the recipe names honoured for real.

The pieces, in order:

1. ``quant_pre_process``: shape inference and ORT's basic graph optimisation.
2. Activation ranges, computed here rather than inside ``quantize_static`` (which can neither
   set histogram bins nor bound memory: its Percentile / Entropy calibrators hold every
   activation, ~8.6 GB for MobileNetV2 on 128 images): edgeq's observers
   (``edgeq.quantize.observers``, the very classes the PT2E flows use, so an observer name
   means one algorithm on every target) per tensor, fed chunk by chunk (at most
   ``CALIB_CHUNK`` samples and ``CALIB_CHUNK_BYTES`` of activations) from a copy of the
   model whose intermediate tensors are extra outputs. The histogram observers keep a fixed
   number of bins, so memory holds one chunk, whatever the calibration set's size.
3. ``quantize_static`` in QDQ format with those ranges handed over through its calibration
   cache (``calibration_cache_path``), the public way to give it precomputed ``TensorsData``.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np

from edgeq.errors import BadInput, RuntimeFailure

CALIB_CHUNK = 16  # samples per calibrator call
CALIB_CHUNK_BYTES = 1 << 30  # and at most this many bytes of activations per call
ACTIVATION_TYPES = ("int8", "uint8")


def quantize(fp32_path: Path, out_path: Path, recipe, calib, activation_dtype: str,
             keep_float_nodes, workdir: Path, progress, int16_nodes=None,
             delegate: str | None = None, reduce_range: bool = False,
             qdq_layout: str = "auto") -> dict:
    """Quantize ``fp32_path`` to a QDQ model at ``out_path``: int8 symmetric weights
    (per-channel or per-tensor per the recipe), ``activation_dtype`` (int8 | uint8)
    per-tensor affine activations calibrated on ``calib`` (an edgeq Dataset).
    ``keep_float_nodes(model) -> list[str]`` names the nodes left in fp32. Returns facts for
    the manifest (observer details, chunk size, excluded nodes). ``int16_nodes(model) ->
    list[str]`` (optional) names the nodes whose edges are 16-bit (``int16.py``).
    ``delegate`` (the target's), ``reduce_range`` and ``qdq_layout`` feed ``cpu_int8.plan``:
    ``auto`` activation dtype, and for the CPU provider the layout its kernels fuse."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    from edgeq.runtimes.onnx.export import quiet

    import inspect

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise RuntimeFailure("this onnxruntime's quantize_static cannot take precomputed "
                             "ranges (calibration_cache_path): pip install -U onnxruntime")
    if activation_dtype not in (*ACTIVATION_TYPES, "auto"):
        raise BadInput(f"target option activation_dtype '{activation_dtype}' is not one of "
                       f"{', '.join(ACTIVATION_TYPES)}")
    pre = workdir / "preprocessed.onnx"
    preprocess(fp32_path, pre)
    model = onnx.load(str(pre))
    exclude = keep_float_nodes(model)
    tensors = activation_tensors(model)
    from edgeq.runtimes.onnx import int16

    wide = int16.tensors(model, [n for n in int16_nodes(model) if n not in exclude],
                         tensors) if int16_nodes else []
    chunk = chunk_size(model, tensors)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    ranges = observer_ranges(pre, model, inputs, tensors, calib, chunk, recipe, workdir,
                             progress, raw=set(wide))
    cache = workdir / "ranges.json"
    save_tensors_data(ranges, cache)
    from edgeq.runtimes.onnx import cpu_int8

    wide_ops = {n.op_type for n in model.graph.node if set(wide) & {*n.input, *n.output}}
    plan = cpu_int8.plan(model, delegate, activation_dtype, exclude, reduce_range, wide_ops,
                         qdq_layout)
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[plan.activation_dtype]
    with progress.task("writing the QDQ model"), quiet():
        quantize_static(
            str(pre), str(out_path), None, quant_format=QuantFormat.QDQ,
            per_channel=recipe.weight_granularity == "per-channel",
            reduce_range=bool(reduce_range), op_types_to_quantize=plan.op_types,
            activation_type=qtype, weight_type=QuantType.QInt8,
            nodes_to_exclude=plan.exclude,
            calibrate_method=ranges.calibration_method, calibration_cache_path=str(cache),
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                           **plan.extra_options,
                           **({"TensorQuantOverrides": int16.overrides(wide)} if wide else {})})
    with progress.task("checking the graph ONNX Runtime runs"), quiet():
        layout = cpu_int8.finish(out_path, plan, workdir, protected=set(wide))
    from edgeq.quantize.observers import describe

    observer = describe(recipe)
    return {"format": "QDQ", "activation_dtype": plan.activation_dtype,
            "weight_dtype": "int8", "ort_layout": layout,
            "observer": observer, "calibration_chunk_samples": chunk,
            "nodes_kept_float": exclude,
            **({"int16_tensors": wide} if int16_nodes else {})}


def preprocess(src: Path, dst: Path) -> None:
    """ORT's ``quant_pre_process``. Symbolic shape inference trips on some graphs; ONNX
    shape inference alone is then enough for the static-shape models edgeq exports."""
    from onnxruntime.quantization import quant_pre_process

    from edgeq.quantize.pt2e import describe_export_error
    from edgeq.runtimes.onnx.export import quiet

    from edgeq.runtimes.onnx.cpu_int8 import restore_metadata

    try:
        with quiet():
            quant_pre_process(str(src), str(dst))
        restore_metadata(src, dst)
        return
    except Exception:
        pass
    try:
        with quiet():
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception as e:
        raise describe_export_error(e, "ONNX Runtime quantization pre-processing") from e
    restore_metadata(src, dst)


def default_op_types() -> list[str]:
    """The op types ``quantize_static`` quantizes when given none (all it knows)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def activation_tensors(model) -> list[str]:
    """The float tensors ORT's calibrators observe (its ``select_tensors_to_calibrate``):
    inputs and outputs of nodes of a quantizable op type, initializers excluded, type
    known from shape inference. The quantizer looks ranges up by these names."""
    import onnx

    infos = {vi.name: vi for vi in model.graph.value_info}
    infos.update({vi.name: vi for vi in model.graph.output})
    infos.update({vi.name: vi for vi in model.graph.input})
    inits = {i.name for i in model.graph.initializer}
    op_types = set(default_op_types())
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    out: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        for name in list(node.input) + list(node.output):
            vi = infos.get(name)
            if vi is not None and name not in inits and vi.type.HasField("tensor_type") \
                    and vi.type.tensor_type.elem_type in floats:
                out[name] = None
    return list(out)


def chunk_size(model, tensors: list[str]) -> int:
    """Samples per calibration call: ``CALIB_CHUNK``, fewer when one sample's observed
    activations (from the static shapes, 4 bytes a value) would pass ``CALIB_CHUNK_BYTES``."""
    infos = {vi.name: vi for vi in list(model.graph.value_info) + list(model.graph.output)
             + list(model.graph.input)}
    per_sample = 0
    for name in tensors:
        dims = infos[name].type.tensor_type.shape.dim
        per_sample += 4 * int(np.prod([d.dim_value if d.dim_value > 0 else 1 for d in dims]))
    return max(1, min(CALIB_CHUNK, CALIB_CHUNK_BYTES // max(per_sample, 1)))


def _feeds(names: list[str], calib, indices):
    """One ``{input name: sample}`` dict per index, batch axis 1, in model input order."""
    for i in indices:
        yield dict(zip(names, calib.sample(i)))


def observer_ranges(pre: Path, model, inputs: list[str], tensors: list[str], calib,
                    chunk: int, recipe, workdir: Path, progress, raw=frozenset()):
    """Per-tensor ranges from edgeq's observer for the recipe (``observers.observer_for``:
    the same classes, bins and percentile the PT2E flows use), int8 per-tensor affine, fed
    ``chunk`` samples at a time (one row per sample) from a copy of the model whose
    intermediate tensors are extra outputs. Returned as MinMax ``TensorsData`` (rmin, rmax)
    chosen so ORT's scale and zero point equal the observer's: rmin = (qmin - zp) * scale,
    rmax = (qmax - zp) * scale. The same grid serves uint8 activations (zero point shifted
    by 128). Tensors in ``raw`` (16-bit ones) get the observer's plain min / max."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorsData

    from edgeq.runtimes.onnx.export import quiet

    with quiet():
        from edgeq.quantize.observers import observed_range, observer_for

    graph_inputs = {i.name for i in model.graph.input}
    wanted = [t for t in tensors if t not in graph_inputs]
    infos = {vi.name: vi for vi in model.graph.value_info}
    present = {o.name for o in model.graph.output}
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    for t in wanted:
        if t not in present:
            augmented.graph.output.append(infos[t])
    aug_path = workdir / "observed.onnx"
    onnx.save(augmented, str(aug_path))
    so = ort.SessionOptions()
    # As ORT's calibrators do: no graph optimisation, so every observed tensor exists.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    session = ort.InferenceSession(str(aug_path), so, providers=["CPUExecutionProvider"])
    # ORT has no scale floor: float32's eps, not the 2**-12 XNNPACK's PT2E configs use.
    ctr = observer_for(recipe, eps=float(torch.finfo(torch.float32).eps))
    observers = {t: ctr(dtype=torch.int8, qscheme=torch.per_tensor_affine) for t in tensors}
    n, name = len(calib), recipe.activation_observer
    with progress.task(f"calibrating ({name}) on {n} samples", total=n) as advance, \
            torch.no_grad():
        for start in range(0, n, chunk):
            idx = range(start, min(start + chunk, n))
            seen: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
            for feed in _feeds(inputs, calib, idx):
                outs = session.run(wanted, feed)
                for t, o in zip(wanted, outs):
                    seen[t].append(o.reshape(1, -1))
                for t in tensors:
                    if t in feed:
                        seen[t].append(np.asarray(feed[t]).reshape(1, -1))
            for t, parts in seen.items():
                observers[t](torch.from_numpy(np.concatenate(parts).astype(np.float32)))
            advance(len(idx))
    ranges = {}
    with progress.task(f"choosing {name} ranges"), quiet():
        for t, obs in observers.items():
            lo, hi = (float(obs.min_val), float(obs.max_val)) if t in raw else \
                observed_range(obs)
            ranges[t] = (np.array(lo, np.float32), np.array(hi, np.float32))
    return TensorsData(CalibrationMethod.MinMax, ranges)


def node_scopes(node, initializers: set[str]) -> list[str]:
    """Names a ``--keep-float`` pattern can match for one ONNX node: its own name, the
    PyTorch module paths the dynamo exporter records (``pkg.torch.onnx.name_scopes``), and
    the modules owning its weights (``features.0.weight`` -> ``features.0``), which is
    what still names a Conv after BatchNorm was fused into it."""
    import ast

    scopes = [node.name]
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes += [s for s in ast.literal_eval(prop.value)[:-1] if s]
            except (ValueError, SyntaxError):
                pass
    scopes += [i.rsplit(".", 1)[0] for i in node.input if i in initializers and "." in i]
    return scopes


def match_keep_float(model, patterns, what: str = "--keep-float") -> list[str]:
    """Names of the nodes matched by the fnmatch ``patterns`` (see ``node_scopes``); a
    pattern matching no node is BadInput, so a typo cannot silently quantize everything."""
    inits = {i.name for i in model.graph.initializer}
    scopes = {n.name: node_scopes(n, inits) for n in model.graph.node}
    out: list[str] = []
    for pat in patterns:
        hits = [name for name, s in scopes.items()
                if any(fnmatch.fnmatchcase(x, pat) for x in s)]
        if not hits:
            examples = list(dict.fromkeys(x for s in scopes.values() for x in s[1:] + s[:1]))
            raise BadInput(f"{what} '{pat}' matches no node of the ONNX graph; names "
                           f"look like {', '.join(examples[:6])}")
        out += [h for h in hits if h not in out]
    return out
