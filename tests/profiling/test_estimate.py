"""The estimator: FLOPs per operator against hand counts, precision and delegation, the
roofline and energy arithmetic, the thermal model, and the probe."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edgeq.devices.profiles import from_dict, load_profile
from edgeq.profiling import estimate as est
from edgeq.profiling.estimate import cost_summary, estimate, graph_costs


def costs_of(module, *inputs, **kw):
    return graph_costs(torch.export.export(module.eval(), inputs), **kw)


def main_op(costs, kind):
    found = [c for c in costs if c.kind == kind]
    assert len(found) == 1, [(c.op, c.kind) for c in costs]
    return found[0]


def test_conv3x3_flops_by_hand():
    c = main_op(costs_of(nn.Conv2d(16, 32, 3, padding=1), torch.randn(1, 16, 8, 8)), "conv")
    assert c.flops == 2 * 9 * 16 * 32 * 64
    assert c.k == 9 * 16 and c.precision == "fp32"
    # input + weights + bias + output, fp32
    assert c.weight_bytes == (32 * 16 * 9 + 32) * 4
    assert c.bytes == (16 * 64 + 32 * 16 * 9 + 32 + 32 * 64) * 4


def test_depthwise_grouped_pointwise_and_strided():
    dw = main_op(costs_of(nn.Conv2d(32, 32, 3, padding=1, groups=32), torch.randn(1, 32, 8, 8)),
                 "dwconv")
    assert dw.flops == 2 * 9 * 32 * 64 and dw.k == 9
    g = main_op(costs_of(nn.Conv2d(32, 64, 3, padding=1, groups=4), torch.randn(1, 32, 8, 8)),
                "conv")
    assert g.flops == 2 * 9 * (32 // 4) * 64 * 64
    pw = main_op(costs_of(nn.Conv2d(32, 64, 1, stride=2), torch.randn(1, 32, 8, 8)),
                 "pointwise")
    assert pw.flops == 2 * 32 * 64 * 16


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.ln = nn.LayerNorm(10)

    def forward(self, x, a, b):
        y = self.ln(self.fc(x))
        z = torch.bmm(a, b)
        return torch.softmax(y, -1), torch.sigmoid(z) + z, torch.max_pool2d(a[:, None], 2)


def test_linear_bmm_norm_softmax_elementwise_pool():
    costs = costs_of(Mixed(), torch.randn(4, 64), torch.randn(2, 8, 16), torch.randn(2, 16, 4))
    by_op = {c.op: c for c in costs}
    assert by_op["linear"].flops == 2 * 4 * 64 * 10 and by_op["linear"].kind == "gemm"
    assert by_op["bmm"].flops == 2 * 2 * 8 * 16 * 4
    assert by_op["layer_norm"].kind == "norm" and by_op["layer_norm"].flops == 8 * 40
    assert by_op["softmax"].kind == "softmax" and by_op["softmax"].flops == 5 * 40
    assert by_op["sigmoid"].flops == 4 * 2 * 8 * 4 and by_op["add"].flops == 2 * 8 * 4
    assert by_op["max_pool2d"].kind == "pool" and by_op["max_pool2d"].flops == 2 * 4 * 8 * 4
    assert all(not c.delegated for c in costs)


def test_fusion_inside_a_delegate_only():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    fused = costs_of(m, x, assume_delegated=True)
    assert [c.kind for c in fused] == ["conv"] and fused[0].delegated
    portable = costs_of(m, x)
    assert [c.kind for c in portable] == ["conv", "eltwise", "eltwise"]


@pytest.fixture(scope="module")
def int8_costs():
    from edgeq.models import LoadedModel
    from edgeq.profiling.estimate import _ExampleData
    from edgeq.progress import QUIET
    from edgeq.quantize import pt2e
    from edgeq.recipes import load_recipe
    from edgeq.runtimes import get_runtime

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(),
                      nn.Linear(32 * 64, 10)).eval()
    ex = (torch.randn(1, 16, 8, 8),)
    q = get_runtime("executorch").quantizer(load_recipe("int8"), False, [])
    qm = pt2e.ptq(LoadedModel("t", m, ex, ["x"], "", 0), q, _ExampleData(ex), QUIET)
    return torch.export.export(qm, ex)


def test_int8_precision_between_quantize_and_dequantize(int8_costs):
    costs = graph_costs(int8_costs, assume_delegated=True)
    conv = main_op(costs, "conv")
    assert conv.precision == "int8" and conv.flops == 2 * 9 * 16 * 32 * 64
    assert conv.weight_bytes == 32 * 16 * 9 + 32 * 4  # int8 weights, int32/fp32 bias
    assert main_op(costs, "gemm").precision == "int8"
    kinds = [c.kind for c in costs]
    assert kinds[0] == "convert" and kinds[-1] == "convert"  # quantize in, dequantize out
    # Outside a delegate the same graph runs float kernels between real q/dq kernels.
    portable = graph_costs(int8_costs)
    assert main_op(portable, "conv").precision == "fp32"
    assert sum(c.kind == "convert" for c in portable) > 2


def test_lowered_program_is_walked_into_the_delegate():
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    m = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU()).eval()
    ep = torch.export.export(m, (torch.randn(1, 16, 8, 8),))
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    costs = graph_costs(edge)
    assert [(c.op, c.delegated) for c in costs] == [("convolution", True)]
    assert costs[0].flops == 2 * 9 * 16 * 32 * 64


def _profile(**over):
    d = {"name": "toy", "description": "toy", "kind": "board", "soc": "toy", "abi": "arm64-v8a",
         "clusters": [{"name": "big", "cores": 2, "core": "A76", "max_ghz": 2.0, "big": True,
                       "fp32_gflops_per_core": 100.0, "int8_gops_per_core": 400.0}],
         "big_cores": "0-1",
         "memory": {"size_gb": 4, "bandwidth_gbps": 10.0, "bandwidth_1t_gbps": 10.0},
         "delegates": ["xnnpack"], "dispatch_us": 1.0,
         "power": {"idle_w": 1.0, "cpu_active_w": {"big": 2.0}},
         "thermal": {"r_c_per_w": 10.0, "c_j_per_c": 20.0, "ambient_c": 25.0,
                     "throttle_c": 60.0, "throttled_clock_ratio": 0.5, "hysteresis_c": 2}}
    for k, v in over.items():
        d[k] = v
    return from_dict(d, "toy.yaml")


def test_roofline_arithmetic_by_hand():
    prof = _profile(peak_basis="measured")
    rows = [{"op": "convolution", "kind": "conv", "precision": "fp32", "flops": 2e8,
             "bytes": 1e5, "weight_bytes": 0, "k": 1024, "delegated": True},
            {"op": "add", "kind": "eltwise", "precision": "fp32", "flops": 1e3,
             "bytes": 1e6, "weight_bytes": 0, "k": 0, "delegated": True}]
    # conv: compute-bound at the measured peak (k = 1024: efficiency 1) -> 2000 us + 1 us
    # add: memory-bound, 1e6 bytes at 10 GB/s -> 100 us + 1 us; plus 2 invoke dispatches
    block = estimate(rows, prof, threads=1)
    assert block["latency_ms"]["p50"] == pytest.approx((2001 + 101 + 2) / 1e3)
    assert block["mode"] == "estimated" and block["device"] == "toy"
    assert block["latency_ms"]["p90"] is None and block["latency_ms"]["spread_reason"]
    assert block["estimate"]["bound"] == {"compute": 1, "memory": 1}
    # energy: (1 W idle + 2 W one busy core) x latency ms = mJ
    assert block["energy_mj_per_inference"] == pytest.approx(3.0 * 2.104, rel=1e-3)
    # a datasheet profile: compute derated to the GEMM efficiency, the all-core DRAM
    # figure to BANDWIDTH_EFFICIENCY (7 GB/s < the 10 GB/s of one core)
    slower = estimate(rows, _profile(), threads=1)["latency_ms"]["p50"]
    mem_us = 1e6 / (10e3 * est.BANDWIDTH_EFFICIENCY)
    assert slower == pytest.approx((2000 / est.GEMM_EFFICIENCY + 1 + mem_us + 1 + 2) / 1e3)
    # a portable kernel is slower
    portable = [dict(r, delegated=False) for r in rows]
    assert estimate(portable, prof)["latency_ms"]["p50"] > 5 * block["latency_ms"]["p50"]


def test_small_k_is_less_efficient_than_large_k():
    row = {"kind": "pointwise", "precision": "int8", "k": 16}
    assert est.efficiency(row) < 0.3 < est.efficiency(dict(row, k=256)) < 1.0
    assert est.efficiency(dict(row, k=1024)) == pytest.approx(1.0)


def test_summary_round_trip_gives_the_same_estimate():
    costs = costs_of(nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(),
                                   nn.Linear(16 * 36, 10)), torch.randn(1, 3, 8, 8),
                     assume_delegated=True)
    summary = cost_summary(costs)
    assert summary["total_flops"] == sum(c.flops for c in costs)
    assert len(summary["nodes"][0]) == len(summary["fields"])
    prof = load_profile("pixel-8")
    a, b = estimate(costs, prof), estimate(summary, prof)
    assert a["latency_ms"] == b["latency_ms"] and a["peak_memory_bytes"] == b["peak_memory_bytes"]
    assert a["peak_memory_bytes"] >= summary["weight_bytes"]
    four = estimate(summary, prof, threads=4)
    assert four["latency_ms"]["p50"] < a["latency_ms"]["p50"]
    assert four["energy_detail"]["active_w"] > a["energy_detail"]["active_w"]


HEAVY = [{"op": "convolution", "kind": "conv", "precision": "fp32", "flops": 5e8,
          "bytes": 1e5, "weight_bytes": 0, "k": 1024, "delegated": True}]


def test_thermal_throttles_under_high_power():
    prof = _profile(power={"idle_w": 1.0, "cpu_active_w": {"big": 6.0}})
    th = estimate(HEAVY, prof, threads=2, sustained_s=600)["thermal"]
    # steady state 25 + (1 + 12) x 10 = 155 C > 60 C: throttles. Analytic first crossing
    # from the idle equilibrium T0 = 35 C: t = RC ln((Tss - T0) / (Tss - 60)).
    t_expected = 10 * 20 * math.log((155 - 35) / (155 - 60))
    assert th["throttled"] and th["time_to_throttle_s"] == pytest.approx(t_expected, rel=0.05)
    assert th["sustained_over_peak"] < 0.9 and th["sustained_over_peak"] <= 1.0
    assert th["steady_state_c"] == pytest.approx(155)
    assert any(p["clock_ratio"] == 0.5 for p in th["trace"])
    assert max(p["temp_c"] for p in th["trace"]) < 70  # clocks drop: it stays near 60 C
    slow = [p["latency_ms"] for p in th["trace"] if p["clock_ratio"] == 0.5]
    fast = [p["latency_ms"] for p in th["trace"] if p["clock_ratio"] == 1.0]
    assert min(slow) > max(fast)


def test_thermal_does_not_throttle_under_low_power():
    prof = _profile(power={"idle_w": 0.5, "cpu_active_w": {"big": 1.0}})
    th = estimate(HEAVY, prof, threads=1, sustained_s=600)["thermal"]
    assert not th["throttled"] and th["time_to_throttle_s"] is None
    assert th["time_to_throttle_s_reason"] and th["sustained_over_peak"] == pytest.approx(1.0)
    assert th["trace"][-1]["temp_c"] == pytest.approx(40, abs=0.5)  # 25 + 1.5 W x 10


def test_bad_estimate_inputs():
    from edgeq.errors import BadInput

    with pytest.raises(BadInput, match="cost summary"):
        estimate({"nodes": []}, _profile())
    with pytest.raises(BadInput, match="--sustained"):
        estimate(HEAVY, _profile(), sustained_s=-1)


def test_probe_facts_from_a_big_little_sysfs():
    from edgeq.profiling.probe import facts_from

    files = {"/proc/cpuinfo": "processor\t: 0\nCPU part\t: 0xd46\n",
             "/proc/meminfo": "MemTotal:       7800000 kB\n",
             "/sys/devices/system/cpu/cpu0/cache/index2/level": "3",
             "/sys/devices/system/cpu/cpu0/cache/index2/type": "Unified",
             "/sys/devices/system/cpu/cpu0/cache/index2/size": "4096K"}
    for cpu, khz in enumerate([1800000] * 4 + [2850000] * 3 + [3050000]):
        files[f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq"] = str(khz)
    f = facts_from(files.get, 8, "aarch64")
    assert [(c["cpus"], c["max_ghz"]) for c in f["clusters"]] == [
        ([7], 3.05), ([4, 5, 6], 2.85), ([0, 1, 2, 3], 1.8)]
    assert f["abi"] == "arm64-v8a" and f["cache_mb"] == 4 and f["memory_gb"] == 7.99
    missing = facts_from({}.get, 2, "x86_64")
    assert missing["clusters"][0]["max_ghz"] is None and "cpufreq" in missing["clock_reason"]


def test_quick_probe_writes_a_profile_load_profile_accepts(tmp_path):
    from edgeq.errors import BadInput
    from edgeq.profiling.probe import probe, write_profile

    data = probe(quick=True)
    out = write_profile(data, tmp_path / "host.yaml")
    prof = load_profile(str(out))
    assert prof.peak_basis == "measured" and prof.cpu_peak("fp32", 1) > 0
    assert prof.bandwidth_gbps > 0 and prof.dispatch_us > 0
    with pytest.raises(BadInput, match="already exists"):
        write_profile(data, out)
    block = estimate(costs_of(nn.Linear(256, 256), torch.randn(1, 256),
                              assume_delegated=True), prof)
    assert block["latency_ms"]["p50"] > 0 and block["device"] == "host"


# -- end to end, once the core wiring is in (manifest "costs", profile --estimate) --------
@pytest.fixture
def estimate_cli(run_cli):
    from edgeq.cli.profile import profile as profile_cmd

    if not any(p.name == "estimate" for p in profile_cmd.params):
        pytest.skip("`edgeq profile --estimate` is not wired into the CLI yet")
    return run_cli


def _one_error_line(r, *needles):
    assert r.exit_code == 2, (r.exit_code, r.output)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("edgeq: error:")]
    assert len(errors) == 1 and "Traceback" not in r.output, r.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def test_cli_profile_estimate(estimate_cli, fp32_pte, tmp_path):
    import json

    manifest = json.loads(fp32_pte.with_name(fp32_pte.name + ".manifest.json").read_text())
    assert manifest["costs"]["total_flops"] > 0 and manifest["costs"]["nodes"]
    r = estimate_cli(["profile", fp32_pte, "--estimate", "--profile", "pixel-8",
                      "--sustained", "120", "--json"])
    assert r.exit_code == 0, r.output
    block = r.json()
    assert block["mode"] == "estimated" and block["device"] == "pixel-8"
    assert block["latency_ms"]["p50"] > 0 and block["thermal"]["trace"]
    cell = json.loads((fp32_pte.parent / "report.json").read_text())["results"][0]
    assert cell["profile"]["mode"] == "estimated"
    _one_error_line(estimate_cli(["profile", fp32_pte, "--estimate", "--profile", "pixel-9"]),
                    "'pixel-9'", "valid profiles", "raspberry-pi-5")
    bad = tmp_path / "bad.yaml"
    bad.write_text((load_profile("pixel-8").path).read_text().replace(
        "bandwidth_gbps: 68.3", "bandwidth_gbps: -1"))
    _one_error_line(estimate_cli(["profile", fp32_pte, "--estimate", "--profile", bad]),
                    "memory.bandwidth_gbps", str(bad))
