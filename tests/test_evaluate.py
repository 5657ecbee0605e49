"""Metrics on hand-made arrays: top-1, agreement, cosine, SQNR, the accuracy block."""
from __future__ import annotations

import numpy as np
import pytest

from edgeq.evaluate import accuracy_block, fidelity, top1

REF = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0], [0.0, 0.0, 5.0], [2.0, 1.0, 0.0]])


def test_top1():
    assert top1(REF, np.array([1, 0, 2, 1])) == 75.0
    assert top1(REF.reshape(4, 3, 1), np.array([1, 0, 2, 0])) == 100.0


def test_fidelity_identical():
    f = fidelity(REF, REF)
    assert f["agreement"] == 100.0 and f["cosine"] == pytest.approx(1.0) and f["sqnr"] == 999.0


def test_sqnr_known_value():
    # noise energy = signal energy / 100 -> 20 dB
    noisy = REF * 1.1  # error = 0.1 * REF: energy ratio 100
    f = fidelity(noisy, REF)
    assert f["sqnr"] == pytest.approx(20.0)
    assert f["cosine"] == pytest.approx(1.0)  # scaling keeps direction
    assert f["agreement"] == 100.0


def test_cosine_and_agreement():
    out = REF.copy()
    out[0] = [2.0, -1.0, 0.0]  # orthogonal to [1, 2, 0]; argmax flips 1 -> 0
    f = fidelity(out, REF)
    assert f["agreement"] == 75.0
    assert f["cosine"] == pytest.approx(0.75)
    assert fidelity(np.ones((3, 1)), np.ones((3, 1)))["agreement"] is None


def test_block_top1_with_reference():
    labels = np.array([1, 0, 2, 0])
    out = REF.copy()
    out[0] = [2.0, -1.0, 0.0]
    b = accuracy_block(out, labels, REF)
    assert (b["metric"], b["value"], b["reference_value"], b["drop"], b["samples"]) == \
        ("top1", 75.0, 100.0, 25.0, 4)
    assert b["fidelity"]["agreement"] == 75.0


def test_block_defaults_and_reasons():
    b = accuracy_block(REF, None, REF)
    assert (b["metric"], b["value"], b["reference_value"], b["drop"]) == \
        ("agreement", 100.0, 100.0, 0.0)
    b = accuracy_block(REF, None, None)
    assert b["metric"] == "cosine" and b["value"] is None and "--reference" in b["value_reason"]
    b = accuracy_block(REF, None, REF, "top1")
    assert b["value"] is None and "no labels" in b["value_reason"]
    b = accuracy_block(REF * 1.1, None, REF, "sqnr")
    assert b["value"] == pytest.approx(20.0) and b["drop"] is None
