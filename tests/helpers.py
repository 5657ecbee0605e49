"""Helpers shared by the tests (imported as ``from helpers import ...``; fixtures live in
conftest.py): a tiny CNN as a model file, data files, an in-process CLI runner, and the
bad-input contract check."""
from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from click.testing import CliRunner

TINY_MODEL = textwrap.dedent("""
    import torch
    from torch import nn


    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 4 * 4, 10)

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
            return self.fc(x.flatten(1))


    def build():
        torch.manual_seed(0)
        return Tiny().eval(), (torch.randn(1, 1, 8, 8),)


    def module_only():
        torch.manual_seed(0)
        return Tiny().eval()
""")

N_SAMPLES = 64


def make_data(n: int = N_SAMPLES, seed: int = 0, labels: bool = True,
              classes: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    d = {"x": rng.standard_normal((n, 1, 8, 8)).astype(np.float32)}
    if labels:
        d["y"] = rng.integers(0, classes, n).astype(np.int64)
    return d


@dataclass
class Work:
    """A folder with model.py, calib.npz (labels), nolabels.npz and eval.npz."""

    root: Path

    @property
    def model(self) -> str:
        return f"{self.root / 'model.py'}:build"

    @property
    def calib(self) -> str:
        return str(self.root / "calib.npz")

    @property
    def nolabels(self) -> str:
        return str(self.root / "nolabels.npz")

    @property
    def eval(self) -> str:
        return str(self.root / "eval.npz")


def write_work(root: Path) -> Work:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.py").write_text(TINY_MODEL)
    np.savez(root / "calib.npz", **make_data(seed=0))
    np.savez(root / "nolabels.npz", **make_data(seed=1, labels=False))
    np.savez(root / "eval.npz", **make_data(seed=2))
    return Work(root)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self):
        return json.loads(self.stdout)


def invoke(args: list[str]) -> CliResult:
    """Run the edgeq CLI in-process; stdout and stderr apart (click >= 8.2)."""
    from edgeq.cli import main

    r = CliRunner().invoke(main, [str(a) for a in args], prog_name="edgeq")
    exc = r.exception if not isinstance(r.exception, SystemExit) else None
    return CliResult(r.exit_code, r.stdout, r.stderr, exc)


def assert_bad_input(r: CliResult, *needles: str, out_dir: Path | None = None,
                     clean_stderr: bool = True) -> str:
    """Exit 2, one 'edgeq: error:' line on stderr naming ``needles``, no traceback, and
    no file left in ``out_dir``. Returns the error line."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("edgeq: error:")]
    assert len(errors) == 1, r.stderr
    # Anything else on stderr is progress ("edgeq: <task>..."), never a second message.
    # (ExecuTorch's C++ log reaches CliRunner's Python-level stderr; a real process sends
    # it to fd 2, which edgeq silences: see test_subprocess.py.)
    others = [ln for ln in r.stderr.splitlines() if ln.strip()
              and not ln.startswith("edgeq: error:") and not re.match(r"\[\w+\.cpp:\d+\]", ln)]
    if clean_stderr:
        assert all(ln.startswith("edgeq: ") and ln.endswith("...") for ln in others), r.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    if out_dir is not None and Path(out_dir).exists():
        assert [p.name for p in Path(out_dir).iterdir()] == [], list(Path(out_dir).iterdir())
    return errors[0]


def tiny_tokens(n: int = 64, seed: int = 0, seq: int = 16, vocab: int = 100):
    """(input_ids, attention_mask) for the tiny BERT encoders of the transformer tests:
    random ids, every other sentence padded from position 10."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, seq), generator=g)
    mask = torch.ones(n, seq, dtype=torch.long)
    mask[::2, 10:] = 0
    return ids, mask
