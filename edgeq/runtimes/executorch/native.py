"""Native ExecuTorch benchmark runner: build ``runner.cpp`` against the executorch wheel's
own headers and shared libraries, then time ``.pte`` files with it.

Timing in a C++ process gives the latency an app on a phone would see, with no Python
interpreter or pybind marshalling in the loop. The binary is compiled with the system
C++ compiler in one command (about a second) and cached per (source, executorch
version and location, compiler)."""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.errors import BadInput, RuntimeFailure

_SOURCE = Path(__file__).with_name("runner.cpp")
# Kernel and backend libraries register themselves from static initialisers and the
# runner references none of their symbols, hence --no-as-needed when linking them.
_LIBS = ("executorch", "executorch_backend_xnnpack", "executorch_kernels_optimized",
         "executorch_kernels_quantized", "executorch_threadpool")
# What the wheel's CMake package puts on its targets: the vendored c10 headers need
# the first, and the shipped libraries were built with the event tracer on, which
# changes class layouts in the headers.
_DEFINES = ("C10_USING_CUSTOM_GENERATED_MACROS", "ET_EVENT_TRACER_ENABLED", "ET_USE_THREADPOOL")


def compiler() -> str | None:
    """$CXX if set (None when it does not resolve: an explicit choice is not silently
    replaced), else g++ or c++ from PATH."""
    cxx = os.environ.get("CXX")
    if cxx:
        parts = shlex.split(cxx)
        return shutil.which(parts[0]) if parts else None
    return shutil.which("g++") or shutil.which("c++")


def _executorch_dir() -> Path:
    import executorch  # namespace package: __file__ is None, __path__ is not

    for p in map(Path, getattr(executorch, "__path__", [])):
        if (p / "include" / "executorch").is_dir() and (p / "lib" / "libexecutorch.so").is_file():
            return p
    raise RuntimeFailure("the executorch package has no include/ and lib/libexecutorch.so "
                         "to build the native runner against")


def _executorch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:
        return "unknown"


def build_command(cxx: str, source: Path, out: Path, et_dir: Path) -> list[str]:
    inc, lib = et_dir / "include", et_dir / "lib"
    libs = [f"-l{n}" for n in _LIBS if (lib / f"lib{n}.so").is_file()]
    return [cxx, "-std=c++17", "-O2", *(f"-D{d}" for d in _DEFINES),
            f"-I{inc}", f"-I{inc / 'executorch/runtime/core/portable_type/c10'}",
            str(source), "-o", str(out), f"-L{lib}", "-Wl,--no-as-needed", *libs,
            f"-Wl,-rpath,{lib}", "-pthread"]


