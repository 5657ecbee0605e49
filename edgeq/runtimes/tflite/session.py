"""Running a .tflite on this host with the LiteRT interpreter (XNNPACK applied by default).

Evaluation code is float-in / float-out whatever the model's I/O types: a full-integer
model's inputs are quantized with each input tensor's own scale and zero point, and its
outputs dequantized the same way, so edgeq compares like with like."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgeq.errors import BadInput, RuntimeFailure
from edgeq.runtimes.base import quiet_native_stderr


def load_interpreter(model_path: Path | None = None, model_content: bytes | None = None,
                     num_threads: int | None = None, xnnpack: bool = True):
    """An allocated ``ai_edge_litert`` Interpreter. ``xnnpack=False`` uses the builtin
    kernels only (the interpreter otherwise applies XNNPACK by default)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else \
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    kwargs = {} if num_threads is None else {"num_threads": int(num_threads)}
    with quiet_native_stderr():
        it = Interpreter(model_path=None if model_path is None else str(model_path),
                         model_content=model_content, experimental_op_resolver_type=resolver,
                         **kwargs)
        it.allocate_tensors()
    return it


def _io_name(detail: dict, by_index: dict[int, str]) -> str:
    """The signature's name for a tensor when there is one, else the tensor's own name
    without the converter's ``serving_default_`` prefix and ``:0`` suffix."""
    if detail["index"] in by_index:
        return by_index[detail["index"]]
    return re.sub(r"^serving_default_|:\d+$", "", detail["name"])


def _scale_zp(detail: dict) -> tuple[float, int] | None:
    """(scale, zero point) of a quantized integer I/O tensor, None for float tensors."""
    if not np.issubdtype(detail["dtype"], np.integer):
        return None
    scale, zp = detail["quantization"]
    return (float(scale), int(zp)) if scale else None


class Session:
    """One loaded .tflite: ``run`` takes and returns float arrays in the order of the
    model's inputs (which for litert-torch exports is the forward() argument order)."""

    def __init__(self, interpreter, path: Path):
        self.it, self.path = interpreter, path
        sigs = interpreter._get_full_signature_list()
        sig = next(iter(sigs.values()), {"inputs": {}, "outputs": {}})
        in_names = {v: k for k, v in sig.get("inputs", {}).items()}
        self._inputs = interpreter.get_input_details()
        self._outputs = interpreter.get_output_details()
        self.input_names = [_io_name(d, in_names) for d in self._inputs]
        self.input_shapes = [tuple(int(s) for s in d["shape"]) for d in self._inputs]
        self._in_q = [_scale_zp(d) for d in self._inputs]
        self._out_q = [_scale_zp(d) for d in self._outputs]
        # What the caller feeds: float32 where the session quantizes for the model.
        self.input_dtypes = ["float32" if q else np.dtype(d["dtype"]).name
                             for d, q in zip(self._inputs, self._in_q)]
        self.io_dtypes = {"inputs": [np.dtype(d["dtype"]).name for d in self._inputs],
                          "outputs": [np.dtype(d["dtype"]).name for d in self._outputs]}

    def _feed(self, i: int, x: np.ndarray) -> np.ndarray:
        d, q = self._inputs[i], self._in_q[i]
        dtype = np.dtype(d["dtype"])
        if q is not None and not np.issubdtype(x.dtype, np.integer):
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / q[0]) + q[1], info.min, info.max)
        return np.ascontiguousarray(x, dtype=dtype)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs for ``inputs`` (float, or already-quantized integers). A batch larger
        than the model's static batch of 1 is run sample by sample: converted models
        bake the batch into their reshapes, so resizing the input is not an option."""
        if len(inputs) != len(self._inputs):
            raise BadInput(f"'{self.path}' takes {len(self._inputs)} inputs "
                           f"({', '.join(self.input_names)}), got {len(inputs)}")
        inputs = [np.asarray(x) for x in inputs]
        for name, x, shape in zip(self.input_names, inputs, self.input_shapes):
            if tuple(x.shape[1:]) != shape[1:] or (shape[0] != 1 and x.shape[0] != shape[0]):
                raise BadInput(f"'{self.path}': input '{name}' has shape {shape}, got "
                               f"{tuple(x.shape)}")
        n = inputs[0].shape[0] if inputs and inputs[0].ndim else 1
        if n != 1 and self.input_shapes and self.input_shapes[0][0] == 1:
            parts = [self._invoke([x[i:i + 1] for x in inputs]) for i in range(n)]
            return [np.concatenate(col) for col in zip(*parts)]
        return self._invoke(inputs)

    def _invoke(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            for i, x in enumerate(inputs):
                self.it.set_tensor(self._inputs[i]["index"], self._feed(i, x))
            self.it.invoke()
            outs = []
            for d, q in zip(self._outputs, self._out_q):
                y = self.it.get_tensor(d["index"])
                outs.append((y.astype(np.float32) - q[1]) * np.float32(q[0]) if q else y)
            return outs
        except Exception as e:
            raise RuntimeFailure(f"LiteRT failed to run '{self.path}': "
                                 f"{str(e).splitlines()[0][:200]}") from e


def open_session(path: Path, threads: int | None = None) -> Session:
    """Load ``path``; BadInput naming the file when it is not a loadable .tflite."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"artifact '{path}' not found")
    try:
        it = load_interpreter(model_path=path, num_threads=threads)
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise BadInput(f"artifact '{path}' is not a loadable .tflite model (corrupt or "
                       f"truncated?): {first[:200]}") from e
    return Session(it, path)
