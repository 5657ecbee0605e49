"""Device profiles: every shipped one loads and cites its values; a bad one names the
field and the file; `edgeq devices` and `edgeq device probe` through the CLI."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from edgeq.devices.profiles import (KNOWN_DELEGATES, all_profiles, load_profile,
                                    profile_dir, read_profile)
from edgeq.errors import BadInput
from helpers import assert_bad_input


@pytest.fixture
def cli(run_cli):
    return run_cli


def test_every_shipped_profile_loads():
    profiles = all_profiles()
    real = [p for p in profiles.values() if p.kind != "host"]
    assert len(real) >= 8 and "host" in profiles
    assert {p.kind for p in real} == {"phone", "board"}
    socs = " ".join(p.soc for p in real)
    for vendor in ("Snapdragon", "Tensor", "Exynos", "MediaTek", "BCM2711", "BCM2712", "Orin"):
        assert vendor in socs, vendor
    for p in profiles.values():
        assert p.big_peak("int8") > p.big_peak("fp32") > 0
        assert p.cpu_peak("fp32", 1) == max(c.fp32_gflops_per_core for c in p.clusters)
        assert set(p.delegates) <= set(KNOWN_DELEGATES) and p.bandwidth_gbps > 0
        assert p.thermal.throttle_c > p.thermal.ambient_c
        assert 0 < p.thermal.throttled_clock_ratio <= 1


def test_every_value_cites_a_source_or_says_assumption():
    """Each line holding a number carries a comment (the source, 'derived: ...',
    'measured: ...' or 'assumption: ...')."""
    for path in sorted(profile_dir().glob("*.yaml")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            body = line.split("#", 1)[0]
            if re.search(r":\s*-?[0-9.]+\s*$", body) or re.search(r":\s*null\s*$", body):
                assert "#" in line and line.split("#", 1)[1].strip(), f"{path.name}:{i}: {line}"


def _bad(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load((profile_dir() / "pixel-8.yaml").read_text())
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("edit, field, words", [
    (lambda d: d["memory"].pop("bandwidth_gbps"), "memory.bandwidth_gbps", "missing"),
    (lambda d: d["thermal"].update(r_c_per_w=-4), "thermal.r_c_per_w", "> 0"),
    (lambda d: d["memory"].update(bandwidth_gbps=0), "memory.bandwidth_gbps", "> 0"),
    (lambda d: d["clusters"][0].update(cores="four"), "clusters[0].cores", "number"),
    (lambda d: d["clusters"][1].update(cores=2.5), "clusters[1].cores", "whole"),
    (lambda d: d.update(delegates=["xnnpack", "nnapi2"]), "delegates[1]", "nnapi"),
    (lambda d: d.update(kind="watch"), "kind", "phone, board, host"),
    (lambda d: d["thermal"].update(throttled_clock_ratio=1.5), "thermal.throttled_clock_ratio",
     "<= 1"),
    (lambda d: d["thermal"].update(throttle_c=20), "thermal.throttle_c", "ambient"),
    (lambda d: d["power"]["cpu_active_w"].pop("mid"), "power.cpu_active_w.mid", "missing"),
    (lambda d: d.update(big_cores="4-12"), "big_cores", "cpu list"),
    (lambda d: d["memory"].update(bandwith_gbps=3), "memory.bandwith_gbps", "did you mean"),
    (lambda d: d.update(clusters=[]), "clusters", "non-empty"),
])
def test_bad_profile_names_field_and_file(tmp_path, edit, field, words):
    path = _bad(tmp_path, edit)
    with pytest.raises(BadInput) as e:
        load_profile(path)
    msg = str(e.value)
    assert f"'{path}'" in msg and f"'{field}'" in msg and words in msg, msg
    assert "\n" not in msg


def test_not_yaml_and_not_a_mapping(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(BadInput, match="not valid YAML"):
        load_profile(p)
    p.write_text("- a list\n")
    with pytest.raises(BadInput, match="expected a mapping"):
        load_profile(p)
    with pytest.raises(BadInput, match="not found"):
        load_profile(tmp_path / "missing.yaml")


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(BadInput) as e:
        load_profile("pixel-9")
    msg = str(e.value)
    assert "'pixel-9'" in msg and "valid profiles" in msg
    for name in ("pixel-8", "raspberry-pi-5", "host"):
        assert name in msg
    assert "did you mean 'pixel-8'" in msg


def test_load_by_name_and_by_path():
    by_name = load_profile("raspberry-pi-5")
    by_path = load_profile(str(profile_dir() / "raspberry-pi-5.yaml"))
    assert by_name == by_path and by_name.kind == "board" and by_name.total_cores == 4
    assert by_name.cpu_peak("int8", 2) == pytest.approx(2 * 153.6)


def test_cli_devices_table_and_json(cli):
    r = cli(["devices", "--json"])
    assert r.exit_code == 0, r.output
    rows = {d["name"]: d for d in r.json()}
    assert rows["pixel-8"]["soc"] == "Google Tensor G3" and rows["pixel-8"]["big_int8_gops"] > 0
    r = cli(["devices"])
    assert r.exit_code == 0 and "galaxy-s24-exynos" in r.stderr and "xnnpack" in r.stderr


def test_cli_probe_bad_input(cli, tmp_path):
    assert_bad_input(cli(["device", "probe", "--device", "bluetooth://x",
                          "-o", tmp_path / "p.yaml"]), "bluetooth://x")
    existing = tmp_path / "e.yaml"
    existing.write_text("x")
    assert_bad_input(cli(["device", "probe", "-o", existing]), "already exists", "--force")


def test_cli_probe_quick_writes_a_loadable_profile(cli, tmp_path):
    out = tmp_path / "host.yaml"
    r = cli(["device", "probe", "--device", "local", "--quick", "-o", out, "--json"])
    assert r.exit_code == 0, r.output
    prof = read_profile(out)
    assert prof.peak_basis == "measured" and prof.kind == "host"
    assert r.json()["name"] == "host" and "written to" in r.stderr
    text = out.read_text()
    assert "# measured:" in text and "# assumption:" in text
