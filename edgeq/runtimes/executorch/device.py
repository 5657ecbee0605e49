"""Timing a ``.pte`` on a device: the native runner (``runner.cpp``, built with the system
compiler against the wheel's libraries on the host, cross-built with the NDK for phones)
speaks edgeq's own runner protocol (``--model --runs --warmup --threads --input``, JSON
lines out), which ``edgeq.profiling.runners`` reads for every runtime that uses it."""
from __future__ import annotations

RUNNER_KEY = "pte"  # the runner config's key for this runtime's artifacts
RUNNER_KIND = "native"


def local_runner() -> str | None:
    """The host-built native runner (built on first use), None without a C++ compiler."""
    from edgeq.runtimes.executorch import native

    return str(native.build_runner()) if native.compiler() is not None else None
