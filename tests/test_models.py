"""ModelSpec forms: file.py:factory, package.module:factory, .pt2, pickle, built-ins."""
from __future__ import annotations

import pytest
import torch

from edgeq.errors import BadInput
from edgeq.models import load_model, model_hash, output_size, parse_shape
from helpers import TINY_MODEL


def test_file_factory(work):
    m = load_model(work.model)
    assert m.input_shapes == [(1, 1, 8, 8)]
    assert m.input_names == ["x"]
    assert not m.module.training
    assert m.params == sum(p.numel() for p in m.module.parameters()) == 40 + 296 + 1290
    assert output_size(m) == 10
    assert m.summary() == {"spec": work.model, "sha256": m.sha256, "params": m.params}


def test_hash_is_stable_and_tracks_weights(work):
    a, b = load_model(work.model), load_model(work.model)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    with torch.no_grad():
        b.module.fc.bias[0] += 1
    assert model_hash(b.module) != a.sha256


def test_package_module_factory(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg_edgeq_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(TINY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    m = load_model("mypkg_edgeq_test.nets:build")
    assert m.input_shapes == [(1, 1, 8, 8)] and output_size(m) == 10


def test_module_only_needs_input_shape(work):
    spec = f"{work.root / 'model.py'}:module_only"
    with pytest.raises(BadInput, match="--input-shape"):
        load_model(spec)
    assert load_model(spec, "1,1,8,8").input_shapes == [(1, 1, 8, 8)]


def test_pt2(work, tmp_path):
    m = load_model(work.model)
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(m.module, m.example_inputs), str(path))
    loaded = load_model(str(path))
    assert loaded.input_shapes == [(1, 1, 8, 8)]
    x = torch.randn(2, 1, 8, 8)[:1]
    torch.testing.assert_close(loaded.module(x), m.module(x))


def test_pickle_needs_trust(work, tmp_path):
    m = load_model(work.model)
    path = tmp_path / "tiny.pt"
    torch.save(m.module, path)
    with pytest.raises(BadInput, match="--trust-pickle"):
        load_model(str(path), "1,1,8,8")
    assert load_model(str(path), "1,1,8,8", trust_pickle=True).sha256 == m.sha256
    torch.save(m.module.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(BadInput, match="state dict"):
        load_model(str(tmp_path / "sd.pt"), "1,1,8,8", trust_pickle=True)


def test_builtin_digits_cnn():
    m = load_model("digits-cnn")
    assert m.input_shapes == [(1, 1, 8, 8)] and output_size(m) == 10


@pytest.mark.parametrize("text,shape", [("1,3,224,224", (1, 3, 224, 224)), ("1x8", (1, 8))])
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["", "a,b", "1,0,8", "-1,2"])
def test_parse_shape_bad(text):
    with pytest.raises(BadInput, match="--input-shape"):
        parse_shape(text)


@pytest.mark.parametrize("spec,msg", [
    ("nope.py:build", "not found"),
    ("model.py:nothere", "has no factory 'nothere' (callables there: Tiny, build, module_only)"),
    ("no_such_pkg_xyz:build", "cannot import module"),
    ("resnet9000", "not found"),
    ("weights.h5", "unsupported kind"),
])
def test_bad_specs(work, monkeypatch, spec, msg):
    monkeypatch.chdir(work.root)
    with pytest.raises(BadInput) as e:
        load_model(spec)
    assert msg in str(e.value)
