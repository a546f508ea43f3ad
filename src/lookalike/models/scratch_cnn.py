"""The ``scratch`` recipe's network: the original system's CNN, and its inference preprocessing.

It lives with the models, not with training, because loading a trained package rebuilds it (to
export its ONNX graph once) and preprocesses query images for it; :mod:`lookalike.training.scratch`
trains it and imports it from here.

Architecture (as in the original car-type classifier): 100x100 RGB input; seven 3x3 convolutions
without padding (32, 32, 64, 64, 128, 128, 128 channels), each followed by BatchNorm and ReLU, 2x2 max
pooling after the 2nd, 4th and 7th (100 -> 96 -> 48 -> 44 -> 22 -> 16 -> 8, so 128 x 8 x 8 = 8192
values); then fully connected 8192 -> 514 -> 128 -> classes, BatchNorm + ReLU after the first two.
Trained as a classifier; afterwards the 128-d and class layers are dropped and the 514-d fc1
activation is the embedding. torch is imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookalike.models.preprocessing import ImagePreprocessor

if TYPE_CHECKING:
    import torch
    from torch import nn

INPUT_SIZE = 100
EMBED_DIM = 514
_CONV = (32, 32, 64, 64, 128, 128, 128)
_POOL_AFTER = (1, 3, 6)  # zero-based: after the 2nd, 4th and 7th convolution


def preprocessor() -> ImagePreprocessor:
    """Whole image squashed to 100x100, ImageNet mean/std: the same at training and inference."""
    return ImagePreprocessor(size=INPUT_SIZE)


def build_scratch(n_classes: int) -> nn.Module:
    import torch
    from torch import nn

    class ScratchCNN(nn.Module):
        """``forward`` -> class logits; ``embed`` -> the 514-d fc1 activation."""

        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            channels = 3
            for i, out in enumerate(_CONV):
                layers += [nn.Conv2d(channels, out, 3, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                if i in _POOL_AFTER:
                    layers.append(nn.MaxPool2d(2))
                channels = out
            self.features = nn.Sequential(*layers)
            self.fc1 = nn.Sequential(
                nn.Linear(128 * 8 * 8, EMBED_DIM), nn.BatchNorm1d(EMBED_DIM), nn.ReLU(inplace=True)
            )
            self.fc2 = nn.Sequential(nn.Linear(EMBED_DIM, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True))
            self.classifier = nn.Linear(128, n_classes)

        def embed(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc1(torch.flatten(self.features(x), 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.fc2(self.embed(x)))

    return ScratchCNN()


def embedding_module(model: nn.Module) -> nn.Module:
    """The inference network: input -> 514-d fc1 activation (classifier layers dropped)."""
    import torch
    from torch import nn

    class ScratchEmbedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = model.features
            self.fc1 = model.fc1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc1(torch.flatten(self.features(x), 1))

    return ScratchEmbedding().eval()


def load_scratch(state_dict: dict[str, object], n_classes: int) -> nn.Module:
    model = build_scratch(n_classes)
    model.load_state_dict(state_dict)  # type: ignore[arg-type]
    return model.eval()
