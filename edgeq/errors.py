"""Typed errors. Each carries a one-line reason a user can act on and the exit code
the CLI maps it to (the CLI contract: 0 ok, 1 budget exceeded, 2 bad input, 3 device or
runtime failure)."""
from __future__ import annotations


class EdgeqError(Exception):
    """Base class: ``str(err)`` is the one line shown to the user."""

    exit_code = 2


class BadInput(EdgeqError):
    """The user gave something unusable: a file, a flag, a data set. Exit 2."""

    exit_code = 2


class BudgetExceeded(EdgeqError):
    """A size / latency / accuracy budget failed. Exit 1."""

    exit_code = 1


class RuntimeFailure(EdgeqError):
    """A runtime, compiler or device failed while doing what was asked. Exit 3."""

    exit_code = 3


class CannotRunHere(RuntimeFailure):
    """The artifact is fine but this host cannot execute it (a GPU delegate, a backend the
    host runtime lacks). Stages that measure record null with this reason. Exit 3."""


class ExportFailure(BadInput):
    """torch.export or a lowering could not handle the model (an unsupported op). Exit 2:
    the model must change, not the machine."""
