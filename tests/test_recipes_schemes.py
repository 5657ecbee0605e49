"""Dynamic and weight-only recipes (issue #6): presets, YAML, one-line validation errors,
and the runtime-neutral helpers of edgeq.quantize.schemes (layers, group-size check)."""
from __future__ import annotations

import pytest

from edgeq.errors import BadInput
from edgeq.recipes import PRESETS, load_recipe, save_recipe


def test_scheme_presets():
    d = load_recipe("int8-dynamic")
    assert (d.method, d.weight_bits, d.weight_granularity, d.activation_bits) == \
        ("dynamic", 8, "per-channel", 8)
    w = load_recipe("int8-w")
    assert (w.method, w.weight_bits, w.weight_granularity, w.activation_bits) == \
        ("weight-only", 8, "per-channel", 32)
    for g in (32, 64, 128):
        r = load_recipe(f"int4-w-g{g}")
        assert (r.method, r.weight_bits, r.weight_granularity, r.group_size) == \
            ("weight-only", 4, "per-group", g)
    for name in ("int8-dynamic", "int8-w", "int4-w-g32"):
        r = PRESETS[name]
        assert r.quantized and not r.needs_calibration
    assert PRESETS["int8"].needs_calibration and not PRESETS["fp32"].needs_calibration


def test_yaml_on_scheme_base_and_round_trip(tmp_path):
    p = tmp_path / "w4.yaml"
    p.write_text("base: int4-w-g32\ngroup_size: 128\nkeep_float: head\n")
    r = load_recipe(str(p))
    assert (r.name, r.weight_bits, r.group_size, r.keep_float) == ("w4", 4, 128, ("head",))
    save_recipe(r, tmp_path / "again.yaml")
    assert load_recipe(str(tmp_path / "again.yaml")) == r
    # weight-only on an int8 base: activations become float whatever the base said
    p.write_text("method: weight-only\n")
    assert load_recipe(str(p)).activation_bits == 32


@pytest.mark.parametrize("body,msg", [
    ("method: dynamc", "method 'dynamc' is not one of none, static, dynamic, weight-only"),
    ("method: dynamic\nweight_bits: 4", "dynamic quantization has int8 weights; for 4-bit "
                                        "weights use method weight-only"),
    ("base: int8-w\nweight_bits: 4", "int4 weights are per-group"),
    ("base: int8-w\nweight_bits: 2", "weight_bits 2 is not available for method weight-only"),
    ("base: int4-w-g32\ngroup_size: 48", "group_size 48 is not one of 32, 64, 128"),
    ("base: int8-w\nweight_granularity: per-tensor", "per-tensor is not offered"),
    ("base: int8-dynamic\nweight_granularity: per-group", "per-group is for method "
                                                          "weight-only"),
    ("weight_granularity: per-group", "per-group weights are for method weight-only"),
    ("base: int8-dynamic\nequalize: true", "static-int8 passes"),
    ("base: int4-w-g64\nio_dtype: int8", "io_dtype int8 needs static int8 activations"),
    ("weight_granularity: per-block", "weight_granularity 'per-block' is not one of"),
])
def test_bad_scheme_yaml(tmp_path, body, msg):
    p = tmp_path / "r.yaml"
    p.write_text(body)
    with pytest.raises(BadInput) as e:
        load_recipe(str(p))
    assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)


def _mlp(in_features=(64, 128, 100)):
    import torch

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(in_features[0], in_features[1])
            self.block = torch.nn.Sequential(torch.nn.Linear(in_features[1], in_features[2]),
                                             torch.nn.ReLU())
            self.head = torch.nn.Linear(in_features[2], 10)

    return M()


def test_linear_layers_and_keep_float():
    pytest.importorskip("torch")
    from edgeq.quantize.schemes import linear_layers

    layers = linear_layers(_mlp())
    assert [(x["name"], x["in_features"], x["out_features"]) for x in layers] == \
        [("fc1", 64, 128), ("block.0", 128, 100), ("head", 100, 10)]
    assert [x["name"] for x in linear_layers(_mlp(), ("head", "block*"))] == ["fc1"]
    with pytest.raises(BadInput, match="no Linear layer to quantize outside --keep-float"):
        linear_layers(_mlp(), ("*",))
    with pytest.raises(BadInput, match="--keep-float 'nope' matches no module"):
        linear_layers(_mlp(), ("nope",))


def test_group_size_must_divide_in_features():
    pytest.importorskip("torch")
    from edgeq.quantize.schemes import check_group_size, linear_layers

    layers = linear_layers(_mlp())
    check_group_size(load_recipe("int8-w"), layers)  # per channel: any width
    with pytest.raises(BadInput) as e:
        check_group_size(load_recipe("int4-w-g32"), layers)
    assert str(e.value) == ("group size 32 does not divide in_features 100 of layer 'head'; "
                            "use int8-w (per channel) or --keep-float head")
    with pytest.raises(BadInput) as e:
        check_group_size(load_recipe("int4-w-g128"), linear_layers(_mlp((96, 64, 64))))
    assert str(e.value).startswith("group size 128 does not divide in_features 96 of layer "
                                   "'fc1'; use group_size 32")
