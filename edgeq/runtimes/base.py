"""What every runtime module provides. Plain data crosses this boundary: numpy arrays,
paths and dicts, so the rest of edgeq never imports a runtime's own package."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass
class BuildRequest:
    """Everything a runtime needs to produce one artifact."""

    model: object  # edgeq.models.LoadedModel
    recipe: object  # edgeq.recipes.Recipe
    target: object  # edgeq.targets.Target
    calib: object | None  # edgeq.data.Dataset, already selected
    qat: object | None  # edgeq.quantize.pt2e.QatConfig
    out_path: Path
    progress: object  # edgeq.progress.Progress


@dataclass
class Delegation:
    """How much of the graph runs in the delegate. ``fallback_ops`` maps each op left on
    the runtime's portable CPU path to how many times it occurs."""

    delegated_nodes: int
    total_nodes: int
    fallback_ops: dict[str, int] = field(default_factory=dict)
    # Runtime facts for the manifest beside the counts: the provider used, how coverage was
    # found (measured or predicted), quantization details, notes.
    details: dict = field(default_factory=dict)
    # The estimator's per-operator cost summary of the lowered graph (edgeq.profiling.
    # estimate.cost_summary), stored in the manifest as "costs"; None when not computed.
    costs: dict | None = field(default=None, repr=False)
    reasons: dict[str, str] = field(default_factory=dict)  # op -> why it stays on the CPU

    def to_dict(self) -> dict:
        share = self.delegated_nodes / self.total_nodes if self.total_nodes else None
        ops = [{"op": k, "count": v, **({"reason": self.reasons[k]} if k in self.reasons else {})}
               for k, v in sorted(self.fallback_ops.items())]
        return {"delegated_nodes": self.delegated_nodes, "total_nodes": self.total_nodes,
                "delegated_share": None if share is None else round(share, 4),
                "fallback_ops": ops, **self.details}


@dataclass
class Bench:
    """Latency samples of one artifact in a separate process. ``runner`` says what ran it
    (``native`` or ``python``); ``peak_rss_bytes`` is that process's VmHWM."""

    times_ms: list[float]
    peak_rss_bytes: int | None
    runner: str
    threads_applied: bool
    notes: list[str] = field(default_factory=list)


class Session(Protocol):
    input_shapes: list[tuple]  # one per input, batch first
    # Optional: ``input_names`` and ``input_dtypes`` (numpy dtype names), when the format
    # records them.

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...


class Runtime(Protocol):
    name: str
    # Can it build Recipe.int16_layers (16-bit activations, int8 weights, per layer)? When
    # not, ``int16_unsupported`` says why in a few words.
    supports_int16_activations: bool
    # Recipe float_ops "auto": the op kinds (edgeq.quantize.float_ops.FLOAT_OPS) this runtime
    # keeps float in an attention model, chosen by measurement (the rule is in float_ops).
    float_ops_auto: tuple[str, ...]
    # Recipe dynamic_ops: the kept-float kinds (float_ops.DYNAMIC_OPS) this runtime can run
    # as dynamic int8, and those ``auto`` does (optional; none when absent).
    dynamic_ops_supported: tuple[str, ...]
    dynamic_ops_auto: tuple[str, ...]

    def versions(self) -> dict[str, str]:
        """Versions of the packages this runtime uses (for manifests and doctor)."""

    def check(self) -> list[tuple[str, bool, str]]:
        """(component, ok, detail or fix) rows for ``edgeq doctor``."""

    def build(self, req: BuildRequest) -> Delegation:
        """Quantize (per ``req.recipe``) and lower to ``req.out_path``, written atomically."""

    def open(self, artifact: Path, threads: int | None = None) -> Session:
        """Load an artifact for inference on this host with ``threads`` CPU threads (None:
        the runtime's default); BadInput when it is corrupt."""

    def benchmark(self, artifact: Path, inputs: list[np.ndarray], runs: int, warmup: int,
                  threads: int) -> Bench:
        """Time ``runs`` inferences after ``warmup`` in a separate process."""


def package_versions(packages) -> dict[str, str]:
    """Installed version of each pip package, ``missing`` when absent (manifests, doctor)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


@contextlib.contextmanager
def quiet_native_stderr():
    """Runtimes' C++ sides log to fd 2 on every load (ExecuTorch's cpuinfo probing,
    LiteRT's "Created TensorFlow Lite XNNPACK delegate", absl INFO lines from converters);
    keep that off the user's terminal. Python exceptions still propagate."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
