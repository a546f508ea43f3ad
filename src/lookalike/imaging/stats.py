"""Pixel statistics of a decoded picture, taken while it is in memory for the model anyway.

Quality checks (blurry, dark, bright, near-solid, greyscale ...) need these numbers for every item;
reading them here, from the decode indexing already does, means no image is decoded twice. They are
measured on a copy whose longest side is at most :data:`STATS_SIDE`, so the tone and colour
statistics do not depend on the file's resolution. Sharpness does, within about a factor of two
between a picture and the same picture at half or double the size: JPEG draft decoding hands over
224-450 px pictures, so indexed JPEGs are measured alike, but a sharpness cut-off is a rule of
thumb. :mod:`lookalike.audit.quality` turns the statistics into findings.

Cost: ~1.5 ms per picture on one core (most of it the resize to 256 px), against ~13 ms to decode
and preprocess a photo for the model. Everything works on 8-bit histograms rather than sorting
floats, which is what keeps the percentiles free.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: The longest side of the copy the statistics are measured on.
STATS_SIDE = 256
#: The side of the coarse copy ``structure`` is measured on.
COARSE_SIDE = 32
#: A channel at or above this 8-bit level counts as clipped (burnt-out highlight).
CLIPPED_AT = 250
#: Bumped when a statistic's definition changes, so stored values are never compared across versions.
#: 2: grey percentiles, coarse structure, dominant colour, colour spread p95, clipped share; faster arithmetic.
STATS_VERSION = 2


def _percentile(hist: np.ndarray, q: float) -> float:
    """The ``q`` quantile (0..1) of values 0..255 given their histogram, on a 0..1 scale."""
    cumulative = np.cumsum(hist)
    return float(np.searchsorted(cumulative, q * cumulative[-1], side="left")) / 255.0


def _laplacian_var(grey: np.ndarray) -> float:
    if min(grey.shape) < 3:
        return 0.0
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return float(lap.var())


def pixel_stats(image: Image.Image) -> dict[str, float]:
    """The picture's statistics (greys and spreads on a 0..1 scale):

    * ``brightness``, ``contrast``: mean and standard deviation of grey;
    * ``grey_p01``, ``grey_p50``, ``grey_p99``: its 1st, 50th and 99th percentiles (a dark picture
      has a dim 99th percentile, a washed-out one a high median and a lifted 1st);
    * ``sharpness``: variance of the Laplacian of grey (fine detail; falls when out of focus);
    * ``structure``: the same on a 32 px copy (coarse detail: ~0 for solid colours and gradients,
      which blur leaves intact);
    * ``entropy``: bits of the grey histogram, 0..8;
    * ``dominant``: share of pixels in the most common colour (16 levels per channel);
    * ``colourfulness``, ``colour_p95``: mean and 95th percentile of the spread between the RGB
      channels (~0 for greyscale pictures);
    * ``clipped``: share of pixels with a channel at or above :data:`CLIPPED_AT` (burnt out).
    """
    small = image.convert("RGB")
    if max(small.size) > STATS_SIDE:
        scale = STATS_SIDE / max(small.size)
        size = (max(1, round(small.width * scale)), max(1, round(small.height * scale)))
        small = small.resize(size, Image.Resampling.BOX)
    rgb8 = np.asarray(small, dtype=np.uint8)
    r, g, b = (rgb8[..., i] for i in range(3))
    grey8 = np.asarray(small.convert("L"), dtype=np.uint8)  # ITU-R 601-2, the weights of _GREY
    grey = grey8.astype(np.float32) / 255.0
    hist = np.bincount(grey8.ravel(), minlength=256)
    p = hist[hist > 0] / hist.sum()
    value8 = np.maximum(np.maximum(r, g), b)
    spread8 = value8 - np.minimum(np.minimum(r, g), b)
    value_hist = np.bincount(value8.ravel(), minlength=256)
    clipped = value_hist[CLIPPED_AT:].sum() / value8.size  # burnt-out highlights
    spread_hist = np.bincount(spread8.ravel(), minlength=256)
    codes = ((r >> 4).astype(np.int32) << 8) | ((g >> 4).astype(np.int32) << 4) | (b >> 4).astype(np.int32)
    coarse_size = (min(COARSE_SIDE, small.width), min(COARSE_SIDE, small.height))
    coarse = np.asarray(small.convert("L").resize(coarse_size, Image.Resampling.BOX), dtype=np.float32) / 255.0
    return {
        "brightness": round(float(grey.mean()), 5),
        "contrast": round(float(grey.std()), 5),
        "grey_p01": round(_percentile(hist, 0.01), 5),
        "grey_p50": round(_percentile(hist, 0.50), 5),
        "grey_p99": round(_percentile(hist, 0.99), 5),
        "sharpness": round(_laplacian_var(grey), 7),
        "structure": round(_laplacian_var(coarse), 7),
        "entropy": round(float(-(p * np.log2(p)).sum()), 4),
        "dominant": round(float(np.bincount(codes.ravel(), minlength=4096).max() / codes.size), 5),
        "colourfulness": round(float(spread8.mean()) / 255.0, 5),
        "colour_p95": round(_percentile(spread_hist, 0.95), 5),
        "clipped": round(float(clipped), 5),
        "version": STATS_VERSION,
    }
