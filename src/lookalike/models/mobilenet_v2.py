"""MobileNetV2 (ImageNet) in plain torch, laid out exactly like torchvision's so its state dict loads.

torchvision itself is not a dependency (it pins torch tightly and drags in CUDA wheels); the network is
small enough to restate. Module names match ``torchvision.models.mobilenet_v2`` one to one
(``features.0`` .. ``features.18``, ``InvertedResidual.conv``, ``classifier.1``), so
``load_state_dict(strict=True)`` proves the architecture is right.

The embedding is the global average of the last 1280-channel feature map (the classifier's input),
L2-normalised. The 1000 ImageNet logits come out of the same forward pass for keyword tagging.
"""

from __future__ import annotations

import torch
from torch import nn

# (expand ratio t, output channels c, repeats n, first stride s) -- torchvision's table
_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
FEATURE_DIM = 1280
NUM_CLASSES = 1000


class ConvBNReLU(nn.Sequential):
    """torchvision's Conv2dNormActivation: keys ``.0`` conv, ``.1`` batch norm, ``.2`` ReLU6."""

    def __init__(self, inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """ImageNet MobileNetV2 (width 1.0). ``forward`` returns ``(pooled_features, logits)``."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        inp = 32
        layers: list[nn.Module] = [ConvBNReLU(3, inp, stride=2)]
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(ConvBNReLU(inp, FEATURE_DIM, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURE_DIM, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.features(x).mean(dim=(2, 3))
        return pooled, self.classifier(pooled)


def load_mobilenet_v2(weights_path: str) -> MobileNetV2:
    """Build the network and load torchvision's ImageNet weights strictly, in eval mode."""
    model = MobileNetV2()
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
