"""Recipes: presets, YAML files (on a base preset), validation, round trip."""
from __future__ import annotations

import pytest

from edgeq.errors import BadInput
from edgeq.recipes import PRESETS, Recipe, load_recipe, save_recipe


def test_presets():
    assert not load_recipe("fp32").quantized
    r = load_recipe("int8")
    assert r.quantized and r.weight_granularity == "per-channel"
    assert r.activation_observer == "histogram" and r.calib_samples == 256
    assert load_recipe("int8-per-tensor").weight_granularity == "per-tensor"


def test_yaml_on_base_and_round_trip(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("base: int8-per-tensor\nactivation_observer: minmax\nkeep_float: conv1\n")
    r = load_recipe(str(p))
    assert (r.name, r.weight_granularity, r.activation_observer, r.keep_float) == \
        ("mine", "per-tensor", "minmax", ("conv1",))
    save_recipe(r, tmp_path / "again.yaml")
    assert load_recipe(str(tmp_path / "again.yaml")) == r


def test_empty_yaml_is_int8(tmp_path):
    p = tmp_path / "plain.yaml"
    p.write_text("")
    assert load_recipe(str(p)) == PRESETS["int8"].with_(name="plain")


@pytest.mark.parametrize("body,msg", [
    ("activation_observr: minmax", "unknown key 'activation_observr' (did you mean "
                                   "'activation_observer'?)"),
    ("base: int4", "base 'int4' is not a preset"),
    ("activation_observer: mse", "activation_observer 'mse' is not one of minmax, histogram"),
    ("weight_bits: 4", "static quantization is int8"),
    ("calib_samples: 0", "calib_samples must be a positive integer"),
    ("a: [unclosed", "is not valid YAML"),
])
def test_bad_yaml(tmp_path, body, msg):
    p = tmp_path / "r.yaml"
    p.write_text(body)
    with pytest.raises(BadInput) as e:
        load_recipe(str(p))
    assert msg in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("body", ["- a list", "just a string"])
def test_yaml_not_a_mapping(tmp_path, body):
    p = tmp_path / "r.yaml"
    p.write_text(body)
    with pytest.raises(BadInput, match="expected a mapping"):
        load_recipe(str(p))


def test_unknown_preset_suggests():
    with pytest.raises(BadInput, match="did you mean 'int8'"):
        load_recipe("int9")
    with pytest.raises(BadInput, match="not found"):
        load_recipe("nope.yaml")


def test_to_dict():
    d = Recipe(keep_float=("a",)).to_dict()
    assert d["keep_float"] == ["a"] and d["method"] == "static"
