"""edgeq sensitivity through the CLI: ranked table on stderr, JSON on stdout, the block in
report.json, and one-line exit 2 on bad input."""
from __future__ import annotations

import json

from helpers import assert_bad_input

KEYS = {"name", "sqnr_db", "metric_drop", "float_recovery_db", "float_recovery_points"}


def test_digits_ranked_and_written(run_cli, tmp_path):
    out = tmp_path / "out"
    r = run_cli(["sensitivity", "digits-cnn", "--calib", "digits:train", "--calib-samples",
                 "64", "--data", "digits:eval", "--samples", "48", "-o", out, "--json"])
    assert r.exit_code == 0, r.output
    block = r.json()
    assert block["metric"] == "top1" and block["target"] == "executorch-xnnpack"
    assert block["samples"] == 48 and block["calib_samples"] == 64
    assert block["data"] == "digits:eval"
    names = [x["name"] for x in block["layers"]]
    assert sorted(names) == ["classifier.1", "classifier.3", "features.0", "features.3",
                             "features.7"]
    for row in block["layers"]:
        assert KEYS <= set(row)
        assert row["sqnr_db"] > block["all_int8"]["sqnr_db"] > 20
    scores = [x["score"] for x in block["layers"]]
    assert scores == sorted(scores, reverse=True)
    # The ranked table is on stderr, in rank order.
    first, last = names[0], names[-1]
    assert "sensitivity on executorch-xnnpack" in r.stderr
    assert r.stderr.index(f" {first} ") < r.stderr.index(f" {last} ")
    report = json.loads((out / "report.json").read_text())
    assert report["sensitivity"] == block
    assert report["model"]["spec"] == "digits-cnn" and report["results"] == []


def test_keep_float_matching_nothing(run_cli, tmp_path):
    r = run_cli(["sensitivity", "digits-cnn", "--calib", "digits:train", "--data",
                 "digits:eval", "--keep-float", "nosuch.*", "-o", tmp_path / "out"])
    assert_bad_input(r, "--keep-float 'nosuch.*' matches no module")
    assert not (tmp_path / "out").exists()


def test_bad_flags(run_cli):
    r = run_cli(["sensitivity", "digits-cnn", "--calib", "digits:train", "--data",
                 "digits:eval", "--samples", "0"])
    assert_bad_input(r, "--samples must be at least 1")
    r = run_cli(["sensitivity", "digits-cnn", "--calib", "digits:train", "--data",
                 "digits:eval", "-r", "fp32"])
    assert_bad_input(r, "quantizes nothing")
    r = run_cli(["sensitivity", "digits-cnn", "--calib", "digits:train", "--data",
                 "digits:eval", "-t", "nosuch"])
    assert_bad_input(r, "--target 'nosuch' does not exist")
    r = run_cli(["sensitivity", "digits-cnn", "--calib", "nosuch.npz", "--data",
                 "digits:eval"])
    assert_bad_input(r, "nosuch.npz")
