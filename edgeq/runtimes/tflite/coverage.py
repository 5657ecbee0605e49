"""Which ops of a .tflite run in the delegate.

XNNPACK is measured: the interpreter applies it at load time and replaces the ops it takes
by DELEGATE nodes, whose partitions are recovered here. NNAPI cannot run on this host, so
its coverage is *predicted* from a table transcribed from the LiteRT NNAPI delegate's own
validation (``NNAPIDelegateKernel::Validate`` in ``tflite/delegates/nnapi/nnapi_delegate.cc``,
google-ai-edge/LiteRT at commit 5c8a6d4b): per op, the Android API level it needs, the
highest op version it accepts, and the input types it takes. Checks that need tensor
values (crops, split sizes) or vendor drivers are not modelled: a driver may still reject
an op the table accepts."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from edgeq.runtimes.base import Delegation

NNAPI_SOURCE = ("LiteRT tflite/delegates/nnapi/nnapi_delegate.cc "
                "(NNAPIDelegateKernel::Validate, commit 5c8a6d4b)")

# TfLiteType codes (schema TensorType) used below.
F32, F16, I32, U8, I64, BOOL, I16, I8 = 0, 1, 2, 3, 4, 6, 7, 9
_TYPE_NAMES = {F32: "float32", F16: "float16", I32: "int32", U8: "uint8", I64: "int64",
               BOOL: "bool", I16: "int16", I8: "int8"}


@dataclass
class Op:
    """One operator of subgraph 0: builtin name (or custom code), op version, and for each
    input / output tensor its (type code, shape, is constant, zero point or None); the
    tensors' indices, and the output tensors' names (ai-edge-quantizer's op scope)."""

    name: str
    version: int
    inputs: list
    outputs: list
    input_ids: list = field(default_factory=list)
    output_ids: list = field(default_factory=list)
    output_names: list = field(default_factory=list)

    @property
    def scope(self) -> str:
        """ai-edge-quantizer's name for the op: its output tensor names joined by ``;``."""
        return ";".join(self.output_names) + ";"


def read_ops(model: bytes) -> list[Op]:
    """Operators of the main subgraph, in execution order, from the flatbuffer itself."""
    from ai_edge_litert import schema_py_generated as fb

    m = fb.Model.GetRootAs(model, 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(m.OperatorCodesLength()):
        c = m.OperatorCodes(i)
        # Codes below 127 live in the deprecated int8 field; take the larger of the two.
        code = max(c.BuiltinCode(), c.DeprecatedBuiltinCode())
        name = (c.CustomCode() or b"custom").decode() if code == fb.BuiltinOperator.CUSTOM \
            else names.get(code, f"BUILTIN_{code}")
        codes.append((name, c.Version()))
    sg = m.Subgraphs(0)

    def tensor(i: int):
        if i < 0:
            return None  # an omitted optional input
        t = sg.Tensors(i)
        buf = m.Buffers(t.Buffer()) if t.Buffer() < m.BuffersLength() else None
        const = buf is not None and (buf.DataLength() > 0 or buf.Offset() > 1)
        q = t.Quantization()
        zp = int(q.ZeroPoint(0)) if q is not None and q.ZeroPointLength() else None
        return (t.Type(), tuple(t.ShapeAsNumpy()) if t.ShapeLength() else (), const, zp)

    ops = []
    for j in range(sg.OperatorsLength()):
        o = sg.Operators(j)
        name, version = codes[o.OpcodeIndex()]
        ins = [int(i) for i in o.InputsAsNumpy()] if o.InputsLength() else []
        outs = [int(i) for i in o.OutputsAsNumpy()] if o.OutputsLength() else []
        ops.append(Op(name, version, [tensor(i) for i in ins], [tensor(i) for i in outs], ins,
                      outs, [sg.Tensors(i).Name().decode() for i in outs]))
    return ops


# -- XNNPACK: measured -----------------------------------------------------------------------
def xnnpack_delegation(model: bytes) -> Delegation:
    """Load ``model`` with the XNNPACK delegate (the interpreter's default) and count the
    original nodes each DELEGATE node replaced (``delegated_ops``)."""
    originals, delegated, _ = delegated_ops(model)
    fallback = Counter(n["op_name"] for n in originals if n["index"] not in delegated)
    return Delegation(len(delegated), len(originals), dict(fallback))


def delegated_ops(model: bytes) -> tuple[list[dict], set[int], object]:
    """(the original op details, the indices of those XNNPACK took, the interpreter).

    A delegate partition's inputs are every tensor its nodes read from outside it (weights
    included), so its nodes are found by walking back from its outputs through producers
    until a partition input is reached."""
    from edgeq.runtimes.tflite.session import load_interpreter

    it = load_interpreter(model_content=model, num_threads=1)
    nodes = it._get_ops_details()  # originals first, then one node per partition
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    originals = [n for n in nodes if n["op_name"] != "DELEGATE"]
    producer = {int(t): n["index"] for n in originals for t in n["outputs"]}
    by_index = {n["index"]: n for n in originals}
    delegated: set[int] = set()
    for d in delegates:
        boundary = {int(t) for t in d["inputs"]}
        stack = [producer[int(t)] for t in d["outputs"] if int(t) in producer]
        while stack:
            idx = stack.pop()
            if idx in delegated:
                continue
            delegated.add(idx)
            stack += [producer[int(t)] for t in by_index[idx]["inputs"]
                      if int(t) >= 0 and int(t) not in boundary and int(t) in producer]
    return originals, delegated, it


# -- NNAPI: predicted ------------------------------------------------------------------------
# Android API levels of the NNAPI feature levels (kMinSdkVersionForNNAPI*, and the
# updatable runtime's feature levels 6 and 7, which shipped with Android 13 and 14).
NNAPI_10, NNAPI_11, NNAPI_12, NNAPI_13, FL6, FL7 = 27, 28, 29, 30, 33, 34
_F, _Q, _I = (F32,), (U8, I8), (I32,)

# op -> (minimum API level, highest op version accepted, input-0 types accepted or None
# for "not checked"). Type lists that widen with the API level are handled in _extra().
NNAPI_OPS: dict[str, tuple[int, int, tuple | None]] = {
    "ADD": (NNAPI_10, 2, _F + _Q), "MUL": (NNAPI_10, 2, _F + _Q),
    "SUB": (NNAPI_11, 3, None), "DIV": (NNAPI_11, 1, _F),
    "ARG_MAX": (NNAPI_12, 2, (F16,) + _F + _I + _Q),
    "ARG_MIN": (NNAPI_12, 2, (F16,) + _F + _I + _Q),
    "AVERAGE_POOL_2D": (NNAPI_10, 2, _F + _Q), "MAX_POOL_2D": (NNAPI_10, 2, _F + _Q),
    "L2_POOL_2D": (NNAPI_10, 1, _F),
    "CONV_2D": (NNAPI_10, 5, None), "DEPTHWISE_CONV_2D": (NNAPI_10, 3, None),
    "FULLY_CONNECTED": (NNAPI_10, 5, None), "HARD_SWISH": (NNAPI_10, 99, _F + _Q),
    "SOFTMAX": (NNAPI_10, 2, _F + _Q), "RESHAPE": (NNAPI_10, 1, _F + _Q),
    "RESIZE_BILINEAR": (NNAPI_10, 3, _F + _Q), "RESIZE_NEAREST_NEIGHBOR": (NNAPI_12, 3, _F + _Q),
    "SQUEEZE": (NNAPI_11, 1, None), "L2_NORMALIZATION": (NNAPI_10, 2, None),
    "LOCAL_RESPONSE_NORMALIZATION": (NNAPI_10, 1, None),
    "CONCATENATION": (NNAPI_10, 2, (F16,) + _F + _Q), "DEQUANTIZE": (NNAPI_10, 2, None),
    "FLOOR": (NNAPI_10, 1, None), "RELU": (NNAPI_10, 2, _F + _Q),
    "RELU_N1_TO_1": (NNAPI_10, 2, _F + _Q), "RELU6": (NNAPI_10, 2, _F + _Q),
    "LOGISTIC": (NNAPI_10, 2, _F + _Q), "TANH": (NNAPI_10, 2, None),
    "PAD": (NNAPI_11, 2, _F + _Q), "PADV2": (NNAPI_12, 2, _F + _Q),
    "SPACE_TO_BATCH_ND": (NNAPI_11, 2, None), "BATCH_TO_SPACE_ND": (NNAPI_11, 2, None),
    "STRIDED_SLICE": (NNAPI_11, 2, _F + _Q), "TRANSPOSE": (NNAPI_11, 2, None),
    "ABS": (NNAPI_12, 1, _F), "EXP": (NNAPI_12, 1, _F), "LOG": (NNAPI_12, 1, _F),
    "POW": (NNAPI_12, 1, _F), "RSQRT": (NNAPI_12, 2, _F), "SQRT": (NNAPI_12, 1, _F),
    "SIN": (NNAPI_12, 1, _F), "COS": (NNAPI_12, 1, _F),
    "SLICE": (NNAPI_12, 2, _F + _I + _Q), "TRANSPOSE_CONV": (NNAPI_12, 4, None),
    "SPACE_TO_DEPTH": (NNAPI_10, 2, _F + _Q), "DEPTH_TO_SPACE": (NNAPI_10, 99, _F + _Q),
    "MEAN": (NNAPI_11, 2, None), "MAXIMUM": (NNAPI_12, 3, _F + _Q + _I),
    "MINIMUM": (NNAPI_12, 3, _F + _Q + _I), "CAST": (NNAPI_12, 1, None),
    "LEAKY_RELU": (NNAPI_12, 1, _F + _Q), "PRELU": (NNAPI_12, 1, _F + _Q),
    "TILE": (NNAPI_12, 1, _F + _Q + _I), "LOGICAL_OR": (NNAPI_12, 1, (BOOL,)),
    "LOGICAL_AND": (NNAPI_12, 1, (BOOL,)), "LOGICAL_NOT": (NNAPI_12, 1, (BOOL,)),
    **{k: (NNAPI_12, 2, _F + _Q + (BOOL,) + _I) for k in
       ("LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "EQUAL", "NOT_EQUAL")},
    "NEG": (NNAPI_12, 2, _F + _I), "TOPK_V2": (NNAPI_12, 2, _F + _I + _Q),
    "SELECT": (NNAPI_12, 2, None), "GATHER": (NNAPI_12, 2, None),
    "EXPAND_DIMS": (NNAPI_12, 1, (F16,) + _F + _I + _Q), "SPLIT": (NNAPI_12, 3, None),
    "SPLIT_V": (NNAPI_13, 2, None), "LOG_SOFTMAX": (NNAPI_12, 1, _F),
    "QUANTIZE": (NNAPI_12, 2, _F + _Q), "REDUCE_ANY": (NNAPI_12, 2, None),
    "REDUCE_MIN": (NNAPI_12, 2, _F + _Q), "REDUCE_MAX": (NNAPI_12, 2, _F + _Q),
    "REDUCE_PROD": (NNAPI_12, 1, _F), "SUM": (NNAPI_12, 1, _F), "ELU": (NNAPI_13, 1, _F),
    "FILL": (NNAPI_13, 1, None), "PACK": (NNAPI_13, 2, None), "UNPACK": (NNAPI_13, 2, _F + _Q),
    "SQUARED_DIFFERENCE": (NNAPI_11, 2, None), "BATCH_MATMUL": (FL6, 2, _F + _I + (I8,)),
    "MIRROR_PAD": (FL7, 2, _F + _Q + _I), "REVERSE_V2": (FL7, 3, _F + _Q + _I),
    "EMBEDDING_LOOKUP": (NNAPI_10, 1, None), "HASHTABLE_LOOKUP": (NNAPI_10, 1, None),
    "LSTM": (NNAPI_11, 3, None), "UNIDIRECTIONAL_SEQUENCE_LSTM": (NNAPI_12, 2, None),
    "BIDIRECTIONAL_SEQUENCE_LSTM": (NNAPI_12, 1, None), "RNN": (NNAPI_10, 1, None),
    "UNIDIRECTIONAL_SEQUENCE_RNN": (NNAPI_12, 1, None), "SVDF": (NNAPI_11, 1, None),
    "LSH_PROJECTION": (NNAPI_10, 1, None),
}
# Ops whose inputs must have rank <= 4 (NNAPI's tensor rank limit for them).
_RANK4 = {"ADD", "MUL", "SUB", "DIV", "SOFTMAX", "RESHAPE", "CONCATENATION", "MEAN",
          "SQUARED_DIFFERENCE", "UNPACK"}
# Ops whose second input (shape / permutation / axis / size) must be a constant.
_CONST_ARG1 = {"RESHAPE", "TRANSPOSE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
               "EXPAND_DIMS", "TOPK_V2"}
# The delegate hands at most this many partitions to NNAPI, the largest ones
# (StatefulNnApiDelegate::Options::max_number_delegated_partitions).
NNAPI_MAX_PARTITIONS = 3


def _extra(op: Op, api: int) -> str | None:
    """The type rules that change with the API level, for the ops where they matter."""
    t0 = op.inputs[0][0] if op.inputs and op.inputs[0] else None
    quant = t0 in _Q
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and api < NNAPI_12:
        if t0 not in (F32, U8):
            return "int8 convolutions need Android 10 (NNAPI 1.2)"
    if op.name == "CONV_2D" and (len(op.inputs) < 3 or op.inputs[2] is None):
        return "CONV_2D without bias is not supported"
    if op.name in ("ADD", "MUL") and t0 == I32:
        return None if api >= NNAPI_13 else "int32 needs Android 11 (NNAPI 1.3)"
    if op.name == "SUB":
        need = NNAPI_11 if t0 == F32 else NNAPI_12 if quant else NNAPI_13 if t0 == I32 else None
        return None if need is not None and api >= need else \
            f"{_TYPE_NAMES.get(t0, t0)} input needs a newer Android or is not supported"
    if op.name == "TANH" and quant and api < NNAPI_12:
        return "quantized TANH needs Android 10 (NNAPI 1.2)"
    if op.name == "MEAN" and t0 != F32 and not (quant and api >= NNAPI_12):
        return "quantized MEAN needs Android 10 (NNAPI 1.2)"
    if op.name in ("PAD",) and t0 != F32 and api < NNAPI_12:
        return "quantized PAD needs Android 10 (NNAPI 1.2)"
    if op.name == "DEQUANTIZE" and op.inputs and op.inputs[0]:
        if t0 == F16:
            return None if api >= NNAPI_13 else "float16 DEQUANTIZE needs Android 11"
        if t0 == I8 and api < NNAPI_12:
            return "int8 DEQUANTIZE needs Android 10 (NNAPI 1.2)"
        if t0 == I8 and api == NNAPI_12 and op.inputs[0][3] not in (0, None):
            return "int8 DEQUANTIZE with a non-zero zero point needs Android 11 (NNAPI 1.3)"
        if t0 not in (U8, I8):
            return f"DEQUANTIZE of {_TYPE_NAMES.get(t0, t0)} is not supported"
    if op.name == "QUANTIZE" and op.outputs and op.outputs[0]:
        out = op.outputs[0][0]
        if out == I8 and api < NNAPI_13:
            return "QUANTIZE to int8 needs Android 11 (NNAPI 1.3)"
        if out not in (U8, I8):
            return f"QUANTIZE to {_TYPE_NAMES.get(out, out)} is not supported"
    if op.name == "SPLIT" and t0 == I8 and api < NNAPI_13:
        return "int8 SPLIT needs Android 11 (NNAPI 1.3)"
    if op.name == "RESHAPE" and t0 == I32 and api < FL6:
        return "int32 RESHAPE needs NNAPI feature level 6"
    return None


def nnapi_reason(op: Op, api: int) -> str | None:
    """Why NNAPI at Android API level ``api`` would not take ``op`` (None: it would)."""
    rule = NNAPI_OPS.get(op.name)
    if rule is None:
        return "not mapped by the NNAPI delegate"
    min_api, max_version, types = rule
    if api < min_api:
        return f"needs Android API level {min_api}"
    if op.version > max_version:
        return f"op version {op.version} is newer than the {max_version} NNAPI accepts"
    t0 = op.inputs[0][0] if op.inputs and op.inputs[0] else None
    if types is not None and t0 not in types and not (op.name in ("ADD", "MUL") and t0 == I32):
        return f"{_TYPE_NAMES.get(t0, t0)} input is not supported"
    if op.name in _RANK4 and any(t is not None and len(t[1]) > 4 for t in op.inputs[:2]):
        return "input rank above 4"
    if op.name in _CONST_ARG1 and (len(op.inputs) < 2 or op.inputs[1] is None
                                   or not op.inputs[1][2]):
        return "its shape / permutation / axis input is not a constant"
    if any(t is not None and t[0] == I64 for t in op.inputs + op.outputs):
        return "int64 tensors are not supported"
    return _extra(op, api)


def nnapi_delegation(model: bytes, api: int) -> tuple[Delegation, dict[str, str]]:
    """Predicted NNAPI coverage at Android API level ``api``: a Delegation, and for each
    op kept on the CPU the first reason found. Supported ops are grouped into runs in
    execution order (a simplification of LiteRT's partitioning, exact for chains); only
    the largest ``NNAPI_MAX_PARTITIONS`` runs are delegated, as the delegate does."""
    ops = read_ops(model)
    reasons = [nnapi_reason(op, api) for op in ops]
    runs, current = [], []
    for i, r in enumerate(reasons):
        if r is None:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    runs.sort(key=len, reverse=True)
    kept = {i for run in runs[:NNAPI_MAX_PARTITIONS] for i in run}
    for run in runs[NNAPI_MAX_PARTITIONS:]:
        for i in run:
            reasons[i] = f"beyond the delegate's {NNAPI_MAX_PARTITIONS}-partition limit"
    fallback = Counter(ops[i].name for i in range(len(ops)) if i not in kept)
    why = {}
    for i, op in enumerate(ops):
        if i not in kept:
            why.setdefault(op.name, reasons[i])
    return Delegation(len(kept), len(ops), dict(fallback)), why
