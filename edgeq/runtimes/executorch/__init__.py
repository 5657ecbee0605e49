"""ExecuTorch: XNNPACKQuantizer for PT2E, ``to_edge_transform_and_lower`` with the
partitioner of the target's delegate (XNNPACK, or Vulkan for fp32), ``executorch.runtime``
on the host, and a native runner for timing."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from edgeq.artifacts import atomic_write
from edgeq.errors import BadInput, CannotRunHere, RuntimeFailure
from edgeq.runtimes.base import (Bench, BuildRequest, Delegation, package_versions,
                                 quiet_native_stderr)

DELEGATES = ("xnnpack", "vulkan")


class VulkanUnavailable(CannotRunHere):
    """A .pte with a Vulkan delegate on a host that cannot run it (the executorch wheel
    registers no VulkanBackend, and x86 hosts here have no Vulkan GPU/driver). Exit 3."""

    MESSAGE = ("the Vulkan delegate cannot run on this host (no Vulkan GPU/driver, and the "
               "executorch pip wheel has no Vulkan backend); run it on a device")

    def __init__(self, message: str = MESSAGE):
        super().__init__(message)


def _backend_ids(artifact: Path) -> set[str]:
    """The delegate backends a .pte program needs (empty when it cannot be parsed)."""
    try:
        data = Path(artifact).read_bytes()
    except OSError:
        return set()
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary

        pte = deserialize_pte_binary(data)
        program = getattr(pte, "program", pte)
        return {d.id for plan in program.execution_plan for d in plan.delegates}
    except Exception:  # private API or a corrupt file: fall back to the id's bytes
        return {"VulkanBackend"} if b"VulkanBackend" in data else set()


class _Session:
    def __init__(self, method, path: Path):
        self.method, self.path = method, path
        meta = method.metadata
        self.input_shapes = [tuple(meta.input_tensor_meta(i).sizes())
                             for i in range(meta.num_inputs())]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        try:
            outs = self.method.execute([torch.from_numpy(np.ascontiguousarray(x))
                                        for x in inputs])
        except Exception as e:
            raise RuntimeFailure(f"ExecuTorch failed to run '{self.path}': {e}") from e
        return [o.numpy() if hasattr(o, "numpy") else np.asarray(o) for o in outs]


def _annotate_dynamic_ops(q, recipe, runtime, qat: bool) -> None:
    """The recipe's ``dynamic_ops`` on ExecuTorch: after the static pass (which leaves the
    float kinds unannotated), the FFN down projections kept float by ``float_ops`` (not
    those under ``keep_float``, which the filter never hands to it) get XNNPACKQuantizer's
    dynamic linear config: int8 per-channel weights, the input quantized per inference, a
    float output (XNNPACK's qd8-f32-qc8w fully-connected). ``q.dynamic_ops`` becomes the
    manifest's entry."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import \
        get_symmetric_quantization_config

    from edgeq.quantize import float_ops
    from edgeq.quantize.passes import pt2e_weight_config

    static = q._annotate_for_quantization_config  # inside annotate, before propagation

    def annotate_static_then_dynamic(model):
        model = static(model)
        # quantized ExecuTorch builds are XNNPACK's (the Vulkan target refuses them)
        kinds, q.dynamic_ops = float_ops.plan_dynamic(recipe, q.float_ops.resolved, runtime,
                                                      qat, "xnnpack")
        names = set(q.float_ops.ffn_down) if "ffn_down" in kinds else set()
        if names:
            saved, q.filter_fn = q.filter_fn, None
            # per channel whatever the recipe says: XNNPACK's dynamic linear is per channel
            cfg = pt2e_weight_config(get_symmetric_quantization_config(
                is_per_channel=True, is_dynamic=True), recipe)
            try:
                q._annotate_all_patterns(model, cfg, lambda n: n.name in names)
            finally:
                q.filter_fn = saved
            q.dynamic_ops.update(layers=float_ops.ffn_down_modules(q.float_ops),
                                 executed=DYNAMIC_EXECUTED)
        elif kinds:
            q.dynamic_ops.update(layers=[], note=float_ops.NO_FFN_DOWN)
        return model

    q._annotate_for_quantization_config = annotate_static_then_dynamic


DYNAMIC_EXECUTED = ("dynamic int8: int8 per-channel weights (whatever the recipe's "
                    "granularity), input quantized per inference, float output (XNNPACK "
                    "qd8-f32-qc8w fully-connected)")


class ExecuTorchRuntime:
    name = "executorch"
    # Recipe float_ops "auto" on ExecuTorch + XNNPACK: the kinds kept float by the rule
    # in edgeq.quantize.float_ops, measured by benchmarks/bench_float_ops.py (MiniLM-L6,
    # 256 / 256 real sentences, p50 at 1 thread; results/float_ops.json).
    # All five float: cosine 0.9937, 68.5 MB, 4.89 ms. Each kind quantized alone:
    #   kind        cosine    MB   p50 ms  runs in int8
    #   softmax     0.9934  68.5     5.4  no: quantizer leaves it float; XNNPACK softmax is fp32
    #   layer_norm  0.8548  68.5     5.4  no: native_layer_norm, fp32, outside XNNPACK
    #   mask_add    0.3752  68.5     5.4  yes
    #   ffn_down    0.9461  57.9     2.97 yes; SmoothQuant 0.5: 0.9409
    #   qk_matmul   0.9934  68.5     4.95 no: XNNPACK's batch matmul is fp32 (only its scale
    #                                     multiply becomes int8)
    # (softmax / layer_norm / mask_add timed in an earlier run, ~5.3 ms float-all there.)
    # All five stay float: int8 ffn_down is 1.6x faster but its int8 output (where the outlier
    # dimensions are born) costs 0.048 cosine; the others fail on accuracy or stay fp32.
    float_ops_auto = ("softmax", "layer_norm", "mask_add", "ffn_down", "qk_matmul")
    # Recipe dynamic_ops "auto": the float FFN down projections as XNNPACK dynamic linears
    # (qd8-f32-qc8w), same run: cosine 0.9932, 57.9 MB, 3.03 ms.
    dynamic_ops_auto = ("ffn_down",)
    dynamic_ops_supported = ("ffn_down",)
    dynamic_ops_measured_on = ("xnnpack",)  # delegates ``auto`` applies on
    supports_int16_activations = False  # Recipe.int16_layers
    int16_unsupported = "XNNPACKQuantizer and the XNNPACK delegate are int8-only"

    def versions(self) -> dict[str, str]:
        return package_versions(("executorch", "torch", "torchao"))

    def check(self) -> list[tuple[str, bool, str]]:
        from edgeq.runtimes.executorch import native

        rows = []
        v = self.versions()
        for pkg in ("torch", "torchao", "executorch"):
            ok = v[pkg] != "missing"
            rows.append((pkg, ok, v[pkg] if ok else f"pip install {pkg}"))
        cxx = native.compiler()
        rows.append(("native .pte runner", cxx is not None,
                     f"built with {cxx} on first profile" if cxx else
                     "no C++ compiler: install g++ (apt-get install g++); profiling falls "
                     "back to the Python runtime"))
        return rows

    def op_kinds(self, artifact: Path) -> dict:
        """How ``artifact`` runs each transformer op kind (``edgeq.quantize.float_ops``:
        int8, dynamic or float), read from the file as this runtime executes it."""
        from edgeq.runtimes.executorch.op_kinds import inspect

        return inspect(Path(artifact))

    # -- build ---------------------------------------------------------------------------
    def quantizer(self, recipe, qat: bool, keep_float: list[str]):
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config)
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import \
            QuantizationConfig
        import dataclasses

        from edgeq.quantize.observers import observer_for

        cfg = get_symmetric_quantization_config(
            is_per_channel=recipe.weight_granularity == "per-channel", is_qat=qat)
        if not qat:  # QAT keeps the config's fake quantizers and their observers
            obs = observer_for(recipe)
            act = dataclasses.replace(cfg.input_activation, observer_or_fake_quant_ctr=obs)
            cfg = QuantizationConfig(act, act, cfg.weight, cfg.bias, cfg.is_qat)
        from edgeq.quantize.passes import pt2e_weight_config
        from edgeq.quantize.relu6 import fuse_relu6

        q = fuse_relu6(XNNPACKQuantizer().set_global(pt2e_weight_config(cfg, recipe)))
        # set_module_name(name, None) asserts in XNNPACKQuantizer: filter nodes instead.
        from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

        from edgeq.quantize.float_ops import pt2e_filter

        keep = [get_module_name_filter(n) for n in keep_float]
        q.float_ops = pt2e_filter(recipe.float_ops, self)  # softmax / mask add / layer norm
        keep.append(q.float_ops)
        q.set_filter_function(lambda node: not any(f(node) for f in keep))
        q.dynamic_ops = None
        _annotate_dynamic_ops(q, recipe, self, qat)
        return q

    def build(self, req: BuildRequest) -> Delegation:
        from edgeq.quantize import pt2e

        module = req.model.module
        delegate = req.target.delegate
        if delegate == "vulkan" and req.recipe.quantized:
            # The wheel's VulkanQuantizer is weight-only / dynamic for linear only: no
            # static int8 that the Vulkan delegate would take.
            raise BadInput(f"{req.recipe.name} is not available for {req.target.name}; use "
                           "fp32 or executorch-xnnpack")
        from edgeq.quantize.schemes import is_scheme

        if is_scheme(req.recipe):  # dynamic / weight-only: edgeq.runtimes.executorch.schemes
            from edgeq.runtimes.executorch import schemes

            return schemes.build(self, req)
        q = None
        if req.recipe.quantized:
            keep = pt2e.resolve_keep_float(req.model.module, req.recipe.keep_float)
            q = self.quantizer(req.recipe, req.qat is not None, keep)
            module = (pt2e.qat(req.model, q, req.qat, req.progress) if req.qat else
                      pt2e.ptq(req.model, q, req.calib, req.progress))
        program, delegation = self.export_and_lower(module, req, delegate)
        atomic_write(req.out_path, program)
        if q is not None:
            from edgeq.quantize.float_ops import record

            delegation.details["float_ops"] = record(req.recipe.float_ops,
                                                     q.float_ops.resolved, self)
            if q.dynamic_ops is not None:
                delegation.details["dynamic_ops"] = q.dynamic_ops
        return delegation

    def export_and_lower(self, module, req: BuildRequest,
                         delegate: str) -> tuple[bytes, Delegation]:
        """``torch.export`` of the (quantized) module at the model's example inputs, then
        lowering to ``delegate``; an export failure names the op and the user's line."""
        import torch

        from edgeq.quantize import pt2e

        with req.progress.task(f"lowering to {req.target.name}"):
            try:
                with pt2e.quiet_stderr():
                    ep = torch.export.export(module, req.model.example_inputs)
            except Exception as e:
                raise pt2e.describe_export_error(e, "torch.export") from e
            return self.lower(ep, delegate)

    def lower(self, ep, delegate: str = "xnnpack") -> tuple[bytes, Delegation]:
        import logging

        from executorch.exir import to_edge_transform_and_lower

        from edgeq.quantize.pt2e import describe_export_error

        if delegate not in DELEGATES:
            raise BadInput(f"delegate '{delegate}' is not supported by the executorch "
                           f"runtime; valid: {', '.join(DELEGATES)}")
        root = logging.getLogger()
        level = root.level
        try:
            # The Vulkan modules set the root logger to INFO on import and log every
            # partition at INFO: keep the user's stderr to edgeq's own lines.
            if delegate == "vulkan":
                from executorch.backends.vulkan.partitioner.vulkan_partitioner import \
                    VulkanPartitioner

                root.setLevel(max(level, logging.WARNING))
                partitioner = VulkanPartitioner()
            else:
                from executorch.backends.xnnpack.partition.xnnpack_partitioner import \
                    XnnpackPartitioner

                partitioner = XnnpackPartitioner()
            try:
                edge = to_edge_transform_and_lower(ep, partitioner=[partitioner])
            except Exception as e:
                name = "Vulkan" if delegate == "vulkan" else "XNNPACK"
                raise describe_export_error(e, f"{name} lowering", ep.graph) from e
        finally:
            root.setLevel(level)
        delegation = delegation_summary(edge.exported_program().graph_module)
        delegation.costs = lowered_costs(edge)
        try:
            program = edge.to_executorch()
        except Exception as e:
            raise describe_export_error(e, "ExecuTorch program emission") from e
        return program.buffer, delegation

    def device_runner(self):
        """How this runtime's artifacts are timed on a device (``edgeq.profiling.runners``):
        the runner config key, the runner's kind, its command line and output parser."""
        from edgeq.runtimes.executorch import device

        return device

    # -- run -----------------------------------------------------------------------------
    def open(self, artifact: Path, threads: int | None = None) -> _Session:
        from executorch.runtime import Runtime

        artifact = Path(artifact)
        if threads:
            # Process-wide; must happen before load_method, when XNNPACK takes the pool.
            from executorch.extension.pybindings.portable_lib import \
                _unsafe_reset_threadpool

            _unsafe_reset_threadpool(int(threads))
        try:
            with quiet_native_stderr():
                program = Runtime.get().load_program(str(artifact))
                method = program.load_method("forward")
        except Exception as e:
            if ("VulkanBackend" in _backend_ids(artifact)
                    and not Runtime.get().backend_registry.is_available("VulkanBackend")):
                raise VulkanUnavailable() from e
            raise BadInput(f"artifact '{artifact}' is not a loadable ExecuTorch program "
                           f"(corrupt or truncated?): {str(e).splitlines()[0][:200]}") from e
        return _Session(method, artifact)

    def benchmark(self, artifact: Path, inputs, runs: int, warmup: int, threads: int) -> Bench:
        from edgeq.profiling.worker import benchmark_in_subprocess
        from edgeq.runtimes.executorch import native

        self.open(artifact)  # a corrupt file is bad input, not a runner failure
        notes = []
        if native.compiler() is not None:
            try:
                runner = native.build_runner()
                r = native.run(runner, Path(artifact), inputs, runs, warmup, threads)
                return Bench(r.times_ms, r.peak_rss_bytes, "native", r.threads_applied)
            except RuntimeFailure as e:
                notes.append(f"native runner unavailable ({e}); used the Python runtime")
        else:
            notes.append("no C++ compiler found; timed with the Python runtime (includes "
                         "Python call overhead)")
        bench = benchmark_in_subprocess(self.name, artifact, inputs, runs, warmup, threads,
                                        threads_applied=True)
        bench.notes = notes + bench.notes
        return bench


def delegation_summary(gm) -> Delegation:
    """Count ops inside delegate blobs (XNNPACK or Vulkan) against ops left in the
    top-level graph."""
    import operator

    delegated, fallback = 0, Counter()
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        if "executorch_call_delegate" in str(node.target):
            lowered = getattr(gm, node.args[0].target)
            delegated += sum(1 for n in lowered.original_module.graph.nodes
                             if n.op == "call_function" and n.target is not operator.getitem)
        else:
            name = getattr(node.target, "__name__", str(node.target))
            fallback[name.replace("aten.", "").replace(".default", "")] += 1
    return Delegation(delegated, delegated + sum(fallback.values()), dict(fallback))


def lowered_costs(edge) -> dict | None:
    """Per-operator FLOPs and bytes of the lowered program, delegate subgraphs included,
    for ``--estimate`` (None when costing fails: an estimate is optional, an export not)."""
    try:
        from edgeq.profiling.estimate import cost_summary, graph_costs

        return cost_summary(graph_costs(edge))
    except Exception:
        return None


RUNTIME = ExecuTorchRuntime()
