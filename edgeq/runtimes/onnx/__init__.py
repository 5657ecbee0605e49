"""ONNX Runtime: ``torch.onnx.export`` (dynamo) to one self-contained ``.onnx``; static int8
in QDQ format with onnxruntime.quantization and the recipe's observer; an ORT-format
``.ort`` copy beside it for ONNX Runtime Mobile; coverage predicted for the target's
execution provider; ``onnxruntime.InferenceSession`` on the host.

Target options (``options:`` in the target YAML), with their defaults:
``activation_dtype`` auto | int8 | uint8 (auto: uint8 for the CPU provider, whose QDQ
fusions take int8 activations only on Arm, and for NNAPI, which rejects some int8 QDQ
patterns; int8 for XNNPACK; see ``cpu_int8``), ``reduce_range`` false | true (7-bit
weights, for x86 CPUs without VNNI), ``qdq_layout`` auto | default (auto: the QDQ layout
ORT's CPU kernels fuse for the cpu delegate, ``cpu_int8``; default: ORT's own),
``ort_optimization`` fixed | runtime (how the .ort is optimised, see ``mobile.to_ort_format``),
``ort_platform`` arm | amd64, ``opset`` (18).

Modules: ``export`` (PyTorch -> ONNX), ``quantize`` (calibration and QDQ), ``mobile``
(.ort and provider coverage), ``session`` (running on the host).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from edgeq.artifacts import atomic_write
from edgeq.errors import BadInput, EdgeqError, RuntimeFailure
from edgeq.runtimes.base import Bench, BuildRequest, Delegation, package_versions

DEFAULT_OPTIONS = {"activation_dtype": "auto", "reduce_range": False, "qdq_layout": "auto",
                   "ort_optimization": "fixed", "ort_platform": "arm", "opset": 18}
PACKAGES = ("onnx", "onnxruntime", "onnxscript")
QAT_UNSUPPORTED = ("QAT is not available for ONNX targets yet; use PTQ (--calib) or an "
                   "executorch-/tflite- target")


def _costs(path: Path) -> dict | None:
    """The cost summary ``profile --estimate`` works from; None (no estimate later, the
    export itself is fine) when an operator cannot be costed."""
    import onnx

    from edgeq.runtimes.onnx.costs import onnx_costs

    try:
        return onnx_costs(onnx.load(str(path)))
    except Exception:
        return None


def _first_line(e: Exception) -> str:
    """``Type: first line of the message`` (at most 250 characters), for one-line errors."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:250]}" if lines else type(e).__name__


def _delegate_of(artifact: Path) -> str | None:
    """The delegate named by the artifact's manifest, None without (one)."""
    from edgeq.artifacts import read_manifest

    try:
        manifest = read_manifest(Path(artifact)) or {}
    except BadInput:
        return None
    return (manifest.get("target") or {}).get("delegate")


