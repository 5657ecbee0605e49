"""Network definitions for the built-in models. Factories return ``(module, example_inputs)``."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgeq.zoo import weights_path


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU x2 + linear head for 1x8x8 digit images scaled to [0, 1]."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 2 * 2, 64), nn.ReLU(),
                                        nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def load_npz_state(module: nn.Module, path) -> nn.Module:
    """Load a state dict stored as an ``.npz`` of arrays (no pickle involved)."""
    with np.load(path, allow_pickle=False) as z:
        state = {k: torch.from_numpy(z[k].copy()) for k in z.files}
    module.load_state_dict(state)
    return module


def save_npz_state(module: nn.Module, path) -> None:
    arrays = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    np.savez_compressed(path, **arrays)


def digits_cnn(pretrained: bool = True):
    model = DigitsCNN()
    if pretrained:
        load_npz_state(model, weights_path("digits-cnn"))
    return model.eval(), (torch.zeros(1, 1, 8, 8),)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                 act: bool = True):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=False))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [] if expand == 1 else [ConvBNReLU(cin, hidden, 1)]
        # The projection is a bare Conv2d + BatchNorm2d (conv.N, conv.N+1), as torchvision
        # names them, so its state dicts load unchanged.
        layers += [ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018), layer names as in torchvision so its
    state dicts load unchanged."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0):
        super().__init__()
        cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        cin = _make_divisible(32 * width)
        self.last_channel = _make_divisible(1280 * max(1.0, width))
        feats: list[nn.Module] = [ConvBNReLU(3, cin, stride=2)]
        for t, c, n, s in cfg:
            cout = _make_divisible(c * width)
            for i in range(n):
                feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        feats.append(ConvBNReLU(cin, self.last_channel, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def mobilenet_v2(num_classes: int = 1000, resolution: int = 224):
    """Random weights. Untrained BatchNorm statistics make activations vanish (every input
    gives the classifier bias), so they are re-estimated on a few random images: the
    network then has unit-scale features and input-dependent outputs, as a trained one."""
    torch.manual_seed(0)
    model = MobileNetV2(num_classes)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the estimation batch
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, resolution, resolution,
                          generator=torch.Generator().manual_seed(0)))
    return model.eval(), (torch.zeros(1, 3, resolution, resolution),)
