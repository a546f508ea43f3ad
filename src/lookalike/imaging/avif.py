"""The frame sizes an AVIF file's AV1 streams declare, read before anything is decoded.

Pillow checks an AVIF's ``ispe`` (the size the container declares) against the pixel limit, but
libavif hands the AV1 data to the decoder without holding it to that size: a file that declares
640 x 480 can carry a 16384 x 16384 frame, and the decoder allocates for the frame (libavif's own
cap is 268 MP, above ours and far above the server's). The frame size is in each stream's AV1
sequence header (``max_frame_width/height``: no frame of the stream may be larger), so this
module finds those headers, in the file's AV1 items (still pictures, grid tiles, alpha planes)
and in the first sample of each AV1 track (animated AVIF), and reads the sizes out of them.

Only what is needed is parsed: ISO-BMFF boxes, ``iinf``/``iloc``/``idat`` for items,
``stsd``/``stco``/``stsz`` for tracks, AV1 OBU headers, and the sequence header up to the frame
size. Anything malformed ends the search quietly: libavif then refuses the file or decodes it
under its own limits.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator


class _Malformed(Exception):
    pass


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, box end)`` of each box in ``data[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise _Malformed
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise _Malformed
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    return next(((s, e) for k, s, e in _boxes(data, start, end) if k == kind), None)


def _uint(data: bytes, pos: int, size: int) -> int:
    if size == 0:
        return 0
    if pos + size > len(data) or size not in (1, 2, 4, 8):
        raise _Malformed
    return int.from_bytes(data[pos : pos + size], "big")


def _item_payloads(data: bytes, meta: tuple[int, int]) -> Iterator[bytes]:
    """The bytes of every ``av01`` item in a ``meta`` box (a FullBox)."""
    start, end = meta[0] + 4, meta[1]
    iinf, iloc, idat = (_child(data, start, end, k) for k in (b"iinf", b"iloc", b"idat"))
    if iinf is None or iloc is None:
        return
    av01: set[int] = set()
    version = data[iinf[0]]
    first = iinf[0] + 4 + (2 if version == 0 else 4)
    for kind, s, _ in _boxes(data, first, iinf[1]):
        if kind == b"infe" and data[s] >= 2:
            id_size = 2 if data[s] == 2 else 4
            item_id = _uint(data, s + 4, id_size)
            if data[s + 4 + id_size + 2 : s + 4 + id_size + 6] == b"av01":
                av01.add(item_id)
    pos = iloc[0]
    version = data[pos]
    offset_size, length_size = data[pos + 4] >> 4, data[pos + 4] & 15
    base_size, index_size = data[pos + 5] >> 4, (data[pos + 5] & 15) if version in (1, 2) else 0
    pos += 6
    count = _uint(data, pos, 2 if version < 2 else 4)
    pos += 2 if version < 2 else 4
    for _ in range(count):
        item_id = _uint(data, pos, 2 if version < 2 else 4)
        pos += 2 if version < 2 else 4
        method = 0
        if version in (1, 2):
            method = _uint(data, pos, 2) & 15
            pos += 2
        pos += 2  # data_reference_index
        base = _uint(data, pos, base_size)
        pos += base_size
        extents = _uint(data, pos, 2)
        pos += 2
        parts = []
        for _ in range(extents):
            pos += index_size
            offset, length = _uint(data, pos, offset_size), _uint(data, pos + offset_size, length_size)
            pos += offset_size + length_size
            if method == 0:
                parts.append(data[base + offset : base + offset + length] if length else data[base + offset :])
            elif method == 1 and idat is not None:
                at = idat[0] + base + offset
                parts.append(data[at : min(idat[1], at + length) if length else idat[1]])
        if item_id in av01:
            yield b"".join(parts)


def _track_payloads(data: bytes, moov: tuple[int, int]) -> Iterator[bytes]:
    """The first sample of every AV1 track in a ``moov`` box (the frame Pillow decodes)."""
    for kind, s, e in _boxes(data, *moov):
        if kind != b"trak":
            continue
        found = _child(data, s, e, b"mdia")
        found = found and _child(data, *found, b"minf")
        stbl = found and _child(data, *found, b"stbl")
        if not stbl:
            continue
        stsd, stsz = _child(data, *stbl, b"stsd"), _child(data, *stbl, b"stsz")
        chunks = _child(data, *stbl, b"stco") or _child(data, *stbl, b"co64")
        if not (stsd and stsz and chunks) or data[stsd[0] + 12 : stsd[0] + 16] != b"av01":
            continue
        wide = data[chunks[0] - 4 : chunks[0]] == b"co64"
        if _uint(data, chunks[0] + 4, 4) == 0 or _uint(data, stsz[0] + 8, 4) == 0:
            continue
        offset = _uint(data, chunks[0] + 8, 8 if wide else 4)
        size = _uint(data, stsz[0] + 4, 4) or _uint(data, stsz[0] + 12, 4)
        yield data[offset : offset + size]


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise _Malformed
            value = (value << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def uvlc(self) -> int:
        zeros = 0
        while not self.read(1):
            zeros += 1
            if zeros >= 32:
                return (1 << 32) - 1
        return (1 << zeros) - 1 + self.read(zeros)


def _max_frame_size(header: bytes) -> tuple[int, int]:
    """``max_frame_width``, ``max_frame_height`` from an AV1 sequence header OBU's payload (spec 5.5)."""
    bits = _Bits(header)
    bits.read(3)  # seq_profile
    bits.read(1)  # still_picture
    if bits.read(1):  # reduced_still_picture_header
        bits.read(5)  # seq_level_idx[0]
    else:
        decoder_model = False
        buffer_delay_length = 0
        if bits.read(1):  # timing_info_present_flag
            bits.read(32)  # num_units_in_display_tick
            bits.read(32)  # time_scale
            if bits.read(1):  # equal_picture_interval
                bits.uvlc()
            decoder_model = bool(bits.read(1))
            if decoder_model:
                buffer_delay_length = bits.read(5) + 1
                bits.read(32)  # num_units_in_decoding_tick
                bits.read(5)  # buffer_removal_time_length_minus_1
                bits.read(5)  # frame_presentation_time_length_minus_1
        initial_display_delay = bits.read(1)
        for _ in range(bits.read(5) + 1):  # operating points
            bits.read(12)  # operating_point_idc
            if bits.read(5) > 7:  # seq_level_idx
                bits.read(1)  # seq_tier
            if decoder_model and bits.read(1):
                bits.read(buffer_delay_length)  # decoder_buffer_delay
                bits.read(buffer_delay_length)  # encoder_buffer_delay
                bits.read(1)  # low_delay_mode_flag
            if initial_display_delay and bits.read(1):
                bits.read(4)
    width_bits, height_bits = bits.read(4) + 1, bits.read(4) + 1
    return bits.read(width_bits) + 1, bits.read(height_bits) + 1


