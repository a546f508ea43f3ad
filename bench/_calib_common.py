"""Shared setup of the calibration / no-match / whitening benchmarks.

One collection of real photos (every third photo held out), edited copies of indexed photos as
in-distribution queries, and metrics (AUROC, FPR at 95% TPR, reliability / ECE).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # lookalike_data

from lookalike import Index
from lookalike.imaging.edits import copy_edit, jpeg
from lookalike.imaging.load import open_rgb
from lookalike.models.registry import DEFAULT_MODEL
from lookalike_data import photos

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_neardup import EDITS as BENCHMARK_EDITS
from bench_neardup import edit as benchmark_edit


def split_photos(limit: int | None) -> tuple[list[Path], list[Path]]:
    """(indexed, held out): every third photo is held out, so both halves span every source."""
    found = photos(limit)
    indexed = [p for i, p in enumerate(found) if i % 3 != 2]
    held = [p for i, p in enumerate(found) if i % 3 == 2]
    return indexed, held


def build_index(db: Path, paths: list[Path], model: str = DEFAULT_MODEL) -> Index:
    """Index the photos; the calibration is computed by ``add`` itself (the collection is new)."""
    index = Index.open(db, model=model)
    index.add(paths)
    return index


def shifted_edit(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotation, mirror, caption band, border, blur, heavy crop: the edits the first (v1) calibration
    never saw; v2 draws these kinds too, with other parameters (this row checks nothing regressed)."""
    img = image.convert("RGB")
    kind = int(rng.integers(0, 6))
    if kind == 0:
        img = img.rotate(float(rng.uniform(-10, 10)), resample=Image.Resampling.BILINEAR, expand=False)
    elif kind == 1:
        img = ImageOps.mirror(img)
    elif kind == 2:
        band = int(img.height * rng.uniform(0.1, 0.2))
        draw = ImageDraw.Draw(img)
        draw.rectangle([0, img.height - band, img.width, img.height], fill=(255, 255, 255))
        draw.text((10, img.height - band + 5), "shared via lookalike " * 3, fill=(0, 0, 0))
    elif kind == 3:
        pad = int(min(img.size) * rng.uniform(0.05, 0.15))
        img = ImageOps.expand(img, border=pad, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    elif kind == 4:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.5, 3.0))))
    else:
        keep = float(rng.uniform(0.45, 0.6))
        cw, ch = int(img.width * keep), int(img.height * keep)
        x0, y0 = int(rng.integers(0, img.width - cw + 1)), int(rng.integers(0, img.height - ch + 1))
        img = img.crop((x0, y0, x0 + cw, y0 + ch))
    return jpeg(img, int(rng.integers(50, 90)))


def standard_edit(image: Image.Image, kind: str, rng: random.Random) -> Image.Image:
    """One edit of the near-duplicate benchmark (bench_neardup.py), saved as JPEG as it saves it."""
    out, quality = benchmark_edit(image.convert("RGB"), kind, rng)
    return jpeg(out, quality)


def edited(
    paths: list[Path], seed: int, per_image: int = 1, family: str = "same"
) -> list[tuple[Path, Image.Image]] | list[tuple[Path, Image.Image, str]]:
    """Edited copies (source path, image); ``family``: the calibration's own edits (``same``),
    ``shifted`` (edits outside the original calibration family) or ``benchmark`` (the near-duplicate
    benchmark's standard edits, kinds in turn; tuples then carry the kind as a third element)."""
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    out: list = []
    for i, path in enumerate(paths):
        image = open_rgb(path, draft_size=512)
        image.thumbnail((1024, 1024))
        for j in range(per_image):
            if family == "benchmark":
                kind = BENCHMARK_EDITS[(i * per_image + j) % len(BENCHMARK_EDITS)]
                out.append((path, standard_edit(image, kind, prng), kind))
                continue
            edit = copy_edit(image, rng) if family == "same" else shifted_edit(image, rng)
            out.append((path, edit))
    return out


def noise_images(n: int, seed: int = 0) -> list[Image.Image]:
    """Uniform RGB noise, smooth (upsampled) colour noise and grey noise, in turn."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 3 == 0:
            arr = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
            out.append(Image.fromarray(arr))
        elif i % 3 == 1:
            arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            out.append(Image.fromarray(arr).resize((256, 256), Image.Resampling.BICUBIC))
        else:
            arr = rng.integers(0, 256, (256, 256), dtype=np.uint8)
            out.append(Image.fromarray(arr).convert("RGB"))
    return out


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (the Mann-Whitney statistic)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def fpr_at_tpr(pos: np.ndarray, neg: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of negatives accepted at the threshold that accepts ``tpr`` of the positives."""
    threshold = np.quantile(np.asarray(pos, float), 1 - tpr, method="lower")
    return float(np.mean(np.asarray(neg, float) >= threshold))