def build_runner(cache_dir: Path | None = None) -> Path:
    """Compile the runner once and return its path; later calls reuse the cached binary."""
    cxx = compiler()
    if cxx is None:
        why = f"$CXX={os.environ['CXX']!r} not found" if os.environ.get("CXX") else "no g++ or c++ on PATH"
        raise RuntimeFailure(f"cannot build the native ExecuTorch runner: {why}")
    et_dir = _executorch_dir()
    if cache_dir is None:
        cache_dir = Path(os.environ.get("EDGEQ_CACHE", "~/.cache/edgeq")).expanduser() / "runners"
    cache_dir = Path(cache_dir)
    # The package location is in the key because the binary's rpath points into it:
    # two venvs with the same executorch version must not share a binary.
    key = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), _executorch_version().encode(), str(et_dir).encode(),
                 cxx.encode(), " ".join(_DEFINES).encode()):
        key.update(part + b"\0")
    out = cache_dir / f"edgeq-et-runner-{key.hexdigest()[:16]}"
    if out.is_file() and os.access(out, os.X_OK):
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Concurrent builders each write their own temp file; os.replace makes the last
    # one win atomically, and every candidate is a complete binary.
    tmp = cache_dir / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    cmd = build_command(cxx, _SOURCE, tmp, et_dir)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not tmp.is_file():
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
            first = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "")
            raise RuntimeFailure(f"building the native ExecuTorch runner failed: {first or f'exit {proc.returncode}'}")
        os.replace(tmp, out)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure("building the native ExecuTorch runner timed out") from None
    except OSError as e:
        raise RuntimeFailure(f"building the native ExecuTorch runner failed: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out


@dataclass
class NativeRun:
    times_ms: list[float]
    peak_rss_bytes: int | None
    threads_applied: bool
    outputs: list[np.ndarray] | None


def _read_output(path: Path, desc: dict) -> np.ndarray | None:
    if desc.get("dtype") is None:  # a non-tensor, non-scalar output (None, a list)
        return None
    dtype, shape = desc["dtype"], list(desc["shape"])
    if dtype == "bfloat16":  # numpy has no bfloat16: widen exactly to float32
        raw = np.fromfile(path, dtype=np.uint16).astype(np.uint32) << 16
        arr = raw.view(np.float32)
    else:
        arr = np.fromfile(path, dtype=np.dtype(dtype))
    # The bytes are in the tensor's dim order (channels-last outputs exist); give
    # back a C-contiguous array in logical (N, C, H, W...) order.
    order = list(desc.get("dim_order") or range(len(shape)))
    arr = arr.reshape([shape[d] for d in order]).transpose(np.argsort(order))
    return np.ascontiguousarray(arr)


def run(runner: Path, pte: Path, inputs: list[np.ndarray], runs: int, warmup: int, threads: int,
        want_outputs: bool = False, timeout_s: float | None = None) -> NativeRun:
    """Time ``runs`` executions of ``pte``'s forward method after ``warmup`` untimed ones.

    Inputs are sent as raw C-order bytes; the runner takes dtype and shape from the
    program and rejects a byte-size mismatch (BadInput). threads=0 keeps the default
    pool size. Raises RuntimeFailure when the runner or the program fails."""
    pte, runner = Path(pte), Path(runner)
    if not pte.is_file():
        raise BadInput(f"ExecuTorch program not found: {pte}")
    if not runner.is_file():
        raise RuntimeFailure(f"native runner not found: {runner} (call build_runner first)")
    if runs < 1 or warmup < 0 or threads < 0:
        raise BadInput(f"need runs >= 1, warmup >= 0, threads >= 0 (got {runs}, {warmup}, {threads})")
    with tempfile.TemporaryDirectory(prefix="edgeq-et-") as td:
        tmp = Path(td)
        cmd = [str(runner), "--model", str(pte), "--runs", str(runs), "--warmup", str(warmup),
               "--threads", str(threads)]
        for i, x in enumerate(inputs):
            p = tmp / f"in{i}.bin"
            p.write_bytes(np.ascontiguousarray(x).tobytes())
            cmd += ["--input", str(p)]
        if want_outputs:
            cmd += ["--output-dir", str(tmp)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeFailure(f"native ExecuTorch runner timed out after {timeout_s:g}s on {pte.name}") from None
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            if proc.returncode < 0:
                try:
                    sig = signal.Signals(-proc.returncode).name
                except ValueError:
                    sig = f"signal {-proc.returncode}"
                msg = f"native ExecuTorch runner crashed ({sig}) on {pte.name}"
            else:
                msg = lines[-1].strip() if lines else f"native ExecuTorch runner exited {proc.returncode}"
            raise (BadInput if proc.returncode == 2 else RuntimeFailure)(msg)
        try:
            js = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise RuntimeFailure(f"native ExecuTorch runner printed no JSON result for {pte.name}") from None
        outputs = None
        if want_outputs:
            outputs = [_read_output(tmp / f"out{i}.bin", d) for i, d in enumerate(js.get("outputs", []))]
    hwm = js.get("vmhwm_kb")
    return NativeRun(times_ms=[t / 1e6 for t in js["times_ns"]],
                     peak_rss_bytes=hwm * 1024 if isinstance(hwm, int) and hwm >= 0 else None,
                     threads_applied=bool(js.get("threads_applied")), outputs=outputs)
