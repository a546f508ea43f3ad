"""The copy edits of the duplicate benchmarks, shared by bench_neardup.py and bench_dups_heldout.py.

``edit(image, kind, rng)`` returns the edited image and the JPEG quality to save it with. Every edit
draws its random choices from ``rng`` only, so a set built with one seed is the same everywhere.

bench_neardup's eleven edits keep their names and their exact behaviour (``NEARDUP_EDITS``); the
family used by the held-out benchmark (``FAMILY``) adds the hard ones: quarter turns, a small
rotation, a 5% border, heavy colour filters, the photo pasted into a screenshot-like frame, the photo
as one tile of a 2x2 collage, and a combination of mild edits.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

NEARDUP_EDITS = (
    "downscale",
    "jpeg",
    "crop90",
    "crop70",
    "crop50",
    "rotate",
    "flip",
    "jitter",
    "grayscale",
    "text",
    "border",
)
#: Edits a copy detector is expected to survive easily.
MILD = ("downscale", "jpeg", "crop90", "crop70", "crop50", "jitter", "text")
#: The hard ones the issue (#15) names, plus mirror, heavy filters and collages.
HARD = (
    "mirror",
    "grey",
    "rot10",
    "border5",
    "rot90",
    "rot180",
    "rot270",
    "heavy_filter",
    "embed",
    "collage",
    "combo",
)
#: The held-out benchmark's edit family: 18 copies of every original.
FAMILY = MILD + HARD

_FILL = ((0, 0, 0), (255, 255, 255), (128, 128, 128))


def load_rgb(path: Path, max_side: int = 1024) -> Image.Image:
    """Open an image as RGB, at most ``max_side`` px; transparent parts (cut-out stamps) become white."""
    with Image.open(path) as im:
        im.draft("RGB", (max_side * 2, max_side * 2))
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            out = Image.new("RGB", rgba.size, (255, 255, 255))
            out.paste(rgba, mask=rgba.getchannel("A"))
        else:
            out = im.convert("RGB")
    out.thumbnail((max_side, max_side))
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _text(image: Image.Image, rng: random.Random | None = None) -> Image.Image:
    """bench_neardup's caption: "© SAMPLE 2024" across the middle (``rng`` is not drawn from)."""
    w, h = image.size
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = max(12, h // 8)
    draw.text(
        (w // 20, h // 2 - size // 2),
        "© SAMPLE 2024",
        fill=(255, 255, 255),
        font=_font(size),
        stroke_width=2,
        stroke_fill=(0, 0, 0),
    )
    return out


def _jitter(image: Image.Image, rng: random.Random) -> Image.Image:
    out = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Color(out).enhance(rng.uniform(0.5, 1.5))


def _crop(image: Image.Image, keep: float, rng: random.Random) -> Image.Image:
    w, h = image.size
    cw, ch = int(w * keep), int(h * keep)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return image.crop((x, y, x + cw, y + ch))


def heavy_filter(image: Image.Image, rng: random.Random) -> Image.Image:
    """One strong colour filter: sepia, posterise (2 bits) with boosted saturation, a colour cast, or solarise."""
    which = rng.choice(("sepia", "posterise", "cast", "solarise"))
    if which == "sepia":
        grey = ImageOps.grayscale(image)
        return ImageOps.colorize(grey, black=(40, 20, 5), white=(255, 235, 190), mid=(160, 110, 60))
    if which == "posterise":
        return ImageEnhance.Color(ImageOps.posterize(image, 2)).enhance(1.8)
    if which == "cast":
        r, g, b = image.split()
        gains = [rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6), rng.uniform(1.2, 1.5)]
        rng.shuffle(gains)
        bands = [band.point(lambda v, k=k: min(255, int(v * k))) for band, k in zip((r, g, b), gains, strict=True)]
        return Image.merge("RGB", bands)
    return ImageOps.solarize(image, threshold=rng.randint(100, 160))


def embed(image: Image.Image, rng: random.Random) -> Image.Image:
    """The photo at 40-70% of the frame's width inside a screenshot-like window drawn with PIL.

    Window chrome (title bar, three buttons, a title), a menu bar, a sidebar of text lines, a status
    bar, text lines around the photo; the light or dark theme and the layout are drawn from ``rng``.
    """
    fw, fh = rng.choice(((1280, 800), (1366, 768), (1440, 900), (1200, 900)))
    dark = rng.random() < 0.3
    bg, fg, bar = (
        ((40, 42, 46), (200, 200, 200), (60, 63, 68)) if dark else ((246, 246, 246), (60, 60, 60), (225, 225, 228))
    )
    frame = Image.new("RGB", (fw, fh), bg)
    draw = ImageDraw.Draw(frame)
    small = _font(14)
    draw.rectangle((0, 0, fw, 34), fill=bar)  # title bar
    for i, colour in enumerate(((237, 106, 94), (245, 191, 79), (98, 197, 84))):
        draw.ellipse((12 + 22 * i, 11, 26 + 22 * i, 25), fill=colour)
    draw.text(
        (fw // 2 - 80, 10), rng.choice(("IMG_2041.jpg - Viewer", "Holiday photos", "Draft post")), fill=fg, font=small
    )
    draw.rectangle((0, 34, fw, 62), fill=bg)  # menu bar
    for i, word in enumerate(("File", "Edit", "View", "Image", "Help")):
        draw.text((14 + 60 * i, 40), word, fill=fg, font=small)
    draw.line((0, 62, fw, 62), fill=bar, width=2)
    side = rng.randint(160, 240)
    draw.rectangle((0, 63, side, fh - 26), fill=bar)  # sidebar with "file names"
    for y in range(80, fh - 40, 26):
        draw.rectangle((14, y + 4, 26, y + 16), fill=(120, 140, 200))
        draw.text((34, y), f"folder_{rng.randint(1, 999):03d}", fill=fg, font=small)
    draw.rectangle((0, fh - 26, fw, fh), fill=bar)  # status bar
    draw.text((12, fh - 21), f"{rng.randint(2, 400)} items  |  {rng.randint(1, 99)} MB", fill=fg, font=small)
    area = (side + 20, 80, fw - 20, fh - 46)
    scale = rng.uniform(0.4, 0.7)
    # 40-70% of the frame's width (up- or down-scaled), or less where the content area is too short
    f = min(fw * scale / image.width, (area[3] - area[1]) * 0.95 / image.height)
    photo = image.resize((max(16, round(image.width * f)), max(16, round(image.height * f))), Image.LANCZOS)
    px = rng.randint(area[0], max(area[0], area[2] - photo.width))
    py = rng.randint(area[1], max(area[1], area[3] - photo.height))
    frame.paste(photo, (px, py))
    for y in range(area[1], area[3], 22):  # text lines where the photo is not
        x0 = px + photo.width + 20 if y < py + photo.height and y + 14 > py else area[0]
        if x0 >= area[2] - 40:
            continue
        length = rng.randint(int((area[2] - x0) * 0.4), area[2] - x0)
        draw.rectangle((x0, y + 4, x0 + length, y + 12), fill=(170, 170, 170) if not dark else (110, 110, 110))
    return frame


def collage(image: Image.Image, rng: random.Random, tiles: Sequence[Image.Image]) -> Image.Image:
    """The photo as one tile (random position) of a 2x2 collage; the other three come from ``tiles``."""
    if len(tiles) < 3:
        raise ValueError("a collage needs three other tiles")
    cell = rng.choice((320, 384, 448))
    gap = rng.choice((0, 6, 12))
    out = Image.new("RGB", (2 * cell + 3 * gap, 2 * cell + 3 * gap), rng.choice(_FILL))
    others = list(rng.sample(list(tiles), 3))
    slot = rng.randrange(4)
    members = [*others[:slot], image, *others[slot:]]
    for i, tile in enumerate(members):
        fitted = ImageOps.fit(tile, (cell, cell), Image.Resampling.LANCZOS)
        out.paste(fitted, (gap + (i % 2) * (cell + gap), gap + (i // 2) * (cell + gap)))
    return out


def edit(
    image: Image.Image, kind: str, rng: random.Random, *, tiles: Sequence[Image.Image] = ()
) -> tuple[Image.Image, int]:
    """One edit; returns the image and the JPEG quality to save it with. ``tiles``: for ``collage``."""
    w, h = image.size
    if kind == "downscale":
        f = rng.uniform(0.2, 0.5)
        return image.resize((max(16, int(w * f)), max(16, int(h * f))), Image.LANCZOS), 90
    if kind == "jpeg":
        return image, rng.randint(20, 50)
    if kind.startswith("crop"):
        return _crop(image, int(kind[4:]) / 100, rng), 90
    if kind == "rotate":
        angle = rng.choice([-1, 1]) * rng.uniform(5, 15)
        return image.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=(0, 0, 0)), 90
    if kind in ("flip", "mirror"):
        return ImageOps.mirror(image), 90
    if kind == "jitter":
        return _jitter(image, rng), 90
    if kind in ("grayscale", "grey"):
        return ImageOps.grayscale(image).convert("RGB"), 90
    if kind == "text":
        return _text(image), 90
    if kind == "border":
        pad = int(max(w, h) * rng.uniform(0.05, 0.15))
        colour = rng.choice([(0, 0, 0), (255, 255, 255), (128, 128, 128)])
        return ImageOps.expand(image, border=pad, fill=colour), 90
    if kind == "border5":
        return ImageOps.expand(image, border=max(1, round(max(w, h) * 0.05)), fill=rng.choice(_FILL)), 90
    if kind == "rot10":
        angle = rng.choice([-1, 1]) * rng.uniform(8, 12)
        return image.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=rng.choice(_FILL)), 90
    if kind in ("rot90", "rot180", "rot270"):
        turn = {"rot90": Image.Transpose.ROTATE_90, "rot180": Image.Transpose.ROTATE_180}
        return image.transpose(turn.get(kind, Image.Transpose.ROTATE_270)), 90
    if kind == "heavy_filter":
        return heavy_filter(image, rng), 90
    if kind == "embed":
        return embed(image, rng), 85
    if kind == "collage":
        return collage(image, rng, tiles), 88
    if kind == "combo":
        out = _crop(image, rng.uniform(0.8, 0.9), rng)
        out = _text(_jitter(out, rng))
        return out, rng.randint(30, 50)
    raise ValueError(kind)
