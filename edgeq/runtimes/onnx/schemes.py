"""Dynamic and weight-only recipes on ONNX Runtime (Linear layers: ``MatMul`` / ``Gemm``
nodes whose weight is an initializer; see ``edgeq.quantize.schemes``).

* ``dynamic``: ``onnxruntime.quantization.quantize_dynamic``, int8 symmetric weights per
  channel (or per tensor); activations quantized to uint8 at run time
  (``DynamicQuantizeLinear``, which is uint8 only) feeding ``MatMulInteger``.
* ``weight-only`` per group (int4 or int8): ``MatMulNBitsQuantizer`` (the ``MatMulNBits``
  contrib op, block size = group size, symmetric), float activations. ``Gemm`` nodes are
  first rewritten as ``MatMul`` + ``Add`` (the quantizer only takes ``MatMul``).
* ``weight-only`` int8 per channel: ``MatMulNBits`` has no per-channel mode, so each weight
  becomes an int8 initializer behind a standard ``DequantizeLinear`` (per-axis scales), the
  layer computing in float.

``MatMulNBits`` is a CPU contrib op: NNAPI has neither it nor 4-bit ops, so per-group
recipes are refused for a target whose delegate is ``nnapi``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.errors import BadInput

NO_NNAPI = {
    4: "NNAPI has no 4-bit ops",
    8: "per-group weights need MatMulNBits, an ONNX Runtime CPU contrib op NNAPI lacks",
}


def check_target(recipe, target) -> None:
    """BadInput (before any work) when ``target`` cannot run ``recipe``: per-group weights
    (MatMulNBits) on NNAPI. Other schemes build, and the predicted NNAPI coverage in the
    manifest shows what would fall back to the CPU."""
    if recipe.weight_granularity == "per-group" and target.delegate == "nnapi":
        raise BadInput(f"int{recipe.weight_bits} weight-only is not available for "
                       f"{target.name}: {NO_NNAPI[recipe.weight_bits]}; use onnx-cpu or "
                       "--recipe int8")


def linear_nodes(model) -> list[tuple[object, object, int]]:
    """(node, weight initializer, in_features) of every MatMul / Gemm with a 2-D constant
    weight: the ONNX form of ``nn.Linear``."""
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        w = inits.get(node.input[1])
        if w is None or len(w.dims) != 2:
            continue
        attrs = {a.name: a for a in node.attribute}
        trans_b = node.op_type == "Gemm" and "transB" in attrs and attrs["transB"].i == 1
        if node.op_type == "Gemm" and ("transA" in attrs and attrs["transA"].i):
            continue
        out.append((node, w, int(w.dims[1] if trans_b else w.dims[0])))
    return out


def layer_name(node, weight) -> str:
    """The PyTorch module a Linear node came from (``fc1.weight`` -> ``fc1``), else the
    node's name."""
    return weight.name.rsplit(".", 1)[0] if "." in weight.name else node.name


