"""The audit benchmark's collections: real photos, planted problems made from them, planted odd ones.

Everything is drawn from a seeded generator, so a run is reproducible. The photos come from
``lookalike_data.photos()`` and are split by Debian source package: GCompris (one package, several
kinds of photo: fish, tools, monuments, windmills, animals, music) is the tuning part; the
wallpaper packages and scikit-image's sample photos are the held-out part. Cut-offs are chosen on
the first and reported on the second, whose photos (and planted copies of them) the tuning never saw.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from lookalike.imaging.load import open_rgb

TUNING_PACKAGES = ("gcompris-qt-data",)
HELDOUT_PACKAGES = ("lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "mate-backgrounds", "python3-skimage")

#: Planted problems, each made from one real photo. Keys are the audit's issue names.
PROBLEMS = ("blurry", "dark", "bright", "low_information", "odd_aspect", "tiny", "grayscale")
#: Planted odd ones (pictures unlike the collection's photos).
ODD_KINDS = ("placeholder", "diagram", "card", "screenshot", "close-up")
PLACEHOLDER_TEXTS = (
    "pictures coming soon",
    "Pictures coming soon",
    "PICTURES COMING SOON",
    "image coming soon",
    "photo not available",
    "no image",
)


def package_of(path: Path) -> str:
    """The Debian package a cached data file came from (the folder below ``debian/``)."""
    parts = Path(path).parts
    return parts[parts.index("debian") + 1] if "debian" in parts else "?"


def split_photos(photos: Sequence[Path]) -> dict[str, list[Path]]:
    """``{"tuning": [...], "held-out": [...]}`` by source package."""
    return {
        "tuning": [p for p in photos if package_of(p) in TUNING_PACKAGES],
        "held-out": [p for p in photos if package_of(p) in HELDOUT_PACKAGES],
    }


def load_photo(path: Path, longest: int = 1024) -> Image.Image:
    """A real photo as RGB, reduced to ``longest`` px (planting on 20 MP wallpapers is needlessly slow)."""
    image = open_rgb(path, draft_size=longest)
    image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    return image


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, int(size)))


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))  # type: ignore[return-value]


# -- planted problems (from a real photo) -----------------------------------------------------------
def _blurry(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    radius = max(img.size) * rng.uniform(0.005, 0.02)  # 0.5-2% of the picture: visibly out of focus
    return img.filter(ImageFilter.GaussianBlur(radius))


def _expose(img: Image.Image, target_median: float, stops: tuple[float, float]) -> Image.Image:
    """Re-expose a photo as a camera would: scale linear light so the median grey lands on
    ``target_median`` (but by ``stops[0]`` to ``stops[1]`` stops at least: a photo that is already
    dim still gets darker), clip, back to sRGB (shadows and highlights move as in a real shot)."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    linear = arr**2.2
    grey = linear @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gain = target_median**2.2 / max(float(np.median(grey)), 1e-4)
    gain = float(np.clip(gain, 2.0 ** min(stops), 2.0 ** max(stops)))
    out = np.clip(linear * gain, 0.0, 1.0) ** (1 / 2.2)
    return Image.fromarray(np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8))


