"""PyTorch -> .tflite with litert-torch (fp32, or int8 through its PT2E quantizer), and an
existing .tflite -> int8 with ai-edge-quantizer.

litert-torch's static int8 models take and return int8 tensors (the converter folds the
boundary quantize / dequantize into the model's I/O types); ``float_io`` puts those ops
back inside the model for apps that want a float interface."""
from __future__ import annotations

import contextlib
import os
import sys
import warnings

import numpy as np

from edgeq.errors import BadInput, RuntimeFailure
from edgeq.runtimes.base import quiet_native_stderr

@contextlib.contextmanager
def quiet_converter():
    """litert-torch prints a progress tree on stdout (which carries ``--json``) unless
    LITERT_TORCH_SHOW_PROGRESS is off, torch.export warns on every pytree copy, and
    ai-edge-quantizer prints progress bars and a size report."""
    old = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        # Python-level prints (progress reports) go to stderr, which is silenced too.
        with warnings.catch_warnings(), quiet_native_stderr(), \
                contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        if old is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = old


def run_ai_edge_quantizer(content: bytes, rm, what: str, error=BadInput) -> bytes:
    """``content`` quantized by ai-edge-quantizer with recipe manager ``rm``; its failure
    is one ``error`` line saying ``what`` could not be done."""
    from ai_edge_quantizer import quantizer as aeq

    try:
        with quiet_converter():
            result = aeq.Quantizer(bytearray(content), rm.get_quantization_recipe()).quantize(
                enable_progress_report=False)
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()),
                     type(e).__name__)
        raise error(f"ai-edge-quantizer could not {what}: {first[:300]}") from e
    return bytes(result.quantized_model)


def _quantizer_class():
    """litert-torch's PT2EQuantizer with three fixes for torch 2.13 / torchao 0.18, which
    litert-torch 0.10 predates:

    * add / mul / cat / pooling: its annotators find these ops through the
      ``source_fn_stack`` metadata, which torch.export no longer records, so none of them
      is annotated. Their outputs then carry no quantization of their own: an add whose
      output feeds another add stays float in the .tflite (DEQUANTIZE -> ADD -> QUANTIZE:
      4 of MobileNetV2's 10 residual adds) and max-pool outputs get requantized. The
      metadata is filled in from the aten op before annotating.
    * keep-float: its module-name filter strips ``L__self___`` (three underscores) from
      ``nn_module_stack`` keys, but torch.export now writes ``L__self__fc``, so no name
      ever matches. Here the filter reads the stack's module paths (``fc``,
      ``features.3``) instead.
    * QAT: its conv+BN annotator hands a plain function to torchao's
      ``_get_aten_graph_module_for_pattern``, which now calls ``torch.export`` on it and
      needs an nn.Module. During ``annotate`` the function is wrapped in one.
    """
    import operator

    import torch
    import torch.nn.functional as F
    from litert_torch.quantize import pt2e_quantizer_utils as utils
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    from edgeq.quantize.pt2e import under

    aten = torch.ops.aten
    # aten op -> the source callable litert-torch's annotators look for.
    sources = {aten.add.Tensor: operator.add, aten.add_.Tensor: operator.add,
               aten.mul.Tensor: operator.mul, aten.mul_.Tensor: operator.mul,
               aten.cat.default: torch.cat, aten.max_pool2d.default: F.max_pool2d,
               aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d,
               aten._adaptive_avg_pool2d.default: F.adaptive_avg_pool2d}

    class _Pattern(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, *args, **kwargs):
            return self.fn(*args, **kwargs)

    class EdgeqPT2EQuantizer(PT2EQuantizer):
        keep_float: tuple[str, ...] = ()
        float_ops = staticmethod(lambda node: False)

        def annotate(self, model):
            for node in model.graph.nodes:
                if (node.op == "call_function" and node.target in sources
                        and not node.meta.get("source_fn_stack")):
                    # One entry per node: each op is its own partition, as before.
                    node.meta["source_fn_stack"] = [(node.name, sources[node.target])]
            original = utils._get_aten_graph_module_for_pattern

            def as_module(pattern, *args, **kwargs):
                if not isinstance(pattern, torch.nn.Module):
                    pattern = _Pattern(pattern)
                return original(pattern, *args, **kwargs)

            utils._get_aten_graph_module_for_pattern = as_module
            try:
                return super().annotate(model)
            finally:
                utils._get_aten_graph_module_for_pattern = original

        def _quantized(self, node) -> bool:
            if self.float_ops(node):  # softmax / mask add / layer norm (recipe float_ops)
                return False
            for path, *_ in (node.meta.get("nn_module_stack") or {}).values():
                path = str(path).replace("L['self'].", "")
                if under(path, self.keep_float):
                    return False
            return True

        def _annotate_for_static_quantization_config(self, model):
            self._annotate_all_static_patterns(model, self.global_config, self._quantized)
            return model

    return EdgeqPT2EQuantizer


