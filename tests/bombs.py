"""Decompression bombs in container formats, built byte by byte: tiny files that claim (or decode to) huge pictures.

Nothing here holds a big picture in memory: the PNG's zero rows are compressed as they are produced,
and the other containers either wrap that PNG or patch the size fields of small files Pillow wrote.
"""

from __future__ import annotations

import io
import itertools
import struct
import zlib

from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int) -> bytes:
    """A complete, valid all-black RGB PNG: a 16000 x 16000 one is under 1 MB and decodes to ~1 GB."""
    compressor = zlib.compressobj(6)
    row = b"\0" * (1 + 3 * width)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def with_png_size(data: bytes, width: int, height: int) -> bytes:
    """The same PNG (or APNG) with its IHDR claiming another size (CRC fixed, pixel data untouched)."""
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:8] + _chunk(b"IHDR", ihdr) + data[33:]


def ico(embedded_png: bytes, declared: int = 256) -> bytes:
    """A one-entry Windows icon whose directory says ``declared`` px square, wrapping any PNG."""
    side = 0 if declared >= 256 else declared  # 0 means 256 in an ICONDIRENTRY
    header = struct.pack("<HHH", 0, 1, 1)  # reserved, type 1 = icon, one image
    entry = struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(embedded_png), 6 + 16)
    return header + entry + embedded_png


def icns(embedded_png: bytes, kind: bytes = b"ic10") -> bytes:
    """A macOS icon with one PNG resource (``ic10``: declared 512 x 512 @2x, i.e. 1024 x 1024)."""
    block = kind + struct.pack(">I", 8 + len(embedded_png)) + embedded_png
    return b"icns" + struct.pack(">I", 8 + len(block)) + block


def gif_frame_beyond_screen(width: int, height: int) -> bytes:
    """A GIF whose screen is 1 x 1 but whose first frame is width x height, with "restore to background"
    disposal: Pillow grows the picture to the frame and fills a disposal buffer of that size on open."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0, 0, 0)  # no global palette
    control = b"\x21\xf9\x04" + bytes([2 << 2]) + b"\0\0\0\0"  # disposal 2, no transparency
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    lzw = b"\x02" + b"\x01\x2c" + b"\x00"  # min code size 2; one sub-block: clear code, end code
    return screen + control + descriptor + lzw + b"\x3b"


def gif_later_frame_huge(width: int, height: int) -> bytes:
    """A two-frame GIF: the first 8 x 8, the second claiming width x height."""
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, disposal=2)
    data = buf.getvalue()
    second = data.rfind(b"\x2c\x00\x00\x00\x00\x08\x00\x08\x00")  # the second image descriptor
    assert second > data.find(b"\x2c\x00\x00\x00\x00\x08\x00\x08\x00") > 0
    return data[: second + 5] + struct.pack("<HH", width, height) + data[second + 9 :]


def webp_canvas(width: int, height: int) -> bytes:
    """An animated WebP with two 8 x 8 frames on a canvas that claims width x height (at most 16384)."""
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    data = buf.getvalue()
    assert data[12:16] == b"VP8X"
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return data[:24] + canvas + data[30:]


def tiff(pages: list[tuple[int, int]]) -> bytes:
    """A little-endian, 8-bit greyscale, uncompressed TIFF with one IFD per (width, height) page.

    Every page points at the same zero bytes, enough for a small first page; a page that claims a
    huge size costs nothing on disk (it must be refused, or never decoded, before its data runs out)."""
    first_w, first_h = pages[0]
    pixels = b"\0" * min(first_w * first_h, 4096)
    out = bytearray(b"II*\x00" + struct.pack("<I", 0))
    data_offset = len(out)
    out += pixels
    ifd_offsets = []
    for w, h in pages:
        if len(out) % 2:
            out += b"\0"
        ifd_offsets.append(len(out))
        entries = [
            (256, 4, 1, w),  # ImageWidth, LONG
            (257, 4, 1, h),  # ImageLength
            (258, 3, 1, 8),  # BitsPerSample, SHORT
            (259, 3, 1, 1),  # Compression: none
            (262, 3, 1, 1),  # PhotometricInterpretation: BlackIsZero
            (273, 4, 1, data_offset),  # StripOffsets
            (277, 3, 1, 1),  # SamplesPerPixel
            (278, 4, 1, h),  # RowsPerStrip
            (279, 4, 1, w * h),  # StripByteCounts
        ]
        out += struct.pack("<H", len(entries))
        for tag, kind, count, value in entries:
            packed = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, count) + packed
        out += struct.pack("<I", 0)  # next IFD: patched below
    struct.pack_into("<I", out, 4, ifd_offsets[0])
    for here, following in itertools.pairwise(ifd_offsets):
        count = struct.unpack_from("<H", out, here)[0]
        struct.pack_into("<I", out, here + 2 + 12 * count, following)
    return bytes(out)


def mpo(huge_frame: int, width: int, height: int) -> bytes:
    """A two-frame MPO (CIPA multi-picture JPEG) of 64 x 64 frames, frame ``huge_frame`` claiming width x height."""
    frames = [Image.new("RGB", (64, 64), (200, 30, 30)), Image.new("RGB", (64, 64), (30, 30, 200))]
    buf = io.BytesIO()
    frames[0].save(buf, "MPO", save_all=True, append_images=frames[1:], quality=90)
    data = bytearray(buf.getvalue())
    sof = -1
    for _ in range(huge_frame + 1):
        sof = data.index(b"\xff\xc0", sof + 1)  # baseline SOF: length, precision, height, width
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def apng(width: int, height: int) -> bytes:
    """A two-frame animated PNG of 8 x 8 frames whose IHDR claims width x height."""
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:], duration=100, default_image=False)
    return with_png_size(buf.getvalue(), width, height)