def _dark(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _expose(img, rng.uniform(0.03, 0.12), (-8.0, -2.0))  # under-exposed: median grey 3-12%, >= 2 stops


def _bright(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _expose(img, rng.uniform(0.88, 0.99), (1.5, 8.0))  # over-exposed: median 88-99%, >= 1.5 stops


def _low_information(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Near-solid (the photo's mean colour, faint noise) or a gradient between two of its colours."""
    arr = np.asarray(img, dtype=np.float32)
    h, w = arr.shape[:2]
    if rng.random() < 0.5:
        base = arr.reshape(-1, 3).mean(axis=0)[None, None, :] * np.ones((h, w, 1))
    else:
        pixels = arr.reshape(-1, 3)
        a, b = pixels[rng.integers(len(pixels))], pixels[rng.integers(len(pixels))]
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        if rng.random() < 0.7:
            angle = rng.uniform(0, np.pi)
            t = x * np.cos(angle) + y * np.sin(angle)
        else:
            t = np.hypot(x - x.mean(), y - y.mean())
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        base = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    out = base + rng.normal(0, rng.uniform(0.5, 4.0), (h, w, 3))
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _odd_aspect(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A 10:1 strip cut from the photo (a banner, a scan of one line), either way round."""
    w, h = img.size
    ratio = rng.uniform(8.0, 12.0)
    if rng.random() < 0.5:  # wide strip
        sh = max(8, int(w / ratio))
        top = int(rng.integers(0, max(1, h - sh)))
        return img.crop((0, top, w, top + sh))
    sw = max(8, int(h / ratio))
    left = int(rng.integers(0, max(1, w - sw)))
    return img.crop((left, 0, left + sw, h))


def _tiny(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    small = img.copy()
    side = int(rng.integers(24, 41))  # "32 px images"
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    return small


def _grayscale(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    grey = img.convert("L").convert("RGB")
    if rng.random() < 0.3:  # a sepia-ish tint: still a one-hue picture
        return Image.blend(grey, Image.new("RGB", img.size, (112, 66, 20)), 0.08)
    return grey


PLANT: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "blurry": _blurry,
    "dark": _dark,
    "bright": _bright,
    "low_information": _low_information,
    "odd_aspect": _odd_aspect,
    "tiny": _tiny,
    "grayscale": _grayscale,
}


# -- planted odd ones (drawn) -----------------------------------------------------------------------
def _canvas(rng: np.random.Generator, light: bool = True) -> Image.Image:
    w = int(rng.choice([320, 480, 640, 800]))
    h = int(w * rng.choice([0.75, 0.667, 0.5625, 1.0]))
    return Image.new("RGB", (w, h), _colour(rng, 200, 256) if light else _colour(rng, 30, 120))


def placeholder(rng: np.random.Generator, **_: object) -> Image.Image:
    """A "pictures coming soon" placeholder: text (and sometimes a camera outline) on a plain ground."""
    img = _canvas(rng, light=rng.random() < 0.7)
    draw = ImageDraw.Draw(img)
    w, h = img.size
    ground = img.getpixel((0, 0))
    ink = (40, 40, 40) if sum(ground) > 380 else (235, 235, 235)  # type: ignore[arg-type]
    text = str(rng.choice(PLACEHOLDER_TEXTS))
    font = _font(w / max(8, len(text)) * rng.uniform(1.0, 1.5))
    box = draw.textbbox((0, 0), text, font=font)
    tw = box[2] - box[0]
    y = int(h * rng.uniform(0.45, 0.65))
    if rng.random() < 0.6:  # a camera pictogram above the text
        cw, ch = w // 5, h // 6
        cx, cy = w // 2, y - ch
        draw.rounded_rectangle((cx - cw // 2, cy - ch // 2, cx + cw // 2, cy + ch // 2), radius=8, outline=ink, width=4)
        r = ch // 3
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=ink, width=4)
    draw.text(((w - tw) // 2, y), text, fill=ink, font=font)
    return img


def diagram(rng: np.random.Generator, **_: object) -> Image.Image:
    """A chart or a box-and-arrow diagram on white."""
    img = _canvas(rng)
    img.paste((255, 255, 255), (0, 0, *img.size))
    draw = ImageDraw.Draw(img)
    w, h = img.size
    ink = (30, 30, 30)
    if rng.random() < 0.5:  # a line or bar chart with axes
        x0, y0, x1, y1 = int(w * 0.1), int(h * 0.1), int(w * 0.92), int(h * 0.85)
        draw.line((x0, y1, x1, y1), fill=ink, width=2)
        draw.line((x0, y0, x0, y1), fill=ink, width=2)
        n = int(rng.integers(5, 12))
        values = rng.uniform(0.1, 1.0, n)
        xs = np.linspace(x0 + 10, x1 - 10, n)
        colour = _colour(rng, 0, 200)
        if rng.random() < 0.5:
            pts = [(float(x), float(y1 - v * (y1 - y0))) for x, v in zip(xs, values, strict=True)]
            draw.line(pts, fill=colour, width=3)
        else:
            bw = (x1 - x0) / n * 0.6
            for x, v in zip(xs, values, strict=True):
                draw.rectangle((x - bw / 2, y1 - v * (y1 - y0), x + bw / 2, y1), fill=colour)
        font = _font(h / 20)
        for i in range(5):
            draw.text((x0 - 30, y1 - i * (y1 - y0) / 4 - 6), str(i * 25), fill=ink, font=font)
    else:  # boxes joined by arrows
        font = _font(h / 18)
        boxes = []
        for _ in range(int(rng.integers(3, 7))):
            bx, by = int(rng.uniform(0.05, 0.7) * w), int(rng.uniform(0.05, 0.75) * h)
            bw, bh = int(w * rng.uniform(0.15, 0.25)), int(h * rng.uniform(0.1, 0.18))
            fill = _colour(rng, 180, 256)
            draw.rectangle((bx, by, bx + bw, by + bh), outline=ink, fill=fill, width=2)
            draw.text(
                (bx + 6, by + 6),
                str(rng.choice(["input", "model", "store", "query", "index", "result"])),
                fill=ink,
                font=font,
            )
            boxes.append((bx + bw // 2, by + bh // 2))
        for a, b in itertools.pairwise(boxes):
            draw.line((*a, *b), fill=ink, width=2)
    return img


def card(rng: np.random.Generator, **_: object) -> Image.Image:
    """A business / greeting card: a bordered rectangle with a few lines of text and a logo."""
    img = _canvas(rng, light=rng.random() < 0.5)
    draw = ImageDraw.Draw(img)
    w, h = img.size
    face = _colour(rng, 150, 256)
    m = int(min(w, h) * rng.uniform(0.06, 0.15))
    draw.rounded_rectangle((m, m, w - m, h - m), radius=int(m * 0.8), fill=face, outline=_colour(rng, 0, 120), width=4)
    ink = _colour(rng, 0, 90)
    draw.ellipse((m * 2, m * 2, m * 2 + h // 4, m * 2 + h // 4), fill=_colour(rng, 0, 256))
    lines = ["Jane Doe", "Sales Manager", "+44 20 7946 0000", "jane@example.com", "Happy Birthday!", "ACME Motors"]
    font = _font(h / 14)
    for i, line in enumerate(rng.choice(lines, size=int(rng.integers(2, 5)), replace=False)):
        draw.text((int(w * 0.45), int(h * 0.3) + i * int(h / 10)), str(line), fill=ink, font=font)
    return img


def screenshot(rng: np.random.Generator, **_: object) -> Image.Image:
    """A desktop or web-page screenshot: title bar, menu, sidebar, lines of text, buttons."""
    img = _canvas(rng)
    img.paste(_colour(rng, 235, 256), (0, 0, *img.size))
    draw = ImageDraw.Draw(img)
    w, h = img.size
    draw.rectangle((0, 0, w, int(h * 0.07)), fill=_colour(rng, 40, 120))
    for i in range(3):
        draw.ellipse((8 + i * 18, 6, 20 + i * 18, 18), fill=_colour(rng, 150, 256))
    side = int(w * rng.uniform(0.15, 0.28))
    draw.rectangle((0, int(h * 0.07), side, h), fill=_colour(rng, 200, 240))
    font = _font(h / 32)
    for i in range(int(rng.integers(5, 12))):
        draw.text(
            (10, int(h * 0.1) + i * int(h / 16)),
            str(rng.choice(["Home", "Inbox", "Settings", "Files", "Help"])),
            fill=(50, 50, 50),
            font=font,
        )
    y = int(h * 0.12)
    while y < h * 0.9:
        length = int((w - side - 40) * rng.uniform(0.4, 1.0))
        if rng.random() < 0.8:
            draw.text(
                (side + 20, y),
                "Lorem ipsum dolor sit amet, consectetur adipiscing elit"[: max(5, length // 7)],
                fill=(60, 60, 60),
                font=font,
            )
        else:
            draw.rounded_rectangle((side + 20, y, side + 120, y + int(h / 22)), radius=5, fill=_colour(rng, 0, 200))
        y += int(h / rng.uniform(14, 22))
    return img


def close_up(rng: np.random.Generator, source: Image.Image | None = None, **_: object) -> Image.Image:
    """A detail of an object photo (a wheel of the motorcycle, the cat's fur, a badge): a crop near
    the middle, 12-25% of the short side of a large photo (30-45% of a small one), shown at 320-480 px.

    ``source`` should be at full resolution and show an object: a crop of a landscape is just another
    landscape, not an odd one.
    """
    assert source is not None
    w, h = source.size
    fraction = rng.uniform(0.12, 0.25) if min(w, h) >= 800 else rng.uniform(0.3, 0.45)
    side = max(16, int(min(w, h) * fraction))
    cx = int(w * rng.uniform(0.3, 0.7))
    cy = int(h * rng.uniform(0.3, 0.7))
    x = int(np.clip(cx - side // 2, 0, w - side))
    y = int(np.clip(cy - side // 2, 0, h - side))
    crop = source.crop((x, y, x + side, y + side))
    out = int(rng.integers(320, 481))
    return crop.resize((out, out), Image.Resampling.LANCZOS)


ODD: dict[str, Callable[..., Image.Image]] = {
    "placeholder": placeholder,
    "diagram": diagram,
    "card": card,
    "screenshot": screenshot,
    "close-up": close_up,
}


def save(image: Image.Image, stem: Path, rng: np.random.Generator) -> Path:
    """JPEG at a usual quality (PNG for tiny pictures and 30% of the rest), as scraped files are."""
    if image.width * image.height < 64 * 64 or rng.random() < 0.3:
        path = stem.with_suffix(".png")
        image.save(path)
    else:
        path = stem.with_suffix(".jpg")
        image.save(path, quality=int(rng.integers(80, 96)))
    return path


def jpeg_roundtrip(image: Image.Image, quality: int = 90) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