def quantizer(recipe, qat: bool, keep_float: list[str], runtime=None):
    """litert-torch's PT2E quantizer for ``recipe``: symmetric int8 weights per channel or
    per tensor, int8 affine activations observed with the recipe's observer, and the
    ``keep_float`` modules (resolved names) left unannotated, hence fp32."""
    import dataclasses

    from edgeq.quantize.observers import observer_for

    with quiet_converter():  # the first litert-torch import logs absl / oneDNN lines
        from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config

        cls = _quantizer_class()
    cfg = get_symmetric_quantization_config(
        is_per_channel=recipe.weight_granularity == "per-channel", is_qat=qat)
    # The config's activation observer is HistogramObserver (eps 2**-12), replaced by the
    # recipe's; QAT uses fake quantizers with their own moving-average observers, left as
    # they are.
    if not qat:
        obs = observer_for(recipe)
        act = dataclasses.replace(cfg.input_activation, observer_or_fake_quant_ctr=obs)
        cfg = dataclasses.replace(cfg, input_activation=act, output_activation=act)
    from edgeq.quantize.passes import pt2e_weight_config
    from edgeq.quantize.relu6 import fuse_relu6

    q = fuse_relu6(cls().set_global(pt2e_weight_config(cfg, recipe)))
    q.keep_float = tuple(keep_float)
    from edgeq.quantize.float_ops import pt2e_filter

    q.float_ops = pt2e_filter(recipe.float_ops, runtime)  # runtime's auto table (float_ops)
    return q


def single_quantization(gm):
    """Give every activation edge of a PT2E-converted graph one quantization.

    Where a producer's output and its consumer's input were observed separately (a pooled
    output sharing the conv's range, then the classifier's own input observer), PT2E
    leaves ``q1 -> dq1 -> [eval dropout] -> q2`` chains. litert-torch 0.10 folds such a
    chain into one int8 tensor with q1's scale but quantizes the consumer's bias with
    q2's, so the bias comes out scaled wrong: MobileNetV2's logits fall from 11.3 dB to
    3.9 dB SQNR. Dropping eval-mode dropout (an identity) and the first pair leaves
    ``x -> q2``, which it converts correctly (with a requantize op where needed).
    Modifies ``gm`` in place and returns it."""
    import torch

    aten, qd = torch.ops.aten, torch.ops.quantized_decomposed
    quant, dequant = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target == aten.dropout.default and \
                len(node.args) > 2 and node.args[2] is False:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    for q2 in list(graph.nodes):
        if q2.op != "call_function" or q2.target != quant:
            continue
        dq1 = q2.args[0]
        if (isinstance(dq1, torch.fx.Node) and dq1.target == dequant and len(dq1.users) == 1
                and isinstance(dq1.args[0], torch.fx.Node) and dq1.args[0].target == quant):
            q1 = dq1.args[0]
            q2.replace_input_with(dq1, q1.args[0])
            graph.erase_node(dq1)
            if not q1.users:
                graph.erase_node(q1)
    graph.lint()
    gm.recompile()
    return gm


