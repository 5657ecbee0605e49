"""The content cache of ``edgeq run``.

Each unit of work has a key, the sha256 of everything its result depends on:

- build: model sha256, ``recipe.to_dict()``, target name + runtime + format + delegate +
  options, calibration data identity + ``calib_samples`` (quantized recipes only), the
  target runtime's tool versions and edgeq's version;
- evaluation: artifact sha256, evaluation data identity, model sha256 (the fp32 reference);
- profile: artifact sha256, the device entry, runs / warmup / threads, input data identity.

Artifacts live in ``DIR/artifacts/<build key[:16]>/`` beside their manifest; a build is a
hit when both exist and the artifact's sha256 matches the manifest. Evaluation and profile
results live in ``DIR/cache/<stage>/<key>.json``, written atomically as each task finishes,
so a run killed half-way resumes where it stopped. Entries of old keys are left in place
(delete ``DIR/cache`` or ``DIR/artifacts`` to reclaim the space)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgeq.artifacts import read_manifest, sha256_file, write_json

ARTIFACTS = "artifacts"
CACHE = "cache"


def digest(obj) -> str:
    """sha256 of a JSON-serialisable object, independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def data_identity(source: str | None, image: dict | None = None) -> dict | None:
    """What identifies a data source's content: a file's sha256, a folder's listing
    (relative names, sizes, modification times), or the spec itself for built-ins and
    ``module:function``."""
    if source is None:
        return None
    p = Path(source)
    if p.is_file():  # by content only: a moved or copied file is still a hit
        ident: dict = {"sha256": sha256_file(p)}
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        ident = {"listing": digest([(str(f.relative_to(p)), f.stat().st_size,
                                     f.stat().st_mtime_ns) for f in files])}
    else:
        ident = {"source": source}
    if image:
        ident["image"] = image
    return ident


def build_key(model_sha: str, recipe: dict, target, calib: dict | None,
              calib_samples: int | None, versions: dict) -> str:
    from edgeq import __version__

    quantized = recipe.get("method") != "none"
    return digest({"model": model_sha, "recipe": recipe,
                   "target": {"name": target.name, "runtime": target.runtime,
                              "format": target.format, "delegate": target.delegate,
                              "options": target.options},
                   "calib": calib if quantized else None,
                   "calib_samples": calib_samples if quantized else None,
                   "versions": versions, "edgeq": __version__})


def eval_key(artifact_sha: str, data: dict, model_sha: str) -> str:
    return digest({"artifact": artifact_sha, "data": data, "reference": model_sha})


def profile_key(artifact_sha: str, device: dict, settings: dict, inputs: dict | None) -> str:
    return digest({"artifact": artifact_sha, "device": device, "settings": settings,
                   "inputs": inputs})


def artifact_dir(out_dir: Path, key: str) -> Path:
    return Path(out_dir) / ARTIFACTS / key[:16]


def cached_build(out_dir: Path, key: str) -> dict | None:
    """The manifest (with an absolute ``artifact.path``) of a finished build of ``key``
    whose artifact still matches it; None otherwise (not built, half-built, tampered)."""
    folder = artifact_dir(out_dir, key)
    if not folder.is_dir():
        return None
    for mpath in folder.glob("*.manifest.json"):
        art = mpath.with_name(mpath.name[: -len(".manifest.json")])
        try:
            manifest = read_manifest(art)
        except Exception:  # noqa: BLE001 -- a corrupt manifest is a miss, rebuilt
            return None
        if not manifest or manifest.get("build_key") != key or not art.is_file():
            return None
        if sha256_file(art) != (manifest.get("artifact") or {}).get("sha256"):
            return None
        manifest["artifact"]["path"] = str(art.resolve())
        return manifest
    return None


def _result_path(out_dir: Path, stage: str, key: str) -> Path:
    return Path(out_dir) / CACHE / stage / f"{key}.json"


def load_result(out_dir: Path, stage: str, key: str) -> dict | None:
    p = _result_path(out_dir, stage, key)
    try:
        value = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def save_result(out_dir: Path, stage: str, key: str, value: dict) -> None:
    p = _result_path(out_dir, stage, key)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json(p, value)
