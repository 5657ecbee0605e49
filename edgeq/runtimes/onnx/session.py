"""Running ``.onnx`` and ``.ort`` files on this host with onnxruntime's InferenceSession."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.errors import BadInput, RuntimeFailure

# The execution provider each delegate asks for, before the CPU provider that takes the rest.
DELEGATE_PROVIDERS = {"nnapi": "NnapiExecutionProvider", "xnnpack": "XnnpackExecutionProvider"}

# ONNX tensor type strings -> numpy dtype names.
_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
           "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32",
           "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
           "tensor(int16)": "int16", "tensor(uint16)": "uint16"}


def providers_for(delegate: str | None) -> tuple[list[str], list[str]]:
    """(providers to ask for, notes) for a target's delegate on this onnxruntime build."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = DELEGATE_PROVIDERS.get(delegate or "")
    if wanted and wanted in available:
        return [wanted, "CPUExecutionProvider"], []
    notes = []
    if wanted:
        notes.append(f"this onnxruntime build has no {wanted} (the desktop wheel has only the "
                     f"CPU provider): on this host the {delegate} artifact runs on the CPU "
                     "execution provider; on a device, ONNX Runtime Mobile runs it with "
                     f"{delegate.upper()}")
    return ["CPUExecutionProvider"], notes


class OrtSession:
    """One loaded model. ``input_shapes`` are batch first with dynamic dims as 1;
    ``input_dtypes`` numpy dtype names; ``notes`` say where it runs when that differs from
    the target's delegate."""

    def __init__(self, path: Path, threads: int | None = None, delegate: str | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise BadInput(f"artifact '{self.path}' not found")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        providers, self.notes = providers_for(delegate)
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise BadInput(f"artifact '{self.path}' is not a loadable ONNX / ORT model "
                           f"(corrupt or truncated?): {first[:200]}") from e
        self.providers = self.session.get_providers()
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.input_dtypes = [_DTYPES.get(i.type, "float32") for i in inputs]
        self.input_shapes = [tuple(d if isinstance(d, int) and d > 0 else 1 for d in i.shape)
                             for i in inputs]
        self._dims = [tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape)
                      for i in inputs]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _check(self, inputs: list[np.ndarray]) -> dict:
        """Feeds for ``run``; BadInput naming the input whose count, shape or type is off."""
        if len(inputs) != len(self.input_names):
            raise BadInput(f"'{self.path.name}' takes {len(self.input_names)} input(s) "
                           f"({', '.join(self.input_names)}), got {len(inputs)}")
        feeds = {}
        for name, dims, dtype, x in zip(self.input_names, self._dims, self.input_dtypes,
                                        inputs):
            x = np.asarray(x)
            if x.ndim != len(dims) or any(d is not None and d != s
                                          for d, s in zip(dims, x.shape)):
                want = tuple("?" if d is None else d for d in dims)
                raise BadInput(f"'{self.path.name}': input '{name}' has shape "
                               f"{tuple(x.shape)}, the model takes {want}")
            if x.dtype != np.dtype(dtype):
                if not np.can_cast(x.dtype, dtype, casting="same_kind"):
                    raise BadInput(f"'{self.path.name}': input '{name}' is {x.dtype}, the "
                                   f"model takes {dtype}")
                x = x.astype(dtype)
            feeds[name] = np.ascontiguousarray(x)
        return feeds

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs for one call, in the model's output order."""
        feeds = self._check(inputs)
        try:
            return self.session.run(None, feeds)
        except Exception as e:
            raise RuntimeFailure(f"ONNX Runtime failed to run '{self.path}': "
                                 f"{str(e).splitlines()[0][:300]}") from e
