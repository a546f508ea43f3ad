"""Image -> model input array, shared by all CNN embedders.

Runs in decode worker threads, so it is pure numpy/PIL (both release the GIL in their heavy parts)
and allocates only the resized image and the output array.

The default is to *squash* the whole picture to the model's square input (no crop). Measured with
``bench/preprocess_choice.py`` (MobileNetV2, 18 images, 6 kinds of edited copies as queries) it is a
tie with "shorter side 256 + centre crop 224": recall@1 107/108 vs 105/108, mean margin 0.182 vs 0.187.
Squash wins the tie because it keeps the borders, which matters for near-duplicate detection (two
photos differing only at the edges must not look identical). The test set was mostly screenshots and
diagrams (no photo collection is available offline), so revisit with real photos.

``describe()`` gives the exact recipe; it goes into ``ModelSpec.preprocessing`` so that vectors made
with different recipes are never mixed in one index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class ImagePreprocessor:
    """Resize an RGB image and normalise it to a float32 CHW array: ``(pixel/255 - mean) / std``.

    ``mode="squash"`` resizes the whole image to ``size x size`` ignoring aspect ratio;
    ``mode="center-crop"`` resizes the shorter side to ``resize_to`` and crops the centre ``size``.
    ``mean``/``std`` are in 0..1 pixel units; ``norm_label`` names them in ``describe()``.
    """

    size: int = 224
    mode: str = "squash"
    resize_to: int = 256
    resample: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    norm_label: str = "imagenet-mean-std"
    # Per-channel affine folded into one multiply-add: x_uint8 * scale - offset.
    _scale: np.ndarray = field(init=False, repr=False, compare=False)
    _offset: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in ("squash", "center-crop"):
            raise ValueError(f"unknown resize mode {self.mode!r}; use 'squash' or 'center-crop'")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"unknown resample {self.resample!r}; use one of {sorted(_RESAMPLE)}")
        std = np.asarray(self.std, dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        object.__setattr__(self, "_scale", (1.0 / (255.0 * std)).reshape(3, 1, 1))
        object.__setattr__(self, "_offset", (mean / std).reshape(3, 1, 1))

    def describe(self) -> str:
        if self.mode == "squash":
            geometry = f"resize={self.size}x{self.size}"
        else:
            geometry = f"resize-shorter={self.resize_to};center-crop={self.size}x{self.size}"
        return f"rgb;{geometry};{self.resample};{self.norm_label}"

    def resize(self, image: Image.Image) -> Image.Image:
        """The geometric half: RGB, then squash or shorter-side-resize + centre crop."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        resample = _RESAMPLE[self.resample]
        # reducing_gap: big images are first box-reduced by an integer factor (fast, and a proper
        # antialias), then resampled; the result differs from an exact resize by < 1 grey level.
        if self.mode == "squash":
            if image.size != (self.size, self.size):
                image = image.resize((self.size, self.size), resample, reducing_gap=3.0)
            return image
        w, h = image.size
        scale = self.resize_to / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        if (nw, nh) != (w, h):
            image = image.resize((nw, nh), resample, reducing_gap=3.0)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))

    def __call__(self, image: Image.Image) -> np.ndarray:
        pixels = np.asarray(self.resize(image), dtype=np.uint8).transpose(2, 0, 1)  # HWC -> CHW view
        # One fused pass uint8 -> float32 * scale into a C-contiguous CHW array, then one in-place shift.
        # (``astype`` would keep the transposed, non-contiguous layout.)
        out = np.empty(pixels.shape, dtype=np.float32)
        np.multiply(pixels, self._scale, out=out)
        out -= self._offset
        return out
