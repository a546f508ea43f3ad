"""Decode any image file a user is likely to have into an upright 8-bit RGB picture, or say why not.

Everything that can go wrong with a file becomes an :class:`ImageLoadError` with a short, stable
``reason`` (used in skip reports and HTTP errors) and a human ``detail``. Nothing here raises
anything else for bad input, so callers can skip and report instead of crashing.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from lookalike.errors import LookalikeError

ImageFile.LOAD_TRUNCATED_IMAGES = False
# Image.MAX_IMAGE_PIXELS keeps Pillow's default: it guards Image.open calls made outside decode_image.
# Inside it, our own per-call limit takes its place at every one of Pillow's checkpoints (see _bomb_check).

#: Pictures above this many pixels are refused (a 20,000 x 20,000 image is 400 MP). ~ a 130 MP photo.
DEFAULT_MAX_PIXELS = 130_000_000
#: Files above this many bytes are refused before reading them.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


class ImageLoadError(LookalikeError):
    """A file that cannot become a picture. ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _TooManyPixels(Image.DecompressionBombError):
    """Raised from inside Pillow, where a picture's (or an embedded frame's) true size becomes known."""


#: The pixel limit of the decode running in this thread (None: Pillow's own global check applies).
_pixel_limit: ContextVar[int | None] = ContextVar("lookalike_pixel_limit", default=None)
_pillow_bomb_check = Image._decompression_bomb_check  # an AttributeError here means Pillow moved it


def _bomb_check(size: tuple[int, int], *, error_only: bool = False) -> None:
    """Pillow calls this wherever a real size becomes known, before allocating for it: the outer
    picture in ``Image.open``, the embedded PNG/BMP of an ICO, the PNG/JPEG 2000 of an ICNS, a GIF
    frame that grows the screen or its disposal buffer, a WebP canvas, an MPO frame, a TIFF tile.
    Pillow's ``MAX_IMAGE_PIXELS`` is one number for the process; our limit is per call (server,
    indexer, thumbnails) and decodes run in threads, so the limit travels in a context variable."""
    limit = _pixel_limit.get()
    if limit is None:
        _pillow_bomb_check(size, error_only=error_only)
        return
    width, height = size
    if max(1, width) * max(1, height) > limit:
        raise _TooManyPixels(
            f"{width} x {height} = {width * height / 1e6:.0f} MP is above the "
            f"{limit / 1e6:.0f} MP limit (possible decompression bomb)"
        )


Image._decompression_bomb_check = _bomb_check


@contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Within this block (this thread only), Pillow refuses any picture or frame above ``max_pixels``
    with :class:`PIL.Image.DecompressionBombError` before decoding it."""
    token = _pixel_limit.set(max_pixels)
    try:
        yield
    finally:
        _pixel_limit.reset(token)


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image  # RGB, EXIF orientation applied, possibly reduced by JPEG draft decoding
    width: int  # upright size of the original picture, before any draft reduction
    height: int
    format: str | None


def read_bytes(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a whole file, turning OS errors into :class:`ImageLoadError`."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise ImageLoadError(
                    "too large", f"file is {size / 1e6:.0f} MB, above the {max_bytes / 1e6:.0f} MB limit"
                )
            return handle.read()
    except FileNotFoundError as exc:
        raise ImageLoadError("missing", "the file disappeared before it could be read") from exc
    except PermissionError as exc:
        raise ImageLoadError("unreadable", "permission denied") from exc
    except IsADirectoryError as exc:
        raise ImageLoadError("not a file", "is a directory") from exc
    except OSError as exc:
        raise ImageLoadError("unreadable", exc.strerror or str(exc)) from exc


def decode_image(data: bytes, *, draft_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode bytes into an upright RGB image.

    ``draft_size``: the model's input size. JPEGs are then decoded at 1/2, 1/4 or 1/8 scale
    (never below this size), which makes a 12 MP photo several times cheaper to decode.
    """
    if not data:
        raise ImageLoadError("empty file", "the file has zero bytes")
    try:
        with pixel_limit(max_pixels), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Palette images with Transparency" noise
            # An ICO decodes its largest frame inside open(), a WebP allocates its canvas there:
            # the guard must already be in place (see _bomb_check), not only the check below.
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageLoadError(
                    "too many pixels",
                    f"{width} x {height} = {width * height / 1e6:.0f} MP is above the "
                    f"{max_pixels / 1e6:.0f} MP limit (possible decompression bomb)",
                )
            fmt = img.format
            if getattr(img, "is_animated", False):
                img.seek(0)
            if draft_size and fmt == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            upright = ImageOps.exif_transpose(img)
            if upright is not None and upright.size != img.size:
                width, height = height, width
            rgb = to_rgb(upright if upright is not None else img)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageLoadError("not an image", "the content is not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError("too many pixels", str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        # Pillow reports truncated/corrupt data as OSError ("image file is truncated") or SyntaxError.
        raise ImageLoadError("corrupt", f"cannot decode the image ({exc})") from exc
    except MemoryError as exc:
        raise ImageLoadError("too many pixels", "not enough memory to decode the image") from exc
    return LoadedImage(rgb, width, height, fmt)


def load_image(
    path: str | os.PathLike[str],
    *,
    draft_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> LoadedImage:
    """Read and decode one file (see :func:`decode_image`)."""
    return decode_image(read_bytes(path), draft_size=draft_size, max_pixels=max_pixels)


def open_rgb(source: str | os.PathLike[str] | Image.Image | bytes, draft_size: int | None = None) -> Image.Image:
    """Convenience for queries: a path, raw bytes or a PIL image, as upright RGB."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, bytes | bytearray):
        return decode_image(bytes(source), draft_size=draft_size).image
    return load_image(Path(source), draft_size=draft_size).image


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency over white and scaling 16-bit data."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        if mode == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        elif mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0  # 16-bit range onto 8 bits
        gray = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
        return gray.convert("RGB")
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