def _sequence_headers(payload: bytes) -> Iterator[bytes]:
    """The sequence header OBUs in a run of AV1 OBUs (the low-overhead format AVIF stores)."""
    pos = 0
    while pos < len(payload):
        header = payload[pos]
        kind, extension, has_size = (header >> 3) & 15, (header >> 2) & 1, (header >> 1) & 1
        pos += 1 + extension
        if has_size:
            size = shift = 0
            for _ in range(8):  # leb128
                if pos >= len(payload):
                    raise _Malformed
                byte = payload[pos]
                pos += 1
                size |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
        else:
            size = len(payload) - pos
        if pos + size > len(payload):
            raise _Malformed
        if kind == 1:  # OBU_SEQUENCE_HEADER
            yield payload[pos : pos + size]
        pos += size


def frame_sizes(data: bytes) -> list[tuple[int, int]]:
    """The largest frame each AV1 stream in an AVIF file may decode to, as ``(width, height)``.

    Empty when none could be found (a malformed file: the decoder will say so).
    """
    sizes: list[tuple[int, int]] = []
    try:
        top = {kind: (s, e) for kind, s, e in _boxes(data, 0, len(data)) if kind in (b"meta", b"moov")}
        payloads: list[bytes] = []
        if b"meta" in top:
            payloads += _item_payloads(data, top[b"meta"])
        if b"moov" in top:
            payloads += _track_payloads(data, top[b"moov"])
        for payload in payloads:
            sizes += (_max_frame_size(header) for header in _sequence_headers(payload))
    except (_Malformed, IndexError, struct.error):
        pass
    return sizes
