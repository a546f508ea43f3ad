"""Decode any image file a user is likely to have into an upright 8-bit RGB picture, or say why not.

Everything that can go wrong with a file becomes an :class:`ImageLoadError` with a short, stable
``reason`` (used in skip reports and HTTP errors) and a human ``detail``. Nothing here raises
anything else for bad input, so callers can skip and report instead of crashing.

Pillow decodes the common formats and AVIF; pillow-heif adds HEIC/HEIF to Pillow and rawpy (LibRaw)
decodes camera RAW files (see :mod:`lookalike.imaging.formats`). Every decoder works under the same
pixel limit, checked against the size a file declares before anything of that size is allocated.
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
from types import ModuleType
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from lookalike.errors import LookalikeError
from lookalike.imaging import avif, formats

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

_heif = formats.decoder("heif")
if _heif is not None:
    # HEIC/HEIF through Image.open, so the checks above apply to it unchanged. The size Pillow checks
    # is the one the file declares (its primary image's ``ispe``), and libheif refuses to decode
    # beyond it. Depth maps and auxiliary images are never looked at.
    _heif.register_heif_opener(thumbnails=True, depth_images=False, aux_images=False)


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


def decode_image(
    data: bytes,
    *,
    draft_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | os.PathLike[str] | None = None,
) -> LoadedImage:
    """Decode bytes into an upright RGB image.

    ``draft_size``: the model's input size. JPEGs are then decoded at 1/2, 1/4 or 1/8 scale, HEIC
    files from an embedded thumbnail and camera RAW files from their embedded preview (never below
    this size), which makes a 12 MP photo several times cheaper to decode.
    ``name``: the file's name or path, if known. Camera RAW files that begin like a TIFF (NEF, ARW,
    PEF...) are recognised by it.
    """
    if not data:
        raise ImageLoadError("empty file", "the file has zero bytes")
    kind = formats.kind_of(data, name)
    if kind is not None and formats.decoder(kind) is None:
        raise ImageLoadError(formats.MISSING_REASON, formats.MISSING_DETAIL[kind])
    if kind == "avif":
        # The AV1 streams' own frame size, which libavif does not hold to the declared one (see avif.py).
        for width, height in avif.frame_sizes(data):
            if width * height > max_pixels:
                raise _too_many_pixels(width, height, max_pixels, "an AV1 frame of ")
    if kind == "raw":
        loaded = _decode_raw(data, draft_size=draft_size, max_pixels=max_pixels)
        if loaded is not None:
            return loaded
        # LibRaw does not know it (a JPEG named .nef, a plain TIFF named .dng): Pillow may.
    try:
        return _decode_pillow(data, draft_size=draft_size, max_pixels=max_pixels)[0]
    except ImageLoadError as exc:
        if kind in ("heif", "avif") and exc.reason == "not an image":
            # Its ftyp box says HEIF or AVIF, and the decoder could not even parse it: truncated or damaged.
            raise ImageLoadError("corrupt", f"cannot read this {kind.upper()} file (truncated or damaged)") from exc
        raise


def _too_many_pixels(width: int, height: int, max_pixels: int, what: str = "") -> ImageLoadError:
    return ImageLoadError(
        "too many pixels",
        f"{what}{width} x {height} = {width * height / 1e6:.0f} MP is above the "
        f"{max_pixels / 1e6:.0f} MP limit (possible decompression bomb)",
    )


def _decode_pillow(data: bytes, *, draft_size: int | None, max_pixels: int) -> tuple[LoadedImage, bool]:
    """Decode with Pillow (and its plugins); also says whether an EXIF orientation was applied."""
    try:
        with pixel_limit(max_pixels), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Palette images with Transparency" noise
            # An ICO decodes its largest frame inside open(), a WebP allocates its canvas there:
            # the guard must already be in place (see _bomb_check), not only the check below.
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise _too_many_pixels(width, height, max_pixels)
            fmt = img.format
            if getattr(img, "is_animated", False) and fmt != "HEIF":
                img.seek(0)  # HEIF opens at its primary image, the one every viewer shows
            if draft_size and fmt in ("JPEG", "HEIF"):
                # HEIF with pillow-heif: the smallest embedded thumbnail that is a scaled copy of at
                # least this size; pi-heif (the default decoder) has no draft mode and decodes it whole.
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            # HEIF: libheif applied the file's rotation and mirroring, and pillow-heif reset the
            # EXIF orientation to 1 (the HEIF rule), so nothing is turned twice. AVIF: Pillow turns
            # its rotation and mirroring into this EXIF orientation.
            orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
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
    except RuntimeError as exc:  # libheif, through pillow-heif
        if "security limit" in str(exc).lower():
            raise ImageLoadError("too many pixels", f"the decoder refused it ({exc})") from exc
        raise ImageLoadError("corrupt", f"cannot decode the image ({exc})") from exc
    except MemoryError as exc:
        raise ImageLoadError("too many pixels", "not enough memory to decode the image") from exc
    return LoadedImage(rgb, width, height, fmt), orientation in _TRANSPOSE


#: EXIF orientation -> the transpose that makes the picture upright (as in ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: LibRaw's ``flip`` (dcraw's: bit 4 swaps the axes, 2 flips rows, 1 flips columns) -> EXIF orientation.
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}


def _decode_raw(data: bytes, *, draft_size: int | None, max_pixels: int) -> LoadedImage | None:
    """A camera RAW file as upright RGB: its embedded preview when that is big enough, else a
    half-size demosaic. None when LibRaw does not recognise the file.

    LibRaw reads only the metadata when it opens a file, so the sensor size is checked against
    ``max_pixels`` before any pixel is unpacked. The preview is a JPEG inside the file, decoded
    here like any other JPEG (same limit, same draft decoding), or a bitmap no bigger than the file.
    """
    rawpy = formats.decoder("raw")
    assert rawpy is not None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rawpy warns about OpenMP after fork
            raw = rawpy.imread(io.BytesIO(data))
    except rawpy.LibRawFileUnsupportedError:
        return None
    except rawpy.LibRawError as exc:
        raise ImageLoadError("corrupt", f"cannot read the RAW file ({_raw_error(exc)})") from exc
    try:
        with raw:
            sizes = raw.sizes
            for what, w, h in (("sensor ", sizes.raw_width, sizes.raw_height), ("", sizes.width, sizes.height)):
                if w * h > max_pixels:
                    raise _too_many_pixels(w, h, max_pixels, what)
            if min(sizes.width, sizes.height) < 1:
                raise ImageLoadError("corrupt", "the RAW file declares an empty picture")
            orientation = _FLIP_TO_ORIENTATION.get(sizes.flip & 7, 1)
            width, height = (sizes.height, sizes.width) if orientation >= 5 else (sizes.width, sizes.height)
            # A half-size demosaic's short side; a preview at least that big (or the model's size) will do.
            wanted = min(width, height) // 2
            if draft_size:
                wanted = min(wanted, draft_size)
            image = _raw_preview(raw, rawpy, orientation, (width, height), wanted, draft_size, max_pixels)
            if image is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pixels = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)  # flip applied
                image = to_rgb(Image.fromarray(pixels))
    except ImageLoadError:
        raise
    except (rawpy.LibRawTooBigError, rawpy.LibRawUnsufficientMemoryError, MemoryError) as exc:
        raise ImageLoadError("too many pixels", f"not enough memory to decode the RAW file ({exc})") from exc
    except (rawpy.LibRawError, NotImplementedError, ValueError, OSError) as exc:
        raise ImageLoadError("corrupt", f"cannot decode the RAW file ({_raw_error(exc)})") from exc
    return LoadedImage(image, width, height, "RAW")


def _raw_error(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _raw_preview(
    raw: Any,
    rawpy: ModuleType,
    orientation: int,
    upright: tuple[int, int],
    wanted: int,
    draft_size: int | None,
    max_pixels: int,
) -> Image.Image | None:
    """The embedded preview, upright, if it is a usable stand-in for the picture (else None)."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawError, NotImplementedError):
        return None  # no preview, or one LibRaw cannot hand over: demosaic instead
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            loaded, oriented = _decode_pillow(thumb.data, draft_size=draft_size, max_pixels=max_pixels)
        except ImageLoadError:
            return None
        image, size = loaded.image, (loaded.width, loaded.height)
    else:  # a bitmap, already in memory (its bytes lie in the file, so it is no bigger than the file)
        pixels = thumb.data
        if getattr(pixels, "ndim", 0) != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            return None
        if pixels.shape[0] * pixels.shape[1] > max_pixels:
            return None
        image, size, oriented = Image.fromarray(pixels), (pixels.shape[1], pixels.shape[0]), False
    if not oriented and orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[orientation])
        if orientation >= 5:
            size = size[1], size[0]
    # Cameras store a preview of the whole frame; anything else (a letterboxed or cropped one, or a
    # tiny thumbnail) would not look like the picture, so it is decoded from the sensor data instead.
    if min(size) < wanted or abs(size[0] * upright[1] - size[1] * upright[0]) > 0.05 * size[1] * upright[0]:
        return None
    return image


def load_image(
    path: str | os.PathLike[str],
    *,
    draft_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> LoadedImage:
    """Read and decode one file (see :func:`decode_image`)."""
    return decode_image(read_bytes(path), draft_size=draft_size, max_pixels=max_pixels, name=path)


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
