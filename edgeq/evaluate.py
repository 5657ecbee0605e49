"""Accuracy on the artifact itself: run it in its own runtime over a data set, and compare
with labels (top-1) and with the fp32 reference model (agreement, cosine, SQNR)."""
from __future__ import annotations

import numpy as np

METRICS = ("top1", "agreement", "cosine", "sqnr")


def run_artifact(session, ds, progress, label: str = "evaluating") -> np.ndarray:
    """First output of every sample, stacked: shape (N, ...)."""
    outs = []
    with progress.task(f"{label} on {len(ds)} samples", total=len(ds)) as advance:
        for i in range(len(ds)):
            outs.append(session.run(ds.sample(i))[0])
            advance(1)
    return np.concatenate(outs)


def run_reference(model, ds, batch: int = 64) -> np.ndarray:
    """The fp32 model's first output over ``ds``: the PyTorch module, or for a model given
    as a runtime's own file, that file run in its runtime."""
    import torch

    if model.module is None:
        from edgeq.progress import QUIET
        from edgeq.runtimes import get_runtime
        from edgeq.targets import get_target

        session = get_runtime(get_target(model.source_target).runtime).open(model.source_file)
        return run_artifact(session, ds, QUIET)

    outs = []
    with torch.no_grad():
        for xs, _ in ds.batches(batch):
            try:
                out = model.module(*[torch.from_numpy(np.ascontiguousarray(x)) for x in xs])
            except RuntimeError:
                # Some models only accept their example batch size: go sample by sample.
                out = torch.cat([model.module(*[torch.from_numpy(x[i:i + 1]) for x in xs])
                                 for i in range(len(xs[0]))])
            out = out[0] if isinstance(out, (tuple, list)) else out
            outs.append(out.numpy())
    return np.concatenate(outs)


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float(np.mean(outputs.reshape(len(outputs), -1).argmax(1) == labels) * 100)


def fidelity(outputs: np.ndarray, reference: np.ndarray) -> dict:
    """How close the artifact's outputs are to the fp32 reference: top-1 agreement (%, for
    class-score outputs), mean per-sample cosine similarity, and SQNR in dB."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    r = reference.reshape(len(reference), -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(r, axis=1)
    cos = np.where(denom > 0, (a * r).sum(1) / np.maximum(denom, 1e-30), 1.0)
    noise = float(((a - r) ** 2).sum())
    signal = float((r ** 2).sum())
    sqnr = float("inf") if noise == 0 else 10 * np.log10(signal / noise) if signal > 0 else None
    return {"agreement": float(np.mean(a.argmax(1) == r.argmax(1)) * 100) if r.shape[1] > 1
            else None,
            "cosine": float(cos.mean()),
            "sqnr": None if sqnr is None else (999.0 if np.isinf(sqnr) else sqnr)}


def accuracy_block(outputs, labels, reference, metric: str | None = None) -> dict:
    """The report's ``accuracy`` block. ``metric`` defaults to top1 with labels, else
    agreement (class scores) or cosine. ``drop`` is reference_value - value, in the
    metric's own unit (percentage points for top1 and agreement)."""
    fid = fidelity(outputs, reference) if reference is not None else None
    if metric is None:
        metric = "top1" if labels is not None else (
            "agreement" if fid and fid["agreement"] is not None else "cosine")
    block = {"metric": metric, "value": None, "reference_value": None, "drop": None,
             "samples": int(len(outputs)), "fidelity": fid}
    if metric == "top1":
        if labels is None:
            block["value_reason"] = "the data has no labels ('y')"
            return block
        block["value"] = round(top1(outputs, labels), 4)
        if reference is not None:
            block["reference_value"] = round(top1(reference, labels), 4)
    else:
        if fid is None:
            block["value_reason"] = f"metric {metric} needs --reference MODEL"
            return block
        block["value"] = fid[metric]
        block["reference_value"] = {"agreement": 100.0, "cosine": 1.0, "sqnr": None}[metric]
    if block["reference_value"] is not None and block["value"] is not None:
        block["drop"] = round(block["reference_value"] - block["value"], 4)
    return block
