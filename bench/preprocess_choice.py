"""Squash-to-224 vs shorter-side-256 + centre-crop-224, measured by near-duplicate retrieval.

    PYTHONPATH=src python bench/preprocess_choice.py IMAGE [IMAGE ...]

Each image is the index; edited copies of it (downscaled, cropped off-centre, re-encoded, padded,
aspect-changed) are queries. Reports recall@1 and the mean margin (cosine to the true original minus
the best cosine to any other image) for MobileNetV2 under both recipes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps

from lookalike.imaging.edits import jpeg
from lookalike.models.cnn import OnnxCnnEmbedder
from lookalike.models.preprocessing import ImagePreprocessor
from lookalike.models.registry import create_model


def crop(image: Image.Image, frac: float, dx: float) -> Image.Image:
    w, h = image.size
    cw, ch = int(w * frac), int(h * frac)
    left = int((w - cw) * dx)
    top = (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "half-size": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "jpeg-q30": lambda im: jpeg(im, 30),
    "crop-80%-centre": lambda im: crop(im, 0.8, 0.5),
    "crop-70%-left": lambda im: crop(im, 0.7, 0.0),
    "pad-border": lambda im: ImageOps.expand(im, border=max(im.size) // 10, fill=(255, 255, 255)),
    "stretch-x1.5": lambda im: im.resize((int(im.width * 1.5), im.height)),
}


def main(paths: list[str]) -> None:
    model = create_model("mobilenet_v2")
    assert isinstance(model, OnnxCnnEmbedder)
    originals = [Image.open(p).convert("RGB") for p in paths]
    recipes = {
        "squash-224": ImagePreprocessor(size=224),
        "short256-crop224": ImagePreprocessor(size=224, mode="center-crop", resize_to=256),
    }
    print(f"{len(originals)} images; per edit: recall@1 / mean margin")
    print(f"{'edit':<18}" + "".join(f"{name:>24}" for name in recipes))
    totals = {name: [] for name in recipes}
    for edit_name, edit in EDITS.items():
        row = f"{edit_name:<18}"
        for name, pre in recipes.items():
            index = model.embed_arrays(np.stack([pre(im) for im in originals]))
            queries = model.embed_arrays(np.stack([pre(edit(im)) for im in originals]))
            sims = queries @ index.T
            n = len(originals)
            hits = float(np.mean(sims.argmax(axis=1) == np.arange(n)))
            others = np.where(np.eye(n, dtype=bool), -np.inf, sims).max(axis=1)
            margin = float(np.mean(np.diag(sims) - others))
            totals[name].append(margin)
            row += f"{hits:>14.2f} / {margin:>7.3f}"
        print(row)
    print(f"{'mean margin':<18}" + "".join(f"{np.mean(v):>24.3f}" for v in totals.values()))


if __name__ == "__main__":
    main(sys.argv[1:])
