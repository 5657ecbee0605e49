"""PyTorch -> one self-contained fp32 ``.onnx`` file, and the chatter control the ONNX tools
need (they print progress to stdout, which edgeq keeps for ``--json``)."""
from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path

from edgeq.errors import BadInput

# Opset 18 is the opset torch's ONNX function library (torchlib) is written for, so the
# exporter needs no version conversion; ORT has run it since 1.14, which covers older ORT
# Mobile builds on phones too. torch 2.13 defaults to 20, reached by converting from 18.
# A target can ask for another with ``options: {opset: N}``.
DEFAULT_OPSET = 18


@contextlib.contextmanager
def quiet():
    """Keep the ONNX tools off the user's terminal: torch.onnx and onnxruntime.quantization
    ``print`` progress to stdout (edgeq's ``--json`` channel), log warnings through the root
    logger, and raise Python warnings. Exceptions still propagate."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # C++ side: errors only
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def export_fp32(module, example_inputs: tuple, input_names: list[str], path: Path,
                opset: int = DEFAULT_OPSET) -> None:
    """``torch.onnx.export`` (the dynamo exporter) of ``module`` at the example inputs'
    static shapes to ``path``, weights inside the file (no external data). Static shapes
    are deliberate: NNAPI and XNNPACK only take fixed-size tensors. ExportFailure (exit 2)
    naming the op when the exporter cannot handle the model."""
    import torch

    from edgeq.quantize.pt2e import describe_export_error

    try:
        with quiet(), torch.no_grad():
            program = torch.onnx.export(module, tuple(example_inputs), dynamo=True,
                                        input_names=list(input_names), opset_version=opset,
                                        external_data=False)
            program.save(str(path), external_data=False)
    except Exception as e:
        # The exporter's message opens with generic "next steps"; the cause is in its
        # "Exception summary". The graph (re-captured only on this failure path) lets
        # describe_export_error name the user's source line for the op.
        graph = None
        try:
            with quiet():
                ep = torch.export.export(module, tuple(example_inputs))
                graph = ep.run_decompositions().graph  # op names as the exporter saw them
        except Exception:
            pass
        raise describe_export_error(_summary(e), "ONNX export", graph) from e


def _summary(e: Exception) -> Exception:
    """The first cause listed under the exporter's "## Exception summary" (colour codes
    stripped) as the exception to describe, with the original traceback; else ``e``."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"## Exception summary\s*<class '[\w.]+'>: ([^\n]+)", text)
    return RuntimeError(m.group(1)).with_traceback(e.__traceback__) if m else e


def copy_model(source: Path, path: Path) -> None:
    """Re-save an existing ``.onnx`` (given as MODEL) as one self-contained file: weights
    kept as external data beside it are pulled in. BadInput when it is not a valid model."""
    import onnx

    try:
        model = onnx.load(str(source), load_external_data=True)
        onnx.checker.check_model(model)
    except Exception as e:
        raise BadInput(f"model file '{source}' is not a valid ONNX model: "
                       f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from e
    onnx.save(model, str(path), save_as_external_data=False)
