"""Pixel statistics of a decoded picture, taken while it is in memory for the model anyway.

Quality checks (blurry, dark, bright, near-solid, greyscale ...) need these numbers for every item;
reading them here, from the decode indexing already does, means no image is decoded twice. They are
measured on a fixed-size grey copy (longest side :data:`STATS_SIDE`), so they do not depend on the
file's resolution or on JPEG draft decoding.
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
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if min(grey.shape) >= 3:
        lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
        sharpness = float(lap.var())
    else:
        sharpness = 0.0
    hist = np.bincount(np.clip(grey * 255 + 0.5, 0, 255).astype(np.int64).ravel(), minlength=256)
    p = hist[hist > 0] / hist.sum()
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return {
        "brightness": round(float(grey.mean()), 5),
        "contrast": round(float(grey.std()), 5),
        "sharpness": round(sharpness, 7),
        "entropy": round(float(-(p * np.log2(p)).sum()), 4),
        "colourfulness": round(float(spread.mean()), 5),
        "version": STATS_VERSION,
    }
