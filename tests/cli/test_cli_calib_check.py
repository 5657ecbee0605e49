"""edgeq calib-check through the CLI on the tiny CNN and real handwritten digits: a
representative calibration set passes; a tiny one-class set and a scaled-down one are
flagged, with more of the evaluation activations clipped; bad input exits 2."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import TINY_MODEL, assert_bad_input, invoke

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cc(tmp_path_factory):
    """model.py, eval.npz (digits:eval) and calibration sets: good (256 digits:train,
    stratified by export's own selection), one-class (10 samples of digit 3) and dim
    (the good set scaled by 0.5)."""
    from edgeq.data import load_dataset

    root = tmp_path_factory.mktemp("calib-check")
    (root / "model.py").write_text(TINY_MODEL)
    train, ev = load_dataset("digits:train"), load_dataset("digits:eval")
    x, y = train.inputs["x"], train.labels
    np.savez(root / "eval.npz", x=ev.inputs["x"], y=ev.labels)
    np.savez(root / "good.npz", x=x, y=y)
    three = np.flatnonzero(y == 3)[:10]
    np.savez(root / "oneclass.npz", x=x[three], y=y[three])
    np.savez(root / "dim.npz", x=x * 0.5, y=y)
    return root


def check(cc, calib: str, *extra):
    return invoke(["calib-check", f"{cc / 'model.py'}:build", "--calib", cc / calib,
                   "--data", cc / "eval.npz", "--json", *extra])


@pytest.fixture(scope="module")
def good(cc):
    r = check(cc, "good.npz")
    assert r.exit_code == 0, r.output
    return r.json()


def test_representative_calibration_passes(good):
    assert good["calib"]["samples"] == 256  # the int8 recipe's calib_samples, as export
    assert good["eval"]["samples"] == 445
    assert good["warnings"] == [] and good["representative"] is True
    assert good["labels"]["missing_in_calib"] == [] and good["labels"]["classes"] == 10
    names = [x["layer"] for x in good["layers"]]
    assert sorted(names) == ["conv1", "conv2", "fc", "input:x"]
    shares = [x["clipped_share"] for x in good["layers"]]
    assert shares == sorted(shares, reverse=True)
    assert good["summary"]["max_clipped_share"] < 0.01
    inp = next(x for x in good["layers"] if x["layer"] == "input:x")
    assert inp["calib_range"] == [0.0, 1.0] and inp["clipped_share"] == 0.0
    # The default observer (histogram) may clip on purpose; its share is reported apart.
    assert good["observer"]["name"] == "histogram"
    assert all(0 <= x["observer_clipped_share"] < 0.05 for x in good["layers"])


def test_one_class_of_ten_samples_is_flagged(cc, good):
    r = check(cc, "oneclass.npz")
    assert r.exit_code == 0, r.output  # warnings are not failures
    res = r.json()
    w = " | ".join(res["warnings"])
    assert "only 10 samples" in w and "at least 100" in w
    assert "no sample of 9 of the 10 classes" in w
    assert "10 samples for 10 classes" in w
    assert res["labels"]["missing_in_calib"] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert res["summary"]["mean_clipped_share"] > good["summary"]["mean_clipped_share"]
    assert res["summary"]["max_clipped_share"] > 0.01
    assert "edgeq: warning: calibration has only 10 samples" in r.stderr


def test_scaled_down_inputs_clip_and_strict_fails(cc, good):
    r = check(cc, "dim.npz")
    assert r.exit_code == 0, r.output
    res = r.json()
    inp = next(x for x in res["layers"] if x["layer"] == "input:x")
    assert inp["calib_range"] == [0.0, 0.5] and inp["eval_range"] == [0.0, 1.0]
    assert inp["clipped_share"] > 0.1  # every ink pixel brighter than 0.5
    assert res["summary"]["layers_over_threshold"] >= 1
    assert any("would clip more than 1%" in w for w in res["warnings"])
    assert res["summary"]["max_clipped_share"] > 10 * good["summary"]["max_clipped_share"]
    r = check(cc, "dim.npz", "--strict")
    assert r.exit_code == 1 and "calib-check --strict" in r.stderr


def test_percentile_observer_clips_by_design(cc, good):
    r = check(cc, "good.npz", "--observer", "percentile:99", "--calib-samples", "128")
    assert r.exit_code == 0, r.output
    res = r.json()
    assert res["calib"]["samples"] == 128
    assert res["observer"]["name"] == "percentile" and "99.0 two-sided" in \
        res["observer"]["details"]
    assert max(x["observer_clipped_share"] for x in res["layers"]) > \
        max(x["observer_clipped_share"] for x in good["layers"])


@pytest.mark.parametrize("args,needles", [
    (["--observer", "entrpy"], ["--observer", "observer 'entrpy' does not exist",
                                "minmax, moving-average, histogram", "did you mean 'entropy'"]),
    (["--observer", "percentile:x"], ["percentile:P"]),
    (["--calib-samples", "0"], ["--calib-samples must be at least 1"]),
])
def test_bad_input(cc, args, needles):
    assert_bad_input(check(cc, "good.npz", *args), *needles)


def test_data_not_fitting_the_model(cc, tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.zeros((4, 3, 8, 8), np.float32))
    r = invoke(["calib-check", f"{cc / 'model.py'}:build", "--calib", tmp_path / "wrong.npz",
                "--data", cc / "eval.npz"])
    assert_bad_input(r, "wrong.npz", "shape (3, 8, 8)")
