"""Camera RAW files for the tests, written byte by byte: DNGs made from real photos.

No Debian package ships a camera RAW sample (checked: darktable, rawtherapee-data, digikam-data,
libraw-doc, libimage-exiftool-perl, exiv2, gthumb-data, python3-py3exiv2 and a dozen test-data
packages), LibRaw cannot write one, and nothing may be downloaded. DNG is the one RAW format with
a public specification, and it is what phones and many cameras write, so the tests write it: a
little-endian TIFF whose first directory is an 8-bit JPEG preview (as a camera's is) and whose
SubIFD holds the sensor data, a 14-bit RGGB Bayer mosaic of the photo in linear light. LibRaw
reads it like any camera's file: the preview through ``extract_thumb``, the mosaic by demosaicing.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL = 1, 2, 3, 4, 5, 10
_FORMAT = {BYTE: "B", SHORT: "H", LONG: "I"}
#: XYZ (D65) -> linear sRGB: the DNG ColorMatrix of a camera whose sensor sees sRGB primaries.
XYZ_TO_SRGB = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))
BLACK, WHITE = 256, 16383

Entry = tuple[int, int, object]


def _payload(kind: int, value: object) -> tuple[bytes, int]:
    """A tag's value as little-endian bytes, and its TIFF count."""
    if kind == ASCII:
        data = str(value).encode() + b"\0"
        return data, len(data)
    values = list(value) if isinstance(value, list | tuple) else [value]
    if kind in (RATIONAL, SRATIONAL):
        code = "i" if kind == SRATIONAL else "I"
        return b"".join(struct.pack("<" + code * 2, round(v * 10_000), 10_000) for v in values), len(values)
    return struct.pack("<" + _FORMAT[kind] * len(values), *values), len(values)


def _ifd(entries: list[Entry], start: int) -> bytes:
    """One image file directory written at ``start``, its long values right after it (no next IFD)."""
    entries = sorted(entries)
    base = start + 2 + 12 * len(entries) + 4
    head, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
    for tag, kind, value in entries:
        data, count = _payload(kind, value)
        if len(data) <= 4:
            field = data.ljust(4, b"\0")
        else:
            field = struct.pack("<I", base + len(extra))
            extra += data + b"\0" * (len(data) % 2)
        head += struct.pack("<HHI", tag, kind, count) + field
    return bytes(head + struct.pack("<I", 0) + extra)


def mosaic(photo: Image.Image) -> np.ndarray:
    """The photo as a sensor would record it: linear light, one colour per pixel (RGGB), 14 bits."""
    srgb = np.asarray(photo.convert("RGB"), dtype=np.float64) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    cfa = np.empty(linear.shape[:2])
    cfa[0::2, 0::2] = linear[0::2, 0::2, 0]
    cfa[0::2, 1::2] = linear[0::2, 1::2, 1]
    cfa[1::2, 0::2] = linear[1::2, 0::2, 1]
    cfa[1::2, 1::2] = linear[1::2, 1::2, 2]
    return np.round(BLACK + cfa * (WHITE - BLACK)).astype("<u2")


def dng(
    stored: Image.Image,
    *,
    orientation: int = 1,
    preview: int | None = 1024,
    declared: tuple[int, int] | None = None,
) -> bytes:
    """A DNG of ``stored`` (the pixels as the sensor holds them, even width and height).

    ``orientation``: the EXIF orientation the file carries (6: the camera was turned; show the
    picture rotated 90 degrees clockwise). ``preview``: the long side of the embedded JPEG preview,
    or None for a file with sensor data only. ``declared``: a sensor size to claim instead of the
    real one (the data stays the real size: a bomb).
    """
    width, height = stored.width & ~1, stored.height & ~1
    stored = stored.crop((0, 0, width, height))
    sensor = mosaic(stored).tobytes()
    sensor_w, sensor_h = declared or (width, height)
    colour: list[Entry] = [
        (271, ASCII, "Lookalike"),  # Make
        (272, ASCII, "Test DNG"),  # Model
        (274, SHORT, orientation),
        (305, ASCII, "lookalike tests/rawgen.py"),  # Software
        (50706, BYTE, (1, 4, 0, 0)),  # DNGVersion
        (50707, BYTE, (1, 1, 0, 0)),  # DNGBackwardVersion
        (50708, ASCII, "Lookalike Test DNG"),  # UniqueCameraModel
        (50721, SRATIONAL, [v for row in XYZ_TO_SRGB for v in row]),  # ColorMatrix1
        (50728, RATIONAL, (1.0, 1.0, 1.0)),  # AsShotNeutral: no white balance to undo
        (50778, SHORT, 21),  # CalibrationIlluminant1: D65
    ]

    def raw_ifd(subfile: int, data_at: int) -> list[Entry]:
        return [
            (254, LONG, subfile),  # NewSubfileType: 0 = the main image
            (256, LONG, sensor_w),
            (257, LONG, sensor_h),
            (258, SHORT, 16),  # BitsPerSample
            (259, SHORT, 1),  # Compression: none
            (262, SHORT, 32803),  # PhotometricInterpretation: CFA
            (273, LONG, data_at),  # StripOffsets
            (277, SHORT, 1),  # SamplesPerPixel
            (278, LONG, sensor_h),  # RowsPerStrip
            (279, LONG, sensor_w * sensor_h * 2),  # StripByteCounts
            (284, SHORT, 1),  # PlanarConfiguration
            (33421, SHORT, (2, 2)),  # CFARepeatPatternDim
            (33422, BYTE, (0, 1, 1, 2)),  # CFAPattern: R G / G B
            (50714, LONG, BLACK),  # BlackLevel
            (50717, LONG, WHITE),  # WhiteLevel
        ]

    header = b"II*\x00" + struct.pack("<I", 8)
    if preview is None:  # one directory: the sensor data is the main image
        ifd0_len = len(_ifd(raw_ifd(0, 0) + colour, 8))
        return header + _ifd(raw_ifd(0, 8 + ifd0_len) + colour, 8) + sensor

    scale = preview / max(width, height)
    small = stored.resize((max(16, round(width * scale)), max(16, round(height * scale))), Image.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=92)
    jpeg = buffer.getvalue()

    def preview_ifd(jpeg_at: int, sub_at: int) -> list[Entry]:
        return [
            (254, LONG, 1),  # NewSubfileType: a reduced-resolution copy
            (256, LONG, small.width),
            (257, LONG, small.height),
            (258, SHORT, (8, 8, 8)),
            (259, SHORT, 7),  # Compression: JPEG
            (262, SHORT, 6),  # PhotometricInterpretation: YCbCr
            (273, LONG, jpeg_at),
            (277, SHORT, 3),
            (278, LONG, small.height),
            (279, LONG, len(jpeg)),
            (284, SHORT, 1),
            (330, LONG, sub_at),  # SubIFDs: the sensor data
            *colour,
        ]

    ifd0_len = len(_ifd(preview_ifd(0, 0), 8))
    sub_at = 8 + ifd0_len
    sub_len = len(_ifd(raw_ifd(0, 0), sub_at))
    jpeg_at = sub_at + sub_len
    sensor_at = jpeg_at + len(jpeg) + len(jpeg) % 2
    return (
        header
        + _ifd(preview_ifd(jpeg_at, sub_at), 8)
        + _ifd(raw_ifd(0, sensor_at), sub_at)
        + jpeg
        + b"\0" * (len(jpeg) % 2)
        + sensor
    )
