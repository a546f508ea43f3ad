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


#: Output block of the stride-16 stage (``features.13``: 96 channels, 14x14 at 224 px).
MID_BLOCK = 13
MID_DIM = 96
#: Weight of the mid-level part against the (unit-norm) top-level part, before the final L2 norm.
MID_WEIGHT = 0.4
#: Power applied to the pooled top-level features (post-ReLU6, so non-negative) before their L2 norm.
TOP_POWER = 0.75
MULTI_DIM = FEATURE_DIM + MID_DIM


class MultiLevelMobileNetV2(nn.Module):
    """The same network, embedding = ``l2([l2(avgpool(top) ** 0.75), 0.4 * l2(avgpool(block 13))])``.

    Why (measured, see docs/models.md): the power ("power normalisation", Perronnin et al. 2010)
    damps the few bursty channels that dominate post-ReLU average-pooled features, and the mid-level
    block adds shape cues the top layer has abstracted away: Fashion-MNIST leave-one-out Recall@1
    0.845 -> 0.853. Stronger settings retrieve classes better but cost copy detection: power 0.5
    raises unrelated images' scores (rotated/bordered copies then read as "very similar", not
    "duplicate"), and the mid-level part is less invariant to crops and rotations (weight 0.5:
    near-duplicate F1 -1.6 points). One forward pass either way; the logits are unchanged.

    The mid-level part would weaken the "no similar images" rule (it raises every unrelated image's
    score: clipart wrongly accepted 85% vs 48%), so the registered model names a no-match view that
    undoes the power on the leading 1280 values: exactly the plain vector, read only by that rule.
    """

    def __init__(self, net: MobileNetV2, power: float = TOP_POWER, mid_weight: float = MID_WEIGHT) -> None:
        super().__init__()
        self.net = net
        self.power = power
        self.mid_weight = mid_weight

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid = self.net.features[: MID_BLOCK + 1](x)
        top = self.net.features[MID_BLOCK + 1 :](mid)
        pooled = top.mean(dim=(2, 3))
        root = _l2(pooled if self.power == 1.0 else pooled.pow(self.power))  # post-ReLU6: non-negative
        mid_part = _l2(mid.mean(dim=(2, 3))) * self.mid_weight
        return torch.cat([root, mid_part], dim=1), self.net.classifier(pooled)


def _l2(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
