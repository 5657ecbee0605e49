"""report.json: build, merge, load and write it. Nothing here imports torch.

A figure that could not be measured is ``null`` with ``<name>_reason`` beside it."""
from __future__ import annotations

import json
import time
from pathlib import Path

from edgeq import __version__
from edgeq.artifacts import write_json
from edgeq.errors import BadInput

SCHEMA_VERSION = 1


def new_report(model: dict | None) -> dict:
    return {"schema_version": SCHEMA_VERSION, "edgeq_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": model, "results": [], "budgets": []}


def result_from_manifest(manifest: dict, artifact_path: str) -> dict:
    """A result cell for an artifact, from its manifest."""
    art = dict(manifest["artifact"], path=artifact_path)
    return {"target": manifest["target"]["name"], "recipe": manifest["recipe"]["name"],
            "artifact": art, "delegation": manifest.get("delegation"),
            "accuracy": None, "profile": None}


def upsert_result(report: dict, cell: dict) -> dict:
    """Insert ``cell``, or merge its non-null blocks into the cell for the same artifact.
    A cell for the same path but other bytes (a re-export) is replaced whole: its accuracy
    and profile were measured on a file that no longer exists."""
    key = cell["artifact"]["sha256"]
    path = str(Path(cell["artifact"]["path"]).resolve())
    for i, existing in enumerate(report["results"]):
        art = existing.get("artifact") or {}
        if art.get("path") and str(Path(art["path"]).resolve()) == path and \
                art.get("sha256") != key:
            report["results"][i] = cell
            return cell
    for existing in report["results"]:
        # xnnpack and nnapi artifacts of one runtime can be the same bytes: key on the
        # target too, or one cell would swallow the other.
        if (existing.get("artifact") or {}).get("sha256") == key and \
                existing.get("target") == cell.get("target"):
            for k, v in cell.items():
                if v is not None:
                    existing[k] = v
            return existing
    report["results"].append(cell)
    return cell


def load_report(path: Path, must_exist: bool = True) -> dict | None:
    path = Path(path)
    if not path.is_file():
        if must_exist:
            raise BadInput(f"report '{path}' not found")
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"report '{path}' is not valid JSON (truncated?): {e}") from e
    except OSError as e:
        raise BadInput(f"report '{path}' is unreadable ({e.strerror})") from e
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise BadInput(f"report '{path}' is not an edgeq report (no 'results' list)")
    if data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise BadInput(f"report '{path}' has schema_version {data.get('schema_version')}; this "
                       f"edgeq reads {SCHEMA_VERSION}")
    data.setdefault("budgets", [])
    return data


def save_report(path: Path, report: dict) -> None:
    report["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json(Path(path), report)
