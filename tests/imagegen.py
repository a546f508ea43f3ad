"""Deterministic photo-like test images and the standard copy-detection edits (no downloads needed)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps


def scene(seed: int, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A textured scene: gradient sky/ground, many coloured shapes, noise, slight blur."""
    rng = np.random.default_rng(seed)
    w, h = size
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    base = (top * (1 - t) + bottom * t) * np.ones((1, w, 1))
    img = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(25, 45))):
        x0, y0 = int(rng.integers(-50, w)), int(rng.integers(-50, h))
        x1, y1 = x0 + int(rng.integers(15, 200)), y0 + int(rng.integers(15, 200))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
            draw.polygon(pts, fill=colour)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def recompress(image: Image.Image, quality: int = 30) -> Image.Image:
    return Image.open(io.BytesIO(jpeg_bytes(image, quality))).convert("RGB")


def downscale(image: Image.Image, factor: float = 0.5) -> Image.Image:
    return image.resize((max(1, int(image.width * factor)), max(1, int(image.height * factor))), Image.LANCZOS)


def center_crop(image: Image.Image, keep: float = 0.9) -> Image.Image:
    w, h = image.size
    cw, ch = int(w * keep), int(h * keep)
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def mirror(image: Image.Image) -> Image.Image:
    return ImageOps.mirror(image)


def photo_collection(
    photos: list[Path], root: Path, copies: Callable[[int, Image.Image], dict[str, Image.Image]], count: int = 40
) -> None:
    """Write ``count`` real photos (at most 512 px) as ``p00.jpg``... into ``root``, and beside photo ``i``
    each copy ``copies(i, image)`` names, as ``p<i>_<name>.jpg``: a collection with planted copies."""
    root.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(photos[:count]):
        image = Image.open(src).convert("RGB")
        image.thumbnail((512, 512))
        image.save(root / f"p{i:02d}.jpg", quality=92)
        for name, copy in copies(i, image).items():
            copy.save(root / f"p{i:02d}_{name}.jpg", quality=88)
