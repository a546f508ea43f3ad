"""Pixel statistics of a decoded picture, taken while it is in memory for the model anyway.

Quality checks (blurry, dark, bright, near-solid, greyscale ...) need these numbers for every item;
reading them here, from the decode indexing already does, means no image is decoded twice. They are
measured on a copy whose longest side is at most :data:`STATS_SIDE`, so brightness, contrast, entropy
and colourfulness do not depend on the file's resolution. Sharpness does, within about a factor of
two between a picture and the same picture at half or double the size (measured on real photos):
JPEG draft decoding hands over 224-450 px pictures, so indexed JPEGs are measured alike, but a
sharpness cut-off is a rule of thumb, not a physical constant.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: The longest side of the copy the statistics are measured on.
STATS_SIDE = 256
#: Bumped when a statistic's definition changes, so stored values are never compared across versions.
STATS_VERSION = 1


def pixel_stats(image: Image.Image) -> dict[str, float]:
    """``brightness`` and ``contrast`` (mean and std of grey, 0..1), ``sharpness`` (variance of the
    Laplacian of grey on a 0..1 scale), ``entropy`` (bits of the grey histogram, 0..8) and
    ``colourfulness`` (mean spread between the RGB channels, 0..1; ~0 for greyscale pictures)."""
    small = image.convert("RGB")
    if max(small.size) > STATS_SIDE:
        small = small.copy()
        small.thumbnail((STATS_SIDE, STATS_SIDE), Image.Resampling.BILINEAR)
    planes = np.asarray(small)
    grey = (planes @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) / 255.0
    if min(grey.shape) >= 3:
        lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
        sharpness = float(lap.var())
    else:
        sharpness = 0.0
    hist = np.bincount(np.clip(grey * 255 + 0.5, 0, 255).astype(np.int64).ravel(), minlength=256)
    p = hist[hist > 0] / hist.sum()
    # The spread between channels on uint8 planes: a strided max over the colour axis of a float
    # array cost ~6 ms a picture, 30x everything else here together.
    r, g, b = (planes[..., i].astype(np.int16) for i in range(3))
    spread = (np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)) / 255.0
    return {
        "brightness": round(float(grey.mean()), 5),
        "contrast": round(float(grey.std()), 5),
        "sharpness": round(sharpness, 7),
        "entropy": round(max(0.0, float(-(p * np.log2(p)).sum())), 4),
        "colourfulness": round(float(spread.mean()), 5),
        "version": STATS_VERSION,
    }
