"""The PT2E driver: export, prepare with a runtime's quantizer, calibrate or fine-tune
(QAT), convert. The quantizer comes from the runtime; everything here is shared."""
from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.errors import BadInput, ExportFailure

CALIB_BATCH = 32


@dataclass(frozen=True)
class QatConfig:
    """Quantization-aware fine-tuning. ``loss``: ``auto`` picks cross-entropy when the data
    has labels, otherwise distillation from the fp32 model (KL on logits for 2-D outputs,
    MSE otherwise). ``lr`` is the SGD learning rate."""

    data: object  # edgeq.data.Dataset
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 32
    loss: str = "auto"
    seed: int = 0


def activation_observer(recipe):
    """The PT2E observer constructor (class with arguments bound) for the recipe's
    activation observer; see ``edgeq.quantize.observers``."""
    from edgeq.quantize.observers import observer_for

    return observer_for(recipe)


def under(name: str, modules) -> bool:
    """Whether module ``name`` is one of ``modules`` (resolved names) or inside one."""
    return any(name == k or name.startswith(k + ".") for k in modules)


def resolve_keep_float(module, patterns) -> list[str]:
    """Module names matching the ``--keep-float`` patterns; a pattern matching nothing is an
    error (a typo would otherwise silently quantize everything)."""
    names = [n for n, _ in module.named_modules() if n]
    out: list[str] = []
    for pat in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise BadInput(f"--keep-float '{pat}' matches no module; module names look like "
                           f"{', '.join(names[:5])}")
        out += [h for h in hits if h not in out]
    return out


_SRC_LINE = re.compile(r'File "([^"]+)", line (\d+)|File: ([^\s:]+):(\d+)')
_OP = re.compile(r"(aten\.[\w.]+|torch\.ops\.[\w.]+|[\w.]+\.default)")


def _user_frame(text: str) -> str | None:
    """The last ``file:line`` in ``text`` that is not inside an installed package."""
    frames = [(m.group(1) or m.group(3), m.group(2) or m.group(4))
              for m in _SRC_LINE.finditer(text or "")]
    own = str(Path(__file__).resolve().parents[1])
    frames = [f for f in frames if "site-packages" not in f[0] and "/torch/" not in f[0]
              and not f[0].startswith(own)]
    return f"{frames[-1][0]}:{frames[-1][1]}" if frames else None


def describe_export_error(e: Exception, what: str, graph=None) -> ExportFailure:
    """One line naming the op and, when it can be found (in the message, or in the stack
    trace of the graph node running that op), the user's source line."""
    msg = str(e)
    first = next((ln.strip() for ln in msg.splitlines() if ln.strip()), type(e).__name__)
    op = _OP.search(msg)
    frame = _user_frame(msg)
    if frame is None:  # tracing errors are raised with the user's forward() on the stack
        import traceback

        frame = _user_frame("".join(traceback.format_tb(e.__traceback__)))
    if frame is None and op is not None and graph is not None:
        opname = op.group(1).split("aten.")[-1].split(".")[0]
        for node in graph.nodes:
            base = str(node.target).split("aten.")[-1].split(".")[0]
            # Decompositions rename ops (linalg_inv -> linalg_inv_ex): match on prefixes.
            if node.op == "call_function" and base and (opname.startswith(base) or
                                                        base.startswith(opname)):
                frame = _user_frame(node.meta.get("stack_trace", ""))
                if frame:
                    break
    where = f" at {frame}" if frame else ""
    opname = f" (op {op.group(1)})" if op and op.group(1) not in first else ""
    return ExportFailure(f"{what} failed{opname}{where}: {first[:300]}")


