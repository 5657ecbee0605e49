"""Datasets: sources, validation, model fit and deterministic stratified selection."""
from __future__ import annotations

import numpy as np
import pytest

from edgeq.data import Dataset, check_against_model, load_dataset, select
from edgeq.errors import BadInput


def test_npz_with_labels(work):
    ds = load_dataset(work.calib, ["x"])
    assert len(ds) == 64 and ds.inputs["x"].shape == (64, 1, 8, 8)
    assert ds.labels.dtype == np.int64 and ds.source == work.calib
    assert [a.shape for a in ds.sample(3)] == [(1, 1, 8, 8)]


def test_npz_arrays_by_input_name_and_float64(tmp_path):
    p = tmp_path / "two.npz"
    np.savez(p, a=np.zeros((5, 3)), b=np.ones((5, 2), np.float32))
    ds = load_dataset(str(p), ["a", "b"])
    assert list(ds.inputs) == ["a", "b"] and ds.labels is None
    assert ds.inputs["a"].dtype == np.float32
    with pytest.raises(BadInput, match="expected 'x' or one array per model input"):
        load_dataset(str(p), ["x"])


def test_npy_and_builtin(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 8, 8), np.float32))
    assert len(load_dataset(str(tmp_path / "x.npy"))) == 4
    train, ev = load_dataset("digits:train"), load_dataset("digits:eval")
    assert len(train) + len(ev) == 1797 and len(ev) == 445
    assert set(np.unique(ev.labels)) == set(range(10))
    assert 0 <= ev.inputs["x"].min() and ev.inputs["x"].max() <= 1


def test_image_folder_labels(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (10, 12), (i * 100, 0, 0)).save(tmp_path / cls / f"{i}.png")
    ds = load_dataset(str(tmp_path))
    assert ds.inputs["x"].shape == (4, 3, 12, 10)
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.inputs["x"][1, 0, 0, 0] == pytest.approx(100 / 255)


def test_callable_source(tmp_path, monkeypatch):
    (tmp_path / "edgeq_test_src.py").write_text(
        "import numpy as np\n"
        "def batches():\n"
        "    for i in range(3):\n"
        "        yield np.full((2, 1, 8, 8), i, np.float32), np.array([i, i])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ds = load_dataset("edgeq_test_src:batches", ["x"])
    assert len(ds) == 6 and ds.labels.tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("body", ["    raise FileNotFoundError('images/')\n    yield\n",
                                  "    yield 3.0\n"], ids=["raises", "scalar"])
def test_callable_source_failures_are_bad_input(tmp_path, monkeypatch, body):
    (tmp_path / "edgeq_test_bad_src.py").write_text("def batches():\n" + body)
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys

    sys.modules.pop("edgeq_test_bad_src", None)
    with pytest.raises(BadInput, match="edgeq_test_bad_src:batches"):
        load_dataset("edgeq_test_bad_src:batches", ["x"])


def test_empty_nan_and_ragged(tmp_path):
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    with pytest.raises(BadInput, match="empty"):
        load_dataset(str(tmp_path / "e.npz"))
    x = np.zeros((4, 1, 8, 8), np.float32)
    x[0, 0, 0, :3] = np.nan
    x[1, 0, 0, 0] = np.inf
    np.savez(tmp_path / "n.npz", x=x)
    with pytest.raises(BadInput, match="has 4 NaN/Inf values"):
        load_dataset(str(tmp_path / "n.npz"))
    np.savez(tmp_path / "r.npz", x=np.zeros((4, 1), np.float32), y=np.zeros(3))
    with pytest.raises(BadInput, match="3 labels for 4 samples"):
        load_dataset(str(tmp_path / "r.npz"))
    np.savez(tmp_path / "s.npz", x=np.array(["a", "b"]))
    with pytest.raises(BadInput, match="not numeric"):
        load_dataset(str(tmp_path / "s.npz"))


@pytest.mark.parametrize("source,msg", [("missing.npz", "not found"),
                                        ("missing.npy", "not found"),
                                        ("digits:test", "digits:train and digits:eval"),
                                        ("somewhere", "not found")])
def test_bad_sources(tmp_path, monkeypatch, source, msg):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match=msg):
        load_dataset(source)


def test_check_against_model():
    ds = Dataset({"x": np.zeros((3, 1, 8, 8), np.float32)}, np.array([0, 9, 10]), "d")
    with pytest.raises(BadInput, match=r"1 labels are outside the model's 10 outputs \(0..9\)"):
        check_against_model(ds, ["x"], [(1, 1, 8, 8)], 10)
    check_against_model(ds, ["x"], [(1, 1, 8, 8)], 11)
    with pytest.raises(BadInput, match=r"have shape \(1, 8, 8\).*\(1, 3, 8, 8\)"):
        check_against_model(ds, ["x"], [(1, 3, 8, 8)])
    with pytest.raises(BadInput, match="takes 2"):
        check_against_model(ds, ["x", "y"], [(1, 1, 8, 8)] * 2)


def test_select_is_deterministic_and_stratified():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    ds = Dataset({"x": np.arange(100, dtype=np.float32)[:, None]}, labels, "d")
    a, b = select(ds, 20), select(ds, 20)
    assert len(a) == 20 and np.array_equal(a.inputs["x"], b.inputs["x"])
    assert np.bincount(a.labels).tolist() == [8, 6, 4, 2]
    assert not np.array_equal(select(ds, 20, seed=1).inputs["x"], a.inputs["x"])
    assert select(ds, 500) is ds
    unl = Dataset({"x": np.arange(10, dtype=np.float32)[:, None]}, None, "d")
    assert len(select(unl, 3)) == 3
    with pytest.raises(BadInput, match="--calib-samples"):
        select(ds, 0)
