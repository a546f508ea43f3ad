"""The ``head`` recipe's network: a small projection head on a frozen backbone's vector.

It lives with the models, not with training, because loading a trained package rebuilds it (to
export its ONNX graph once); :mod:`lookalike.training.head` trains it and imports it from here.

Architecture: ``Linear(in, hidden) -> BatchNorm -> ReLU -> Linear(hidden, dim)`` then L2
normalisation; with ``alpha > 0`` the embedding also keeps the frozen vector (see :func:`build_head`).
torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def build_head(in_dim: int, hidden: int, dim: int, alpha: float = 0.0) -> nn.Module:
    """The projection head; with ``alpha > 0`` its embedding keeps the frozen vector too.

    Why the blend: a head trained on a few classes collapses the directions that separate classes it
    never saw (Fashion-MNIST, trained on 5 classes: unseen-class Recall@1 0.948 -> 0.873, mAP@R
    halved). The embedding ``normalize([alpha * normalize(x - mean), (1 - alpha) * project(x)])``
    has cosine ``(alpha^2 cos_frozen + (1 - alpha)^2 cos_head) / (alpha^2 + (1 - alpha)^2)``: a fixed
    mix of the backbone's general geometry and the learned one. ``mean`` is a buffer (zeros unless
    centring was asked for), so it travels in the state dict and the ONNX graph.
    """
    import torch
    from torch import nn

    class ProjectionHead(nn.Module):
        """Backbone vector -> unit-norm embedding. Input: ``(n, in_dim)`` float32."""

        def __init__(self) -> None:
            super().__init__()
            self.alpha = float(alpha)
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
            )
            if self.alpha > 0:
                self.register_buffer("mean", torch.zeros(in_dim))

        def project(self, x: torch.Tensor) -> torch.Tensor:
            """The trained part alone (what the loss sees)."""
            return nn.functional.normalize(self.net(x), dim=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.alpha <= 0:
                return self.project(x)
            frozen = nn.functional.normalize(x - self.mean, dim=1)
            both = torch.cat([self.alpha * frozen, (1 - self.alpha) * self.project(x)], dim=1)
            return nn.functional.normalize(both, dim=1)

    return ProjectionHead()


def load_head(state_dict: dict[str, object], in_dim: int, hidden: int, dim: int, alpha: float = 0.0) -> nn.Module:
    """``dim`` is the head's output size (not the blended embedding's)."""
    head = build_head(in_dim, hidden, dim, alpha)
    head.load_state_dict(state_dict)  # type: ignore[arg-type]
    return head.eval()
