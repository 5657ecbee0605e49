"""Where the data that ships with edgeq lives: ``targets/`` and ``device_profiles/`` sit at
the top of a source checkout and under ``edgeq/_data/`` in an installed wheel."""
from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"edgeq installation is missing its '{name}' folder")