def quantize(fp32: Path, out: Path, recipe, keep_float_nodes, workdir: Path,
             progress) -> dict:
    """Write the dynamic / weight-only model of ``fp32`` to ``out``; the manifest's
    ``quantization`` block. ``keep_float_nodes(model) -> [node names]`` (``--keep-float``)."""
    import onnx

    from edgeq.quantize import schemes
    from edgeq.runtimes.onnx.export import quiet
    from edgeq.runtimes.onnx.quantize import preprocess

    pre = workdir / "preprocessed.onnx"
    preprocess(fp32, pre)
    model = onnx.load(str(pre))
    exclude = set(keep_float_nodes(model))
    nodes = [(n, w, k) for n, w, k in linear_nodes(model) if n.name not in exclude]
    layers = [{"name": layer_name(n, w), "in_features": k,
               "out_features": int(np.prod(w.dims)) // k} for n, w, k in nodes]
    if not layers:
        raise BadInput("the ONNX graph has no Linear (MatMul / Gemm with a constant weight) "
                       "to quantize; dynamic and weight-only recipes quantize Linear layers "
                       "only (use --recipe int8)")
    schemes.check_group_size(recipe, layers)
    names = [n.name for n, _, _ in nodes]
    with progress.task(f"quantizing {len(names)} Linear layers ({recipe.name})"), quiet():
        if recipe.method == "dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # quantize_dynamic renames the Gemms it splits; split them here, names kept.
            _gemm_to_matmul(model, set(names))
            mm = workdir / "matmul.onnx"
            onnx.save(model, str(mm))
            quantize_dynamic(str(mm), str(out), weight_type=QuantType.QInt8,
                             per_channel=recipe.weight_granularity == "per-channel",
                             nodes_to_quantize=names, op_types_to_quantize=["MatMul"],
                             extra_options={"WeightSymmetric": True})
            executed, acts, tool = ("DynamicQuantizeLinear (uint8 activations, per tensor, "
                                    "at run time) -> MatMulInteger", "uint8, quantized per "
                                    "tensor at run time", "onnxruntime quantize_dynamic")
        elif recipe.weight_granularity == "per-group":
            _matmul_nbits(model, set(names), recipe, out)
            executed, acts, tool = (f"MatMulNBits (bits={recipe.weight_bits}, block_size="
                                    f"{recipe.group_size}, symmetric), float compute",
                                    "float", "onnxruntime MatMulNBitsQuantizer")
        else:
            _dequantize_linear(model, set(names), out)
            executed, acts, tool = ("int8 per-channel DequantizeLinear -> MatMul/Gemm, "
                                    "float compute", "float", "edgeq (QDQ weights)")
    return schemes.describe(recipe, layers, executed, acts, tool=tool,
                            nodes_kept_float=sorted(exclude))


def _gemm_to_matmul(model, names: set[str]) -> None:
    """Rewrite each Gemm in ``names`` (alpha = beta = 1, no transA) as MatMul (+ Add for
    the bias), transposing a transB weight, in place; the MatMul keeps the Gemm's name."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    new_nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.name not in names
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            new_nodes.append(node)
            continue
        w_name = node.input[1]
        if attrs.get("transB", 0):
            w = inits[w_name]
            t = numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(w).T),
                                        w_name + "_kn")
            model.graph.initializer.append(t)
            w_name = t.name
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = node.output[0] + "_mm" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [mm_out],
                                          name=node.name))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]],
                                              [node.output[0]], name=node.name + "_bias"))
    _set_nodes(model, new_nodes)


def _set_nodes(model, nodes) -> None:
    """Replace the graph's nodes with ``nodes``, drop initializers no node reads any more,
    and check the model."""
    import onnx

    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.checker.check_model(model)


def _matmul_nbits(model, names: set[str], recipe, out: Path) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    _gemm_to_matmul(model, names)
    q = MatMulNBitsQuantizer(model, bits=recipe.weight_bits, block_size=recipe.group_size,
                             is_symmetric=True, nodes_to_include=sorted(names),
                             op_types_to_quantize=("MatMul",))
    q.process()
    q.model.save_model_to_file(str(out), use_external_data_format=False)


def _dequantize_linear(model, names: set[str], out: Path) -> None:
    """Int8 symmetric per-output-channel weights behind DequantizeLinear for each Linear
    node in ``names``; written to ``out``."""
    import onnx
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    dq_nodes, done = [], set()
    for node, w, _ in linear_nodes(model):
        if node.name not in names:
            continue
        attrs = {a.name: a.i for a in node.attribute if a.name == "transB"}
        axis = 0 if node.op_type == "Gemm" and attrs.get("transB", 0) else 1
        arr = numpy_helper.to_array(inits[w.name]).astype(np.float32)
        amax = np.abs(arr).max(axis=1 - axis)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        shape = (-1, 1) if axis == 0 else (1, -1)
        q = np.clip(np.round(arr / scale.reshape(shape)), -127, 127).astype(np.int8)
        base = w.name
        node.input[1] = base + "_dq"
        if base in done:  # a weight shared by two layers is quantized once
            continue
        done.add(base)
        model.graph.initializer.extend([
            numpy_helper.from_array(q, base + "_int8"),
            numpy_helper.from_array(scale, base + "_scale"),
            numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), base + "_zp")])
        dq_nodes.append(helper.make_node(
            "DequantizeLinear", [base + "_int8", base + "_scale", base + "_zp"],
            [base + "_dq"], name=base + "_DequantizeLinear", axis=axis))
    _set_nodes(model, dq_nodes + list(model.graph.node))
    onnx.save(model, str(out))


def weight_grid(recipe):
    """The weight grid (``edgeq.quantize.gptq.Grid``) ONNX Runtime's quantizer for
    ``recipe`` rounds on, so GPTQ / AWQ choose integers it reproduces. MatMulNBitsQuantizer
    (per group, int4 / int8, symmetric; MLAS ``BlockwiseQuantizer``): the signed scale
    ``peak / -2^(b-1)`` per block, integers ``round(w / scale)`` (half up, after adding the
    zero point 2^(b-1)) in [-2^(b-1), 2^(b-1) - 1]. Int8 per channel (``_dequantize_linear``)
    and ``quantize_dynamic`` / static: symmetric [-127, 127], scale max|w| / 127."""
    from edgeq.quantize import gptq, schemes

    if not schemes.is_scheme(recipe):
        return gptq.grid_of(recipe)
    if recipe.weight_granularity == "per-group":
        return gptq.Grid.peak_to_min(recipe.weight_bits, recipe.group_size)
    return gptq.Grid.restricted(8, -1 if recipe.weight_granularity == "per-tensor" else None)
