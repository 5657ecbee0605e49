"""Observe conv/linear -> ReLU6 outputs after the clamp, in any PT2E quantizer.

ExecuTorch's XNNPACKQuantizer and litert-torch's PT2E quantizer fuse conv/linear with
ReLU (the ReLU's output carries the quantization) but not with ReLU6 (``aten.hardtanh``
with min 0 and max 6): the conv output is observed on its pre-clamp range, half the codes
go to negative values the clamp then drops and the steps are ~3x coarser. After the
quantizer has annotated the graph, this moves each such conv's output quantization to
its hardtanh, exactly as those quantizers do for ReLU: the converted graph is
``dq -> conv -> hardtanh -> q``, which XNNPACK's activation-fusion pass turns into one
quantized conv with an output clamp (and litert-torch into a fused-activation op).
"""
from __future__ import annotations


def _fusable(node) -> bool:
    import torch

    aten = torch.ops.aten
    clamps = (aten.hardtanh.default, aten.hardtanh_.default)
    if node.op != "call_function" or node.target not in clamps:
        return False
    lo = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
    hi = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
    return float(lo) >= 0.0 and float(hi) > float(lo)


def fuse_clamp_annotations(gm) -> int:
    """Move the output quantization of every annotated conv/linear whose only user is a
    non-negative hardtanh (ReLU6) onto that hardtanh. Returns how many were moved."""
    import torch

    aten = torch.ops.aten
    producers = {aten.conv1d.default, aten.conv2d.default, aten.convolution.default,
                 aten.linear.default}
    moved = 0
    for act in gm.graph.nodes:
        if not _fusable(act):
            continue
        prod = act.args[0]
        if not isinstance(prod, torch.fx.Node) or prod.op != "call_function" \
                or prod.target not in producers or len(prod.users) != 1:
            continue
        ann = prod.meta.get("quantization_annotation")
        if ann is None or ann.output_qspec is None:
            continue
        act_ann = act.meta.get("quantization_annotation")
        if act_ann is not None and act_ann.output_qspec is not None \
                and not _shares(act_ann, prod):
            continue  # the quantizer chose something of its own for the clamp: keep it
        act.meta["quantization_annotation"] = type(ann)(output_qspec=ann.output_qspec,
                                                        _annotated=True)
        ann.output_qspec = None
        moved += 1
    return moved


def _shares(ann, prod) -> bool:
    """Whether ``ann`` only shares its input's (``prod``'s) quantization."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    return isinstance(ann.output_qspec, SharedQuantizationSpec)


def fuse_relu6(quantizer):
    """Make ``quantizer.annotate`` also fuse conv/linear -> ReLU6 (see the module doc).
    Returns the quantizer."""
    annotate = quantizer.annotate

    def annotate_and_fuse(model):
        model = annotate(model)
        fuse_clamp_annotations(model)
        return model

    quantizer.annotate = annotate_and_fuse
    return quantizer
