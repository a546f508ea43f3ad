"""Deterministic photo-like test images and the standard copy-detection edits (no downloads needed)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps


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


def screenshot(photo: Image.Image, seed: int) -> Image.Image:
    """The photo at about half the width of a drawn application window (title bar, menu, sidebar of
    file names, text lines): what every screenshot of one application shares is its chrome."""
    rng = np.random.default_rng(seed)
    frame = Image.new("RGB", (1280, 800), (246, 246, 246))
    draw = ImageDraw.Draw(frame)
    font = ImageFont.load_default()
    draw.rectangle((0, 0, 1280, 34), fill=(225, 225, 228))
    for i, colour in enumerate(((237, 106, 94), (245, 191, 79), (98, 197, 84))):
        draw.ellipse((12 + 22 * i, 11, 26 + 22 * i, 25), fill=colour)
    for i, word in enumerate(("File", "Edit", "View", "Image", "Help")):
        draw.text((14 + 60 * i, 42), word, fill=(60, 60, 60), font=font)
    draw.rectangle((0, 63, 200, 774), fill=(225, 225, 228))
    for y in range(80, 760, 26):
        draw.text((34, y), f"folder_{int(rng.integers(1, 999)):03d}", fill=(60, 60, 60), font=font)
    scaled = photo.resize((600, round(photo.height * 600 / photo.width)))
    frame.paste(scaled, (240 + int(rng.integers(0, 300)), 90 + int(rng.integers(0, max(1, 640 - scaled.height)))))
    for y in range(90, 740, 22):
        draw.rectangle((900, y + 4, 900 + int(rng.integers(100, 340)), y + 12), fill=(170, 170, 170))
    return frame


def busy_screenshot(photo: Image.Image, seed: int) -> Image.Image:
    """The photo at a third of a window's width, with text all around it (a sidebar, notes on the
    right, a row of tags): the textured chrome takes most of the window."""
    rng = np.random.default_rng(seed)
    frame = Image.new("RGB", (1280, 800), (246, 246, 246))
    draw = ImageDraw.Draw(frame)
    font = ImageFont.load_default()
    draw.rectangle((0, 0, 1280, 34), fill=(225, 225, 228))
    for i, word in enumerate(("File", "Edit", "View", "Image", "Help")):
        draw.text((14 + 60 * i, 42), word, fill=(60, 60, 60), font=font)
    for y in range(70, 780, 18):
        draw.text((10, y), f"IMG_{int(rng.integers(1000, 9999))}.jpg", fill=(60, 60, 60), font=font)
        draw.text(
            (1080, y), f"note {int(rng.integers(1, 99))} - {int(rng.integers(100, 999))}", fill=(60, 60, 60), font=font
        )
    width = int(1280 * rng.uniform(0.33, 0.38))
    scaled = photo.resize((width, round(photo.height * width / photo.width)))
    if scaled.height > 640:
        scaled = scaled.resize((round(scaled.width * 640 / scaled.height), 640))
    frame.paste(scaled, (130 + int(rng.integers(0, max(1, 940 - 130 - scaled.width))), 80))
    for x in range(140, 1060, 70):
        draw.text((x, 740), f"tag{int(rng.integers(10, 99))}", fill=(60, 60, 60), font=font)
    return frame
