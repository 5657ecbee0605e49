"""The registry of runtimes. A target's ``runtime:`` names a module here
(``edgeq.runtimes.<name>``) that exposes ``RUNTIME``, an object with the methods of
``edgeq.runtimes.base.Runtime``. Nothing outside these modules knows a runtime by name;
adding one means adding a module and a target file."""
from __future__ import annotations

import importlib

from edgeq.errors import BadInput


def get_runtime(name: str):
    """The runtime object for ``name`` (imported on first use: runtimes are heavy)."""
    try:
        module = importlib.import_module(f"edgeq.runtimes.{name}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("edgeq.runtimes"):
            raise BadInput(f"runtime '{name}' is not part of edgeq") from e
        raise BadInput(f"runtime '{name}' needs the Python package '{e.name}', which is not "
                       f"installed; see 'edgeq doctor'") from e
    return module.RUNTIME
