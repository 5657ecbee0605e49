"""LiteRT (.tflite): litert-torch's PT2E quantizer and converter for PyTorch models,
ai-edge-quantizer for an existing .tflite, the ai-edge-litert interpreter on the host
(XNNPACK applied by default), and delegate coverage: measured for XNNPACK, predicted for
NNAPI (which does not exist off Android).

Target options (``options:`` in the target YAML):
  io_dtype                 ``auto`` (default: what the quantizers emit, which for static
                           int8 is int8 inputs and outputs), ``int8`` or ``float``. A
                           Recipe field of the same name, when Recipe has one, wins.
  nnapi_android_api_level  the Android API level NNAPI coverage is predicted for (30).
"""
from __future__ import annotations

from pathlib import Path

from edgeq.artifacts import atomic_write, read_manifest
from edgeq.errors import BadInput, ExportFailure
from edgeq.runtimes.base import Bench, BuildRequest, Delegation, package_versions

PACKAGES = ("litert-torch", "ai-edge-litert", "ai-edge-quantizer", "torch")
DEFAULT_NNAPI_API_LEVEL = 30  # Android 11: NNAPI 1.3, the first with signed int8 QUANTIZE


def _costs(content: bytes) -> dict | None:
    """The cost summary ``profile --estimate`` works from; None (no estimate later, the
    export itself is fine) when an operator cannot be costed."""
    from edgeq.runtimes.tflite.costs import tflite_costs

    try:
        return tflite_costs(content)
    except Exception:
        return None


def _io_dtype(req: BuildRequest) -> str:
    # The recipe decides when it says more than "auto"; else the target's default.
    value = req.recipe.io_dtype
    if value == "auto":
        value = req.target.options.get("io_dtype", "auto")
    if value not in ("auto", "int8", "float"):
        raise BadInput(f"target '{req.target.name}': io_dtype '{value}' is not one of auto, "
                       "int8, float")
    return value