def convert(module, model, pt2e_quantizer=None) -> bytes:
    """Convert ``module`` (an nn.Module or a PT2E-converted graph) with ``model``'s example
    inputs; ExportFailure naming the op when litert-torch cannot lower it."""
    from edgeq.quantize.pt2e import describe_export_error

    with quiet_converter():
        import litert_torch
        from litert_torch.quantize.quant_config import QuantConfig

    kwargs, strict = {}, contextlib.nullcontext()
    if pt2e_quantizer is not None:
        kwargs["quant_config"] = QuantConfig(pt2e_quantizer=pt2e_quantizer)
        strict = strict_qdq()
    # Positional sample inputs, as litert-torch's own examples: the signature names them
    # args_0, args_1... in forward() order. (Keyword inputs would carry the argument
    # names, but need a wrapper module that costs the .tflite its per-layer tensor names,
    # and renaming afterwards re-serialises the flatbuffer into a larger file.)
    try:
        with quiet_converter(), strict:
            edge = litert_torch.convert(module, tuple(model.example_inputs), **kwargs)
            content = bytes(edge.model_content())
    except Exception as e:
        raise describe_export_error(e, "LiteRT conversion") from e
    return content if pt2e_quantizer is None else strip_boundary_qdq(content)


@contextlib.contextmanager
def strict_qdq():
    """Convert with the LiteRT converter's ``strict_qdq_mode`` on: quantize exactly what
    the Q/DQ ops in the graph say. litert-torch 0.10 leaves it off, and the converter then
    also quantizes every float op sandwiched between a dequantize and a quantize,
    quantizing its float weights itself: a layer left in float (``keep_float``, the
    recipe's ``float_ops``) came out int8 anyway, with nothing said. With it on, the .tflite
    of a fully quantized model has the same ops and weights; only the I/O boundary
    differs (float, with QUANTIZE / DEQUANTIZE ops), which ``strip_boundary_qdq`` undoes.
    There is no public flag for it, so the config class is wrapped for the call."""
    from litert_torch._convert import litert_converter as lc

    api = lc.converter_api_ext
    original = api.ConvertToTFLConfig
    if not hasattr(original(), "strict_qdq_mode"):
        raise RuntimeFailure("this LiteRT converter has no strict_qdq_mode: layers kept in "
                             "float would be quantized; pip install -U litert-converter")

    def strict_config():
        cfg = original()
        cfg.strict_qdq_mode = True
        return cfg

    api.ConvertToTFLConfig = strict_config
    try:
        yield
    finally:
        api.ConvertToTFLConfig = original


