"""executorch-vulkan: fp32 lowers to the Vulkan delegate from the executorch wheel; int8
is refused in one line; running the .pte here (no VulkanBackend in the wheel, no Vulkan
driver on the host) is a clear exit-3 error, never a traceback or a made-up number."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import invoke, write_work

pytest.importorskip("executorch.backends.vulkan.partitioner.vulkan_partitioner")

TARGET = "executorch-vulkan"
MESSAGE = ("the Vulkan delegate cannot run on this host (no Vulkan GPU/driver, and the "
           "executorch pip wheel has no Vulkan backend); run it on a device")


@pytest.fixture(scope="module")
def vk(tmp_path_factory):
    """(work, out dir, artifact) of one fp32 export to executorch-vulkan."""
    root = tmp_path_factory.mktemp("vulkan")
    work = write_work(root / "in")
    out = root / "out"
    r = invoke(["export", work.model, "-t", TARGET, "--recipe", "fp32", "-o", out])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "Traceback" not in r.output and "INFO:root" not in r.output
    return work, out, out / f"build.fp32.{TARGET}.pte"


def test_export_fp32_delegates_to_vulkan(vk):
    _, out, pte = vk
    assert pte.is_file()
    m = json.loads(Path(str(pte) + ".manifest.json").read_text())
    assert m["target"] == {"name": TARGET, "runtime": "executorch", "format": "pte",
                           "delegate": "vulkan"}
    assert m["delegation"]["delegated_nodes"] > 0
    assert b"VulkanBackend" in pte.read_bytes() and b"XnnpackBackend" not in pte.read_bytes()
    report = json.loads((out / "report.json").read_text())
    assert [c["target"] for c in report["results"]] == [TARGET]


def _one_error_line(r, code: int) -> str:
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("edgeq: error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def test_int8_is_bad_input(tmp_path):
    work = write_work(tmp_path / "in")
    out = tmp_path / "out"
    r = invoke(["export", work.model, "-t", TARGET, "--recipe", "int8", "--calib", work.calib,
                "-o", out])
    line = _one_error_line(r, 2)
    assert "int8 is not available for executorch-vulkan; use fp32 or executorch-xnnpack" in line
    assert not list(out.glob("*.pte"))


@pytest.mark.parametrize("cmd", ["eval", "profile"])
def test_running_here_is_a_clear_runtime_failure(vk, cmd):
    work, _, pte = vk
    args = ["eval", pte, "--data", work.eval] if cmd == "eval" else \
        ["profile", pte, "--device", "local", "--runs", "2", "--warmup", "0"]
    line = _one_error_line(invoke(args), 3)
    assert MESSAGE in line


def test_open_raises_vulkan_unavailable(vk):
    from edgeq.errors import RuntimeFailure
    from edgeq.runtimes.executorch import RUNTIME, VulkanUnavailable

    with pytest.raises(VulkanUnavailable) as e:
        RUNTIME.open(vk[2])
    assert isinstance(e.value, RuntimeFailure) and e.value.exit_code == 3
    assert str(e.value) == MESSAGE


def test_targets_lists_vulkan():
    r = invoke(["targets", "--json"])
    assert r.exit_code == 0, r.output
    rows = r.json()
    names = [t["name"] for t in rows] if isinstance(rows, list) else list(rows)
    assert TARGET in names and "executorch-xnnpack" in names


def test_side_by_side_export_records_null_with_the_reason(tmp_path):
    # Export with --data and --profile-runs: the XNNPACK cell is measured, the Vulkan cell
    # is kept with null accuracy / profile and the reason, and the command succeeds.
    work = write_work(tmp_path / "in")
    out = tmp_path / "out"
    r = invoke(["export", work.model, "-t", "executorch-xnnpack", "-t", TARGET, "--recipe",
                "fp32", "--data", work.eval, "--profile-runs", "5", "-o", out])
    assert r.exit_code == 0, (r.output, r.exception)
    cells = {c["target"]: c for c in json.loads((out / "report.json").read_text())["results"]}
    assert cells["executorch-xnnpack"]["accuracy"]["value"] is not None
    assert cells["executorch-xnnpack"]["profile"]["latency_ms"]["p50"] > 0
    vk = cells[TARGET]
    assert vk["accuracy"] is None and vk["accuracy_reason"] == MESSAGE
    assert vk["profile"] is None and vk["profile_reason"] == MESSAGE