class LiteRTRuntime:
    name = "tflite"
    # Recipe.int16_layers: the interpreter runs 16x8 models, but litert-torch 0.10 converts a
    # mixed int8 / int16 graph without the requantize at the boundaries (wrong numbers), and
    # XNNPACK delegates no 16x8 op.
    supports_int16_activations = False
    int16_unsupported = ("litert-torch cannot convert per-layer 16-bit activations (mixed "
                         "int8 / int16) and XNNPACK runs no 16x8 op")
    # Recipe float_ops "auto" on LiteRT + XNNPACK: the kinds kept float by the rule
    # in edgeq.quantize.float_ops, measured by benchmarks/bench_float_ops.py (MiniLM-L6,
    # 256 / 256 real sentences, p50 at 1 thread; results/float_ops.json).
    # All five float: cosine 0.9937, 68.9 MB, 4.38 ms. Each kind quantized alone:
    #   kind        cosine    MB   p50 ms  runs in int8
    #   softmax     0.9937  68.9     4.49  no: its quantizer leaves it float
    #   layer_norm  0.8546  68.9     4.42  no: decomposed (mean, rsqrt ...), runs fp32
    #   mask_add    0.3752  68.9     4.50  yes
    #   ffn_down    0.9460  58.3     2.61  yes; SmoothQuant 0.5: 0.9486
    #   qk_matmul   0.9935  68.9     6.34  yes, in LiteRT's kernel: XNNPACK has no int8
    #                                      batch matmul, the graph splits in 7 partitions
    # All five stay float: int8 ffn_down is 1.7x faster but its int8 output (where the outlier
    # dimensions are born) costs 0.048 cosine; the others fail on accuracy or speed.
    float_ops_auto = ("softmax", "layer_norm", "mask_add", "ffn_down", "qk_matmul")
    # Recipe dynamic_ops "auto": the float FFN down projections run as dynamic-range int8
    # (edgeq.runtimes.tflite.dynamic_ops), same run: cosine 0.9933, 58.3 MB, 2.52 ms.
    dynamic_ops_auto = ("ffn_down",)
    dynamic_ops_supported = ("ffn_down",)
    dynamic_ops_measured_on = ("xnnpack",)  # delegates ``auto`` applies on

    def weight_grid(self, recipe):
        """The weight grid this runtime's quantizer rounds ``recipe``'s weights on."""
        from edgeq.runtimes.tflite.schemes import weight_grid

        return weight_grid(recipe)

    def versions(self) -> dict[str, str]:
        return package_versions(PACKAGES)

    def check(self) -> list[tuple[str, bool, str]]:
        v = self.versions()
        why = {"litert-torch": "converts PyTorch models to .tflite",
               "ai-edge-litert": "runs .tflite on this host",
               "ai-edge-quantizer": "quantizes an existing .tflite"}
        return [(pkg, v[pkg] != "missing",
                 v[pkg] if v[pkg] != "missing" else f"pip install {pkg} ({why[pkg]})")
                for pkg in why]

    def op_kinds(self, artifact: Path) -> dict:
        """How ``artifact`` runs each transformer op kind (``edgeq.quantize.float_ops``:
        int8, dynamic or float), read from the file as this runtime executes it."""
        from edgeq.runtimes.tflite.op_kinds import inspect

        return inspect(Path(artifact))

    # -- build ---------------------------------------------------------------------------
    def quantizer(self, recipe, qat: bool, keep_float: list[str]):
        from edgeq.runtimes.tflite.convert import quantizer

        return quantizer(recipe, qat, keep_float, self)

    def build(self, req: BuildRequest) -> Delegation:
        from edgeq.quantize.schemes import is_scheme
        from edgeq.runtimes.tflite import convert

        if is_scheme(req.recipe):  # dynamic / weight-only: edgeq.runtimes.tflite.schemes
            from edgeq.runtimes.tflite import schemes

            content, qinfo = schemes.build(req)
            delegation = self.delegation(content, req.target)
            delegation.details["quantization"] = qinfo
            delegation.costs = _costs(content)
            atomic_write(req.out_path, content)
            return delegation
        io = _io_dtype(req)
        if req.model.module is None:
            content = self._from_tflite(req, io)
        else:
            from edgeq.quantize import pt2e

            module, q = req.model.module, None
            if req.recipe.quantized:
                keep = pt2e.resolve_keep_float(module, req.recipe.keep_float)
                q = self.quantizer(req.recipe, req.qat is not None, keep)
                module = (pt2e.qat(req.model, q, req.qat, req.progress, fold_quantize=False)
                          if req.qat else
                          pt2e.ptq(req.model, q, req.calib, req.progress, fold_quantize=False))
                module = convert.single_quantization(module)
            with req.progress.task(f"converting to LiteRT for {req.target.name}"):
                content = convert.convert(module, req.model, q)
            if q is not None:
                content, dynamic = self._dynamic_ops(content, req, q, keep)
            if req.recipe.quantized and io == "float":
                content = convert.float_io(content)
            elif req.recipe.quantized and io == "int8":
                content = convert.int8_io(content)
        delegation = self.delegation(content, req.target)
        delegation.costs = _costs(content)
        if req.model.module is not None and q is not None:
            from edgeq.quantize.float_ops import record

            delegation.details["float_ops"] = record(req.recipe.float_ops,
                                                     q.float_ops.resolved, self)
            delegation.details["dynamic_ops"] = dynamic
        atomic_write(req.out_path, content)
        return delegation

    def _dynamic_ops(self, content: bytes, req: BuildRequest, q, keep) -> tuple[bytes, dict]:
        """The recipe's ``dynamic_ops``: kept-float FFN down projections made dynamic-range
        int8 (``edgeq.runtimes.tflite.dynamic_ops``); (content, the manifest's entry)."""
        from edgeq.quantize import float_ops
        from edgeq.runtimes.tflite import dynamic_ops as dyn

        kinds, entry = float_ops.plan_dynamic(req.recipe, q.float_ops.resolved, self,
                                              req.qat is not None, req.target.delegate)
        if not kinds:
            return content, entry
        modules = float_ops.ffn_down_modules(q.float_ops)
        if not modules:
            entry.update(layers=[], note=float_ops.NO_FFN_DOWN)
            return content, entry
        scopes, layers, why = dyn.select(dyn.ffn_down_scopes(content), modules, keep)
        if scopes:
            with req.progress.task(f"making {len(scopes)} FFN down projections dynamic "
                                   "int8 with ai-edge-quantizer"):
                content = dyn.apply(content, scopes)
            done = dyn.hybrid_count(content, scopes)
            if done != len(scopes):
                why = f"{len(scopes) - done} of {len(scopes)} stayed float"
        entry.update(layers=layers, executed=dyn.EXECUTED if scopes else None,
                     tool="ai-edge-quantizer " + self.versions()["ai-edge-quantizer"])
        if why:
            entry["note"] = why
        return content, entry

    def _from_tflite(self, req: BuildRequest, io: str) -> bytes:
        """An existing .tflite as MODEL: copied for fp32, quantized with ai-edge-quantizer
        for int8 (global min/max activation ranges: it has no histogram observer)."""
        from edgeq.runtimes.tflite import convert

        src = Path(req.model.source_file)
        content = src.read_bytes()
        if not req.recipe.quantized:
            return content
        if req.qat is not None:
            raise BadInput(f"model '{src}': QAT needs the PyTorch model; a .tflite can only "
                           "be quantized after training (drop --qat-data)")
        if req.recipe.keep_float:
            raise BadInput(f"model '{src}': --keep-float names PyTorch modules, which a "
                           ".tflite does not have")
        if req.recipe.activation_observer not in ("minmax", "histogram"):
            raise BadInput(f"observer '{req.recipe.activation_observer}' is not available "
                           "when MODEL is a .tflite (ai-edge-quantizer takes min/max ranges); "
                           "use minmax, or give the PyTorch model")
        from edgeq.runtimes.tflite.coverage import I8, U8, read_ops

        if any(t is not None and t[0] in (I8, U8) and not t[2]
               for op in read_ops(content) for t in op.inputs):
            raise BadInput(f"model '{src}' is already quantized; export it with --recipe "
                           "fp32 to re-target it")
        with req.progress.task(f"quantizing {src.name} with ai-edge-quantizer on "
                               f"{len(req.calib)} samples (min/max ranges)"):
            content = convert.quantize_tflite(content, req.recipe, req.calib)
        if io == "float":
            content = convert.float_io(content)
        elif io == "int8":
            content = convert.int8_io(content)
        return content

    def delegation(self, content: bytes, target) -> Delegation:
        """Delegate coverage of ``content`` for ``target``: measured for XNNPACK (the
        interpreter applies it here), predicted for NNAPI."""
        from edgeq.runtimes.tflite import coverage

        if target.delegate == "nnapi":
            api = int(target.options.get("nnapi_android_api_level", DEFAULT_NNAPI_API_LEVEL))
            d, why = coverage.nnapi_delegation(content, api)
            return Delegation(d.delegated_nodes, d.total_nodes, d.fallback_ops, details={
                "mode": "predicted", "delegate": "nnapi", "android_api_level": api,
                "basis": coverage.NNAPI_SOURCE,
                "note": "NNAPI does not run on this host: coverage is predicted from the "
                        "delegate's op rules; a device's driver may still reject ops"},
                reasons=why)
        try:
            d = coverage.xnnpack_delegation(content)
        except Exception as e:  # the converter wrote something the interpreter rejects
            first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            raise ExportFailure(f"LiteRT cannot load the model it converted: {first[:200]}") \
                from e
        return Delegation(d.delegated_nodes, d.total_nodes, d.fallback_ops, details={
            "mode": "measured", "delegate": "xnnpack",
            "basis": f"XNNPACK delegate applied by ai-edge-litert "
                     f"{self.versions()['ai-edge-litert']} on this host"})

    def device_runner(self):
        """How this runtime's artifacts are timed on a device (``edgeq.profiling.runners``):
        the runner config key, the runner's kind, its command line and output parser."""
        from edgeq.runtimes.tflite import device

        return device

    # -- run -----------------------------------------------------------------------------
    def open(self, artifact: Path, threads: int | None = None):
        from edgeq.runtimes.tflite.session import open_session

        return open_session(Path(artifact), threads)

    def benchmark(self, artifact: Path, inputs, runs: int, warmup: int, threads: int) -> Bench:
        from edgeq.profiling.worker import benchmark_in_subprocess

        self.open(artifact)  # a corrupt file is bad input, not a runner failure
        # The worker's session sets the interpreter's thread count.
        bench = benchmark_in_subprocess(self.name, Path(artifact), inputs, runs, warmup, threads,
                                        threads_applied=True)
        manifest = read_manifest(Path(artifact)) or {}
        if (manifest.get("target") or {}).get("delegate") == "nnapi":
            bench.notes.append("NNAPI does not exist on this host: timed on the CPU with "
                               "XNNPACK; the NNAPI coverage in the delegation block is "
                               "predicted, not run")
        return bench


RUNTIME = LiteRTRuntime()
