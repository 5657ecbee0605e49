"""Artifact files and the ``manifest.json`` written beside each one.

Everything edgeq writes goes through ``atomic_write``: a temporary file in the same folder,
then ``os.replace``, so a crash never leaves a half-written artifact or report."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from edgeq import __version__
from edgeq.errors import BadInput

MANIFEST_SUFFIX = ".manifest.json"


def atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; artifacts are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare_output_dir(out: Path, names: list[str], force: bool) -> Path:
    """Create ``out`` if needed; refuse when it is not writable or when any of ``names``
    already exist there (unless ``force``)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"output directory '{out}' cannot be created ({e.strerror})") from e
    if not out.is_dir():
        raise BadInput(f"output '{out}' exists and is not a directory")
    if not os.access(out, os.W_OK | os.X_OK):
        raise BadInput(f"output directory '{out}' is not writable")
    if not force:
        existing = [n for n in names if (out / n).exists()]
        if existing:
            raise BadInput(f"'{out / existing[0]}' already exists; pass --force to overwrite "
                           "or choose another -o")
    return out


def manifest_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def write_manifest(artifact: Path, *, target: dict, recipe: dict, model: dict,
                   delegation: dict, versions: dict, extra: dict | None = None) -> dict:
    """Write ``<artifact>.manifest.json`` and return it."""
    manifest = {
        "edgeq_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "artifact": {"path": artifact.name, "size_bytes": artifact.stat().st_size,
                     "sha256": sha256_file(artifact)},
        "target": target, "recipe": recipe, "model": model,
        "delegation": delegation, "tool_versions": versions,
    }
    manifest.update(extra or {})
    write_json(manifest_path(artifact), manifest)
    return manifest


def read_manifest(artifact: Path) -> dict | None:
    """The manifest beside ``artifact``, or None when there is none."""
    p = manifest_path(Path(artifact))
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BadInput(f"manifest '{p}' is unreadable or corrupt ({e}); delete it or "
                       "re-export") from e
