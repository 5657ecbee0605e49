"""``Recipe.int16_layers`` on ONNX Runtime: the activation tensors on those layers' edges
(their inputs and outputs that are not weights) get 16-bit QDQ through quantize_static's
``TensorQuantOverrides`` (``quant_type`` QInt16; ORT then writes the model at opset 21,
whose QuantizeLinear / DequantizeLinear take int16). Weights stay int8.

An edge between a 16-bit layer and an int8 one is 16-bit: a tensor has one quantization.
The CPU provider has no 16-bit kernels, so every node touching such a tensor runs as
DequantizeLinear -> float op -> QuantizeLinear: a size win over float (int8 weights), not
a speed win. Ranges of 16-bit tensors are the observer's min / max: at 65,535 steps there
is no reason to clip."""
from __future__ import annotations


def tensors(model, nodes: list[str], calibrated: list[str]) -> list[str]:
    """The calibrated activation tensors that ``nodes`` (node names) read or write."""
    inits = {i.name for i in model.graph.initializer}
    wanted = set(nodes)
    known = set(calibrated)
    out: dict[str, None] = {}
    for node in model.graph.node:
        if node.name in wanted:
            for t in list(node.input) + list(node.output):
                if t and t not in inits and t in known:
                    out[t] = None
    return list(out)


def overrides(names: list[str]) -> dict:
    """quantize_static's ``TensorQuantOverrides`` making ``names`` 16-bit (signed,
    asymmetric like edgeq's int8 activations)."""
    from onnxruntime.quantization import QuantType

    return {t: [{"quant_type": QuantType.QInt16}] for t in names}
