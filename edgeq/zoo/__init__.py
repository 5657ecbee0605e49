"""Built-in models: small definitions written here (edgeq never depends on torchvision),
with weights stored as ``.npz`` (plain arrays, no pickle) next to this file.

A built-in is used as a MODEL spec by its name: ``edgeq export digits-cnn ...``.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent

# name -> (factory path, one-line description). Factories live in edgeq.zoo.nets.
BUILTINS = {
    "digits-cnn": ("edgeq.zoo.nets:digits_cnn",
                   "small CNN for 8x8 handwritten digits (scikit-learn digits), pretrained"),
    "mobilenetv2": ("edgeq.zoo.nets:mobilenet_v2",
                    "MobileNetV2 (width 1.0, 224x224, 1000 classes), random init"),
}


def weights_path(name: str) -> Path:
    return HERE / f"{name}.npz"