@contextlib.contextmanager
def quiet_stderr():
    """torch.export prints the partial graph of a failed trace to sys.stderr before raising;
    edgeq reports the failure in one line instead. EDGEQ_DEBUG=1 lets it through."""
    if os.environ.get("EDGEQ_DEBUG"):
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def export(module, example_inputs: tuple, dynamic_batch: bool):
    """``torch.export`` the module; with ``dynamic_batch`` the first axis is left free so
    calibration and QAT can run on batches. Returns (graph module, batch dynamic?)."""
    import copy

    import torch

    # torch.export shares parameter storage with ``module``: QAT would train the caller's
    # fp32 model (the reference and the distillation teacher) in place. Export a copy.
    module = copy.deepcopy(module)
    if dynamic_batch:
        doubled = tuple(torch.cat([t, t]) for t in example_inputs)
        shapes = tuple({0: torch.export.Dim.AUTO} for _ in example_inputs)
        try:
            with quiet_stderr():
                ep = torch.export.export(module, doubled, dynamic_shapes=shapes)
            return ep.module(), True
        except Exception:
            pass  # Models that hard-code the batch size: fall back to a static export.
    try:
        with quiet_stderr():
            ep = torch.export.export(module, example_inputs)
    except Exception as e:
        raise describe_export_error(e, "torch.export") from e
    return ep.module(), False


def _batches(ds, batch: int, dynamic: bool):
    import torch

    size = batch if dynamic else 1
    for xs, y in ds.batches(size):
        yield [torch.from_numpy(np.ascontiguousarray(x)) for x in xs], y


def ptq(model, quantizer, calib, progress, fold_quantize: bool = True):
    """Static post-training quantization: prepare, run ``calib``, convert.
    ``fold_quantize=False`` keeps weight quantize ops in the graph (litert-torch needs it)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    gm, dynamic = export(model.module, model.example_inputs, dynamic_batch=True)
    try:
        prepared = prepare_pt2e(gm, quantizer)
    except Exception as e:
        raise describe_export_error(e, "quantizer preparation") from e
    with torch.no_grad(), progress.task(f"calibrating on {len(calib)} samples",
                                        total=len(calib)) as advance:
        for xs, _ in _batches(calib, CALIB_BATCH, dynamic):
            prepared(*xs)
            advance(len(xs[0]))
    return convert_pt2e(prepared, fold_quantize=fold_quantize)


def _loss_fn(kind: str, has_labels: bool):
    import torch.nn.functional as F

    if kind == "auto":
        kind = "ce" if has_labels else "kd"
    if kind == "ce":
        if not has_labels:
            raise BadInput("--qat-loss ce needs labels ('y') in the QAT data")
        return lambda out, teacher, y: F.cross_entropy(out, y)

    def distill(out, teacher, y):
        if out.dim() == 2:
            return F.kl_div(F.log_softmax(out, -1), F.softmax(teacher, -1),
                            reduction="batchmean")
        return F.mse_loss(out, teacher)

    return distill


def qat(model, quantizer, cfg: QatConfig, progress, fold_quantize: bool = True):
    """Quantization-aware training from the fp32 weights, then convert."""
    import torch
    from torchao.quantization.pt2e import (move_exported_model_to_eval,
                                           move_exported_model_to_train)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    gm, dynamic = export(model.module, model.example_inputs, dynamic_batch=True)
    try:
        prepared = prepare_qat_pt2e(gm, quantizer)
    except Exception as e:
        raise describe_export_error(e, "QAT preparation") from e
    data = cfg.data
    loss_fn = _loss_fn(cfg.loss, data.labels is not None)
    teacher = model.module
    opt = torch.optim.SGD(prepared.parameters(), lr=cfg.lr, momentum=0.9)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    batch = cfg.batch_size if dynamic else 1
    steps = cfg.epochs * -(-len(data) // batch)
    with progress.task(f"QAT: {cfg.epochs} epochs on {len(data)} samples", total=steps) as adv:
        for epoch in range(cfg.epochs):
            move_exported_model_to_train(prepared)
            for idx in np.array_split(rng.permutation(len(data)), steps // cfg.epochs):
                sub = data.subset(idx)
                xs = [torch.from_numpy(np.ascontiguousarray(a)) for a in sub.inputs.values()]
                y = None if sub.labels is None else torch.from_numpy(sub.labels)
                with torch.no_grad():
                    teacher_out = teacher(*xs)
                out = prepared(*xs)
                loss = loss_fn(out, teacher_out, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                adv(1)
    move_exported_model_to_eval(prepared)
    return convert_pt2e(prepared, fold_quantize=fold_quantize)
