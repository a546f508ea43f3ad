"""The one family of picture edits: what a copy of a picture goes through in the wild.

Two uses, one set of operations:

* :func:`copy_edit` draws a *random* composite copy (calibration measures how copies score in a
  collection; :data:`EDIT_KINDS` with their weights and ranges).
* :data:`NEARDUP_EDITS` holds one *fixed*, mild instance of each standard copy-detection edit
  (Copydays, DISC 2021), for ``lookalike eval``'s near-duplicate test.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """Re-encode as JPEG at ``quality`` and decode again (what sharing a picture does to it)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


# -- random copies (calibration) ---------------------------------------------------------------
#: The standard copy-detection edits (Copydays, DISC 2021, bench/bench_neardup.py), drawn as the main
#: edit of each calibration copy; weights favour the kinds copies most often go through.
EDIT_KINDS: dict[str, float] = {  # in the order a composite applies them (text is never mirrored)
    "crop": 2.0,
    "rotate": 1.0,
    "flip": 1.0,
    "jitter": 1.0,
    "grayscale": 0.6,
    "blur": 0.6,
    "text": 1.0,
    "border": 1.0,
    "downscale": 1.0,
    "jpeg": 1.0,
}
#: Chance of a second, different standard edit on the same copy (a composite, as shared copies are).
SECOND_EDIT = 0.2
_CAPTIONS = ("© SAMPLE 2024", "shared via lookalike", "www.example.com", "DO NOT COPY", "#photo of the day")


def apply_edit(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """One standard edit with a realistic parameter range (the benchmark's ranges, a little wider)."""
    w, h = img.size
    if kind == "downscale":  # the final resize below is mild; this one is strong
        f = float(rng.uniform(0.2, 0.6))
        return img.resize((max(16, int(w * f)), max(16, int(h * f))), Image.Resampling.BILINEAR)
    if kind == "jpeg":  # strong compression: re-encoded once here, once more at the end
        return jpeg(img, int(rng.integers(20, 51)))
    if kind == "crop":  # keeps 50-95% of each side (25-90% of the area), anywhere in the picture
        keep = float(rng.uniform(0.5, 0.95))
        cw, ch = max(8, int(w * keep)), max(8, int(h * keep * rng.uniform(0.9, 1.1)))
        ch = min(ch, h)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x0, y0, x0 + cw, y0 + ch))
    if kind == "rotate":
        angle = float(rng.choice([-1, 1]) * rng.uniform(3, 15))
        fill = (0, 0, 0) if rng.random() < 0.6 else (255, 255, 255)
        expand = bool(rng.random() < 0.7)
        return img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=expand, fillcolor=fill)
    if kind == "flip":
        return ImageOps.mirror(img)
    if kind == "jitter":
        img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.65, 1.35)))
        img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.65, 1.35)))
        return ImageEnhance.Color(img).enhance(float(rng.uniform(0.4, 1.6)))
    if kind == "grayscale":
        return ImageOps.grayscale(img).convert("RGB")
    if kind == "text":
        return _caption(img, rng)
    if kind == "border":
        pad = max(1, int(max(w, h) * rng.uniform(0.04, 0.15)))
        palette = [(0, 0, 0), (255, 255, 255), (128, 128, 128), tuple(int(c) for c in rng.integers(0, 256, 3))]
        return ImageOps.expand(img, border=pad, fill=palette[int(rng.integers(0, len(palette)))])
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.8, 2.5))))
    raise ValueError(f"unknown edit {kind!r}")


def _caption(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Overlaid text: a stroked caption across the picture, or a caption band at the top or bottom."""
    out = img.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    size = max(10, int(h * rng.uniform(0.06, 0.14)))
    font = ImageFont.load_default(size=size)
    text = _CAPTIONS[int(rng.integers(0, len(_CAPTIONS)))]
    if rng.random() < 0.5:
        x, y = int(w * rng.uniform(0.02, 0.3)), int(h * rng.uniform(0.1, 0.8))
        draw.text((x, y), text, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    else:
        band = int(size * 1.5)
        top = 0 if rng.random() < 0.3 else h - band
        shade = (20, 20, 20) if rng.random() < 0.5 else (245, 245, 245)
        draw.rectangle([0, top, w, top + band], fill=shade)
        ink = (255, 255, 255) if shade[0] < 128 else (0, 0, 0)
        draw.text((max(2, w // 20), top + band // 6), text, fill=ink, font=font)
    return out


def copy_edit(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One random "copy" of ``image``: a standard copy-detection edit (sometimes two), then resave.

    The main edit is drawn from :data:`EDIT_KINDS` (downscale, strong JPEG, crop, rotation, mirror,
    colour jitter, greyscale, text overlay, border, blur), so the copy-score sample covers every kind
    of copy the probability is asked about; with chance :data:`SECOND_EDIT` a second, different one
    is composed with it. Every copy is then re-saved as JPEG (quality 70-95), half of them resized
    (60-100%) first, as a shared copy is. One composite edit per image keeps the cost at one embedding per sample.
    """
    img = image.convert("RGB")
    kinds = list(EDIT_KINDS)
    weights = np.array([EDIT_KINDS[k] for k in kinds])
    n_edits = 2 if rng.random() < SECOND_EDIT else 1
    chosen = rng.choice(len(kinds), size=n_edits, replace=False, p=weights / weights.sum())
    for i in sorted(chosen):
        img = apply_edit(img, kinds[int(i)], rng)
    if rng.random() < 0.5:
        scale = float(rng.uniform(0.6, 1.0))
        size = (max(16, int(img.width * scale)), max(16, int(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
    return jpeg(img, int(rng.integers(70, 96)))


# -- fixed instances (evaluation) -----------------------------------------------------------------
def center_crop(image: Image.Image, keep: float) -> Image.Image:
    """The middle ``keep`` of each side."""
    w, h = image.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def overlay_text(image: Image.Image) -> Image.Image:
    """A dark caption band along the bottom, as a re-shared picture often gets."""
    out = image.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    band = max(8, h // 8)
    draw.rectangle([0, h - band, w, h], fill=(20, 20, 20))
    draw.text((max(2, w // 20), h - band + band // 4), "© lookalike copy test", fill=(255, 255, 255))
    return out


#: The standard edits of copy-detection benchmarks (Copydays, DISC 2021), one mild instance each.
NEARDUP_EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg-q20": lambda im: jpeg(im, 20),
    "downscale-0.3": lambda im: im.resize(
        (max(8, round(im.width * 0.3)), max(8, round(im.height * 0.3))), Image.Resampling.BILINEAR
    ),
    "crop-0.7": lambda im: center_crop(im, 0.7),
    "flip": ImageOps.mirror,
    "rotate-7": lambda im: im.rotate(7, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)),
    "brightness-1.4": lambda im: ImageEnhance.Brightness(im).enhance(1.4),
    "greyscale": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "blur-2": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
    "text-overlay": overlay_text,
}
