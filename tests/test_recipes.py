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
    ("activation_observer: kl", "observer 'kl' does not exist; use one of minmax, "
                                "moving-average, histogram, percentile, entropy, mse"),
    ("activation_observer: entrpy", "did you mean 'entropy'?"),
    ("activation_observer: 'percentile:abc'", "percentile:P with P a number"),
    ("activation_observer: 'minmax:3'", "only percentile takes a value"),
    ("activation_observer: 'percentile:99.9'\npercentile: 99.0", "contradicts"),
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


@pytest.mark.parametrize("name", ["minmax", "moving-average", "histogram", "percentile",
                                  "entropy", "mse"])
def test_every_observer_name_loads(tmp_path, name):
    p = tmp_path / "r.yaml"
    p.write_text(f"activation_observer: {name}\n")
    assert load_recipe(str(p)).activation_observer == name


def test_percentile_shorthand(tmp_path):
    from edgeq.recipes import observer_fields

    p = tmp_path / "r.yaml"
    p.write_text("activation_observer: percentile:99.9\nhistogram_bins: 512\n")
    r = load_recipe(str(p))
    assert (r.activation_observer, r.percentile, r.histogram_bins) == ("percentile", 99.9, 512)
    save_recipe(r, tmp_path / "again.yaml")  # saved as the two fields, and loads back
    assert load_recipe(str(tmp_path / "again.yaml")) == r
    assert observer_fields("entropy", "--observer") == {"activation_observer": "entropy"}
    with pytest.raises(BadInput, match="--observer: observer 'percentil' does not exist.*"
                                       "did you mean 'percentile'"):
        observer_fields("percentil", "--observer")
    with pytest.raises(BadInput, match=r"P must be in \(50, 100\]"):
        observer_fields("percentile:40", "--observer")

