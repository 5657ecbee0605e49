"""Target: one deployable combination of format + delegate, read from ``targets/*.yaml``."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from edgeq.errors import BadInput
from edgeq.resources import resource_dir


@dataclass(frozen=True)
class Target:
    """``runtime`` names the module in ``edgeq.runtimes`` that handles it; ``format`` is the
    artifact's file extension and ``also`` other formats it writes beside it (``ort``);
    ``delegate`` the accelerator library it lowers to; ``options`` are runtime-specific."""

    name: str
    runtime: str
    format: str
    delegate: str
    description: str = ""
    needs: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    options: dict = field(default_factory=dict, hash=False, compare=False)


def all_targets() -> dict[str, Target]:
    import yaml

    out = {}
    for path in sorted(resource_dir("targets").glob("*.yaml")):
        d = yaml.safe_load(path.read_text()) or {}
        try:
            t = Target(name=d["name"], runtime=d["runtime"], format=d["format"],
                       delegate=d.get("delegate", "none"),
                       description=d.get("description", ""), needs=tuple(d.get("needs", [])), also=tuple(d.get("also", [])),
                       options=d.get("options", {}) or {})
        except KeyError as e:
            raise BadInput(f"target file '{path}': missing key {e}") from e
        out[t.name] = t
    return out


def get_target(name: str) -> Target:
    targets = all_targets()
    if name not in targets:
        near = difflib.get_close_matches(name, targets, 1)
        raise BadInput(f"--target '{name}' does not exist; valid targets: {', '.join(targets)}"
                       + (f" (did you mean '{near[0]}'?)" if near else ""))
    return targets[name]


def target_for_file(suffix: str) -> Target | None:
    """The first target whose artifacts have this extension (for files without manifest);
    targets marked ``options: {default_for_format: false}`` (a .pte that needs a GPU
    delegate) only when no other target has the extension."""
    targets = sorted(all_targets().values(),
                     key=lambda t: t.options.get("default_for_format", True) is False)
    for t in targets:
        if "." + t.format == suffix:
            return t
    for t in targets:
        if suffix.lstrip(".") in t.also:
            return t
    return None