class OnnxRuntime:
    name = "onnx"
    # Recipe.int16_layers: int16 QDQ (opset 21) on those layers' edges; the CPU provider runs
    # them as DequantizeLinear -> float op -> QuantizeLinear (int8 weights, float compute).
    supports_int16_activations = True
    # Recipe float_ops "auto" on ONNX Runtime (CPU provider): the kinds kept float by the rule
    # in edgeq.quantize.float_ops, measured by benchmarks/bench_float_ops.py (MiniLM-L6,
    # 256 / 256 real sentences, p50 at 1 thread; results/float_ops.json).
    # All four float: cosine 0.9957, 33.7 MB, 7.2 ms. Each kind quantized alone:
    #   kind        cosine    MB   p50 ms  runs in int8
    #   softmax     0.9957  33.7     7.2  no: not quantized in attention graphs (cpu_int8)
    #   layer_norm  0.9957  33.7     7.1  no: not quantized in attention graphs (cpu_int8)
    #   mask_add    0.9957  33.7     7.1  no: not quantized in attention graphs (cpu_int8)
    #   ffn_down    0.9925  23.1     5.1  yes; SmoothQuant 0.5: 0.9977 (per-Linear guard,
    #                                      smoothquant.choose_alpha; 0.9873 without)
    #   qk_matmul   not measured: the CPU layout quantizes no activation x activation MatMul
    #               in an attention graph (cpu_int8 rule 3; float Q.K^T becomes FusedMatMul)
    # ffn_down is quantized: ORT runs it with int8 inputs and a float output (cpu_int8), 1.4x
    # faster and 10.6 MB smaller for 0.003 cosine. Re-measure after ORT changes (--targets).
    float_ops_auto = ("softmax", "layer_norm", "mask_add", "qk_matmul")

    def op_kinds(self, artifact: Path) -> dict:
        """How ``artifact`` runs each transformer op kind (``edgeq.quantize.float_ops``:
        int8, dynamic or float), read from the file as this runtime executes it."""
        from edgeq.runtimes.onnx.op_kinds import inspect

        return inspect(Path(artifact))

    def weight_grid(self, recipe):
        """The weight grid this runtime's quantizer rounds ``recipe``'s weights on."""
        from edgeq.runtimes.onnx.schemes import weight_grid

        return weight_grid(recipe)

    def versions(self) -> dict[str, str]:
        return package_versions((*PACKAGES, "torch"))

    def check(self) -> list[tuple[str, bool, str]]:
        import inspect

        v = self.versions()
        rows = [(pkg, v[pkg] != "missing", v[pkg] if v[pkg] != "missing" else
                 f"pip install {pkg}") for pkg in PACKAGES]
        if v["onnxruntime"] == "missing":
            return rows
        import onnxruntime as ort
        from onnxruntime.quantization import quantize_static

        providers = ort.get_available_providers()
        missing = [p for p in ("XnnpackExecutionProvider", "NnapiExecutionProvider")
                   if p not in providers]
        rows.append(("onnxruntime providers", True, ", ".join(providers) + (
            f"; no {' / '.join(missing)} here: onnx-xnnpack / onnx-nnapi artifacts run on "
            "the CPU provider on this host, their coverage is predicted" if missing else "")))
        has_cache = "calibration_cache_path" in inspect.signature(quantize_static).parameters
        rows.append(("onnxruntime calibration cache", has_cache,
                     "quantize_static takes precomputed ranges" if has_cache else
                     "this onnxruntime is too old for edgeq's calibration: pip install -U "
                     "onnxruntime"))
        return rows

    # -- build ---------------------------------------------------------------------------
    def build(self, req: BuildRequest) -> Delegation:
        from edgeq.runtimes.onnx import export, mobile, quantize

        if req.qat is not None:
            raise BadInput(QAT_UNSUPPORTED)
        opts = {**DEFAULT_OPTIONS, **(req.target.options or {})}
        model, recipe = req.model, req.recipe
        from edgeq.quantize.schemes import is_scheme

        scheme = is_scheme(recipe)  # dynamic / weight-only: edgeq.runtimes.onnx.schemes
        if scheme:
            from edgeq.runtimes.onnx import schemes

            schemes.check_target(recipe, req.target)
        with tempfile.TemporaryDirectory(prefix="edgeq-onnx-") as tmp:
            work = Path(tmp)
            fp32 = work / "model.onnx"
            if model.module is None:
                if Path(model.source_file).suffix != ".onnx":
                    raise BadInput(f"model '{model.spec}' is not an .onnx file; ONNX targets "
                                   "take PyTorch models or .onnx files")
                export.copy_model(Path(model.source_file), fp32)
            else:
                with req.progress.task("exporting to ONNX"):
                    export.export_fp32(model.module, model.example_inputs, model.input_names,
                                       fp32, int(opts["opset"]))
            final, qinfo, kept = fp32, None, {}
            if recipe.quantized:
                final = work / "model.qdq.onnx"
                patterns = tuple(recipe.keep_float)
                from edgeq.runtimes.onnx import float_ops

                def kept_float(m):  # --keep-float, then softmax / mask add / layer norm
                    names = quantize.match_keep_float(m, patterns)
                    kept["ops"] = float_ops.resolved_ops(m, recipe.float_ops, self)
                    return names + [n for n in float_ops.onnx_nodes(m, recipe.float_ops, self)
                                    if n not in names]

                wide = (lambda m: quantize.match_keep_float(
                    m, recipe.int16_layers, "int16_layers")) if recipe.int16_layers \
                    else None  # Recipe.int16_layers: edgeq.runtimes.onnx.int16
                try:
                    qinfo = schemes.quantize(fp32, final, recipe, kept_float, work,
                                             req.progress) if scheme else quantize.quantize(
                        fp32, final, recipe, req.calib, str(opts["activation_dtype"]),
                        kept_float, work, req.progress, int16_nodes=wide,
                        delegate=req.target.delegate,
                        reduce_range=bool(opts["reduce_range"]),
                        qdq_layout=str(opts["qdq_layout"]))
                except EdgeqError:
                    raise
                except Exception as e:  # calibration or QDQ rewriting inside onnxruntime
                    raise RuntimeFailure(f"ONNX Runtime quantization failed: "
                                         f"{_first_line(e)}") from e
            with req.progress.task("converting to ORT format"):
                ort_bytes = mobile.to_ort_format(final, str(opts["ort_optimization"]),
                                                 str(opts["ort_platform"]))
            with req.progress.task(self._coverage_label(req.target.delegate)):
                try:
                    delegation, details = self.coverage(final, req.target.delegate, work)
                except Exception as e:  # ORT's optimizer or usability checker
                    raise RuntimeFailure(f"counting {req.target.delegate} coverage failed: "
                                         f"{_first_line(e)}") from e
            onnx_bytes = final.read_bytes()
            costs = _costs(final)
        ort_path = Path(req.out_path).with_suffix(".ort")
        atomic_write(ort_path, ort_bytes)
        atomic_write(Path(req.out_path), onnx_bytes)
        if qinfo is not None:
            details["quantization"] = qinfo
        if "ops" in kept:
            from edgeq.quantize.float_ops import record

            details["float_ops"] = record(recipe.float_ops, kept["ops"], self)
        return Delegation(delegation.delegated_nodes, delegation.total_nodes,
                          delegation.fallback_ops, details, costs=costs)

    @staticmethod
    def _coverage_label(delegate: str) -> str:
        """The progress line for the coverage step; it also tells the user, at export time,
        when this host cannot run the target's provider."""
        from edgeq.runtimes.onnx.session import DELEGATE_PROVIDERS, providers_for

        if delegate not in DELEGATE_PROVIDERS:
            return "counting nodes"
        _, notes = providers_for(delegate)
        return f"predicting {delegate.upper()} coverage" + (
            f" (no {DELEGATE_PROVIDERS[delegate]} in this onnxruntime: on this host the "
            "artifact runs on the CPU provider)" if notes else "")

    def coverage(self, onnx_path: Path, delegate: str, work: Path) -> tuple[Delegation, dict]:
        """(Delegation, details) for the target's provider: NNAPI from ORT's usability
        checker, XNNPACK from the op table, CPU: every node. Delegate coverage is counted on
        the graph after ORT's basic optimisations, the graph the provider sees on a device."""
        import onnx

        from edgeq.runtimes.onnx import mobile
        from edgeq.runtimes.onnx.session import DELEGATE_PROVIDERS, providers_for

        if delegate not in DELEGATE_PROVIDERS:
            return mobile.cpu_coverage(onnx.load(str(onnx_path))), {
                "provider": "CPUExecutionProvider"}
        model = mobile.basic_optimized(onnx_path, work)
        delegation, details = (mobile.nnapi_coverage(model) if delegate == "nnapi" else
                               mobile.xnnpack_coverage(model))
        _, notes = providers_for(delegate)
        details = {"provider": DELEGATE_PROVIDERS[delegate], "coverage": "predicted",
                   **details}
        if notes:
            details["notes"] = notes
        return delegation, details

    def device_runner(self):
        """How this runtime's artifacts are timed on a device (``edgeq.profiling.runners``):
        the runner config key, the runner's kind, its command line and output parser."""
        from edgeq.runtimes.onnx import device

        return device

    # -- run -----------------------------------------------------------------------------
    def open(self, artifact: Path, threads: int | None = None):
        """An ``OrtSession`` on this host: the target's provider when this onnxruntime has
        it, else the CPU provider (``session.notes`` says so). BadInput when the file is
        missing, corrupt or truncated."""
        from edgeq.runtimes.onnx.session import OrtSession

        return OrtSession(Path(artifact), threads, _delegate_of(Path(artifact)))

    def benchmark(self, artifact: Path, inputs, runs: int, warmup: int, threads: int) -> Bench:
        """Latency in a separate process through the Python session; ``threads`` becomes
        ORT's ``intra_op_num_threads``."""
        from edgeq.profiling.worker import benchmark_in_subprocess

        session = self.open(artifact, threads)  # a corrupt file is bad input, not a failure
        session.run(list(inputs))  # and so are inputs that do not fit
        bench = benchmark_in_subprocess(self.name, Path(artifact), inputs, runs, warmup,
                                        threads)
        bench.threads_applied = True
        bench.notes = [*session.notes,
                       f"ONNX Runtime {', '.join(session.providers)}, intra_op_num_threads="
                       f"{threads}", *bench.notes]
        return bench


RUNTIME = OnnxRuntime()
