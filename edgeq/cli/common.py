"""Pieces shared by the commands that act on one artifact (eval, profile)."""
from __future__ import annotations

from pathlib import Path

import click

report_option = click.option(
    "--report", "report_path", type=click.Path(path_type=Path),
    help="report.json to add the result to (default: report.json beside the artifact).")


def check_report_path(artifact: Path, report_path: Path | None) -> Path:
    """Where the result goes; checked before any work so a long run is not lost to a typo."""
    import os

    from edgeq.errors import BadInput

    path = Path(report_path or Path(artifact).parent / "report.json")
    parent = path.parent
    if not parent.is_dir():
        raise BadInput(f"--report '{path}': folder '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise BadInput(f"--report '{path}': folder '{parent}' is not writable")
    return path


def merge_into_report(artifact: Path, path: Path, block: str, value: dict,
                      model_summary: dict | None = None) -> Path:
    """Put ``value`` as the ``block`` of the artifact's cell in the report at ``path`` (from
    ``check_report_path``), creating the report or the cell as needed; the write is atomic."""
    from edgeq.report.schema import (load_report, new_report, result_from_manifest,
                                     save_report, upsert_result)
    from edgeq.stages import artifact_info

    report = load_report(path, must_exist=False) or new_report(model_summary)
    manifest, _ = artifact_info(artifact)
    cell = result_from_manifest(manifest, str(artifact))
    cell[block] = value
    upsert_result(report, cell)
    save_report(path, report)
    return path