def strip_boundary_qdq(content: bytes) -> bytes:
    """Fold a float input's only consumer, a QUANTIZE, and a float output's producer, a
    DEQUANTIZE, into the model's I/O (which become int8): the interface litert-torch's
    static int8 models have without strict QDQ mode. A boundary a float layer computes
    stays float."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model_from_bytearray(bytearray(content))
    sg = model.subgraphs[0]
    code = {i: max(c.builtinCode, c.deprecatedBuiltinCode)
            for i, c in enumerate(model.operatorCodes)}
    consumers: dict[int, list] = {}
    producer = {}
    for o in sg.operators:
        for i in o.inputs:
            consumers.setdefault(int(i), []).append(o)
        for i in o.outputs:
            producer[int(i)] = o
    f32 = fb.TensorType.FLOAT32
    drop, remap = [], {}
    for pos, idx in enumerate(list(sg.inputs)):
        users = consumers.get(int(idx), [])
        if sg.tensors[idx].type == f32 and len(users) == 1 and \
                code[users[0].opcodeIndex] == fb.BuiltinOperator.QUANTIZE and \
                int(users[0].outputs[0]) not in sg.outputs:
            new = int(users[0].outputs[0])
            drop.append(users[0])
            remap[int(idx)], sg.inputs[pos] = new, new
    for pos, idx in enumerate(list(sg.outputs)):
        op = producer.get(int(idx))
        if op is not None and sg.tensors[idx].type == f32 and \
                code[op.opcodeIndex] == fb.BuiltinOperator.DEQUANTIZE and \
                int(op.inputs[0]) not in sg.inputs and len(consumers.get(int(idx), [])) == 0:
            new = int(op.inputs[0])
            drop.append(op)
            remap[int(idx)], sg.outputs[pos] = new, new
    if not drop:
        return content
    for old, new in remap.items():  # the I/O keep their names
        sg.tensors[new].name, sg.tensors[old].name = sg.tensors[old].name, \
            sg.tensors[new].name
    sg.operators = [o for o in sg.operators if not any(o is d for d in drop)]
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex == 0:
            for tm in (sig.inputs or []) + (sig.outputs or []):
                tm.tensorIndex = remap.get(tm.tensorIndex, tm.tensorIndex)
    _drop_unused_tensors(model, sg)
    return bytes(fu.convert_object_to_bytearray(model))


def _drop_unused_tensors(model, sg) -> None:
    """Remove the tensors no op, input or output of ``sg`` uses (renumbering the rest)."""
    used = {int(i) for o in sg.operators for i in list(o.inputs) + list(o.outputs) if i >= 0}
    used |= {int(i) for i in list(sg.inputs) + list(sg.outputs)}
    keep = [i for i in range(len(sg.tensors)) if i in used]
    new = {old: n for n, old in enumerate(keep)}
    sg.tensors = [sg.tensors[i] for i in keep]
    for o in sg.operators:
        o.inputs = [new[int(i)] if i >= 0 else i for i in o.inputs]
        o.outputs = [new[int(i)] for i in o.outputs]
        if o.intermediates is not None:
            o.intermediates = [new[int(i)] for i in o.intermediates if int(i) in new]
    sg.inputs = [new[int(i)] for i in sg.inputs]
    sg.outputs = [new[int(i)] for i in sg.outputs]
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex == 0:
            for tm in (sig.inputs or []) + (sig.outputs or []):
                tm.tensorIndex = new[tm.tensorIndex]


def float_io(content: bytes) -> bytes:
    """Give a full-integer model float inputs and outputs: a QUANTIZE op (with the old
    input tensor's scale and zero point) in front of each integer input and a DEQUANTIZE
    after each integer output, so the model can replace its fp32 version in an app."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model_from_bytearray(bytearray(content))
    sg = model.subgraphs[0]

    def opcode(code: int) -> int:
        for i, c in enumerate(model.operatorCodes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
                c.version = max(c.version, 2)  # v2: int8 (v1 is uint8 only)
                return i
        c = fb.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 2
        model.operatorCodes.append(c)
        return len(model.operatorCodes) - 1

    def float_twin(idx: int) -> int:
        old = sg.tensors[idx]
        t = fb.TensorT()
        t.shape, t.shapeSignature = old.shape, old.shapeSignature
        t.type, t.buffer, t.name = fb.TensorType.FLOAT32, 0, old.name
        old.name = (old.name or b"") + b"_int8" if isinstance(old.name, bytes) else \
            f"{old.name or ''}_int8"
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    def is_int(idx: int) -> bool:
        t = sg.tensors[idx]
        return t.type in (fb.TensorType.INT8, fb.TensorType.UINT8, fb.TensorType.INT16) \
            and t.quantization is not None and t.quantization.scale is not None \
            and len(t.quantization.scale) == 1

    def op(code: int, inputs: list[int], outputs: list[int]):
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = opcode(code), inputs, outputs
        return o

    remap: dict[int, int] = {}
    head, tail = [], []
    for pos, idx in enumerate(list(sg.inputs)):
        if is_int(idx):
            new = remap[idx] = float_twin(idx)
            head.append(op(fb.BuiltinOperator.QUANTIZE, [new], [idx]))
            sg.inputs[pos] = new
    for pos, idx in enumerate(list(sg.outputs)):
        if is_int(idx):
            new = remap[idx] = float_twin(idx)
            tail.append(op(fb.BuiltinOperator.DEQUANTIZE, [idx], [new]))
            sg.outputs[pos] = new
    if not remap:
        return content
    sg.operators = head + list(sg.operators) + tail
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex == 0:
            for tm in (sig.inputs or []) + (sig.outputs or []):
                tm.tensorIndex = remap.get(tm.tensorIndex, tm.tensorIndex)
    return bytes(fu.convert_object_to_bytearray(model))


def io_types(content: bytes) -> list[int]:
    """Schema TensorType codes of the main subgraph's inputs then outputs."""
    from ai_edge_litert import schema_py_generated as fb

    sg = fb.Model.GetRootAs(content, 0).Subgraphs(0)
    return [sg.Tensors(int(i)).Type() for i in
            list(sg.InputsAsNumpy()) + list(sg.OutputsAsNumpy())]


def int8_io(content: bytes) -> bytes:
    """Make every float input / output int8 by folding its boundary QUANTIZE / DEQUANTIZE
    into it (``strip_boundary_qdq``). BadInput when a boundary is not such an op (a layer
    kept in float computes it)."""
    float32 = 0  # schema TensorType code
    out = strip_boundary_qdq(content)
    if float32 in io_types(out):
        raise BadInput("io_dtype int8: an input or output of the model is computed in float "
                       "(a layer kept in float at the boundary?); use io_dtype auto or float")
    return out


def quantize_tflite(content: bytes, recipe, calib) -> bytes:
    """Static int8 quantization of an existing float .tflite with ai-edge-quantizer: int8
    weights per channel or per tensor, int8 activations from the global min / max over
    ``calib`` (fed one sample at a time: the model's batch is fixed). ai-edge-quantizer
    would otherwise take a moving average of per-sample ranges, which clips outliers
    that edgeq's ``minmax`` keeps; it has no histogram observer. Like litert-torch, it
    makes the model's inputs and outputs int8."""
    from ai_edge_quantizer import calibrator, qtyping, quantizer as aeq, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    from edgeq.runtimes.tflite.session import load_interpreter

    it = load_interpreter(model_content=content, xnnpack=False)
    sigs = it._get_full_signature_list()
    if len(sigs) != 1:
        raise BadInput(f"the .tflite has {len(sigs)} signatures; edgeq quantizes models "
                       "with exactly one")
    key, sig = next(iter(sigs.items()))
    # Dataset columns follow the model's inputs in subgraph order (the names edgeq gave
    # them came from this same file); the calibrator wants them by signature name.
    name_of = {v: k for k, v in sig["inputs"].items()}
    sig_names = [name_of[d["index"]] for d in it.get_input_details()]
    samples = [{n: np.ascontiguousarray(x) for n, x in zip(sig_names, calib.sample(i))}
               for i in range(len(calib))]
    rm = recipe_manager.RecipeManager()
    rm.add_static_config(
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        activation_num_bits=8, weight_num_bits=8,
        weight_granularity=qtyping.QuantGranularity.CHANNELWISE
        if recipe.weight_granularity == "per-channel" else qtyping.QuantGranularity.TENSORWISE,
        algorithm_key=aeq.AlgorithmName.MIN_MAX_UNIFORM_QUANT)
    try:
        with quiet_converter():
            cal = calibrator.Calibrator(bytes(content), num_threads=1,
                                        qsv_update_func=qsv_utils.min_max_update)
            cal.calibrate({key: samples}, rm)
            qt = aeq.Quantizer(bytearray(content), rm.get_quantization_recipe())
            result = qt.quantize(cal.get_model_qsvs(), enable_progress_report=False)
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()),
                     type(e).__name__)
        raise BadInput(f"ai-edge-quantizer could not quantize the .tflite: {first[:300]}") from e
    return bytes(result.quantized_model)
