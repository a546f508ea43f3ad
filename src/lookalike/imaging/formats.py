"""Which decoder a file needs, from its first bytes and its name, and whether that decoder is here.

Pillow decodes most formats itself, AVIF included (its wheels carry libavif). HEIC/HEIF needs
pi-heif (libheif, decoders only) and camera RAW needs rawpy (LibRaw): both are installed by default
but optional at run time, so a machine without them skips those files with a reason that says what
to install.

Camera RAW files are the awkward ones: most (NEF, ARW, PEF, SRW, DNG) begin exactly like a TIFF,
and Pillow would happily "decode" the 160 x 120 thumbnail in their first directory. So a file is
treated as RAW when its extension says so, when its bytes carry a RAW-only signature (CR2, CR3,
ORF, RW2, RAF), or when its first TIFF directory has a DNGVersion tag; LibRaw then has the last
word (a JPEG named ``.nef`` goes back to Pillow).
"""

from __future__ import annotations

import importlib
import os
import struct
from functools import cache
from types import ModuleType
from typing import Literal

#: Camera RAW extensions routed to LibRaw (lower case, with the dot).
RAW_EXTENSIONS = frozenset([".cr2", ".cr3", ".nef", ".nrw", ".arw", ".dng", ".raf", ".orf", ".rw2", ".pef", ".srw"])
#: ISO-BMFF (``ftyp``) brands of HEIF pictures coded with HEVC, and of AVIF (AV1) ones.
HEIF_BRANDS = frozenset([b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"])
AVIF_BRANDS = frozenset([b"avif", b"avis"])
#: Structural brands that either can carry (the compatible brands tell which).
GENERIC_BRANDS = frozenset([b"mif1", b"msf1", b"mif2", b"miaf"])
#: Canon CR3 is ISO-BMFF too.
CR3_BRAND = b"crx "

Kind = Literal["heif", "avif", "raw"]

#: Why a file was skipped when its decoder is missing: (``ImageLoadError.reason``, detail).
MISSING_REASON = "decoder missing"
MISSING_DETAIL: dict[Kind, str] = {
    "heif": "HEIC/HEIF support is not installed: pip install pi-heif",
    "avif": "AVIF support is not installed: this Pillow was built without libavif (PyPI's Pillow wheels have it)",
    "raw": "camera RAW support is not installed: pip install rawpy",
}
#: The modules that can decode each kind, first choice first (AVIF: Pillow's own plugin). HEIF:
#: pi-heif is libheif with decoders only (LGPL); pillow-heif, the same API, also bundles the x265
#: encoder, which makes its wheel GPLv2, so it is only a test dependency (the tests encode HEIC).
_MODULES: dict[Kind, tuple[str, ...]] = {
    "heif": ("pi_heif", "pillow_heif"),
    "avif": ("PIL._avif",),
    "raw": ("rawpy",),
}


def ftyp_kind(head: bytes) -> Kind | None:
    """HEIF, AVIF or CR3 (RAW) from an ISO-BMFF ``ftyp`` box at the start of ``head``, else None."""
    if head[4:8] != b"ftyp" or len(head) < 12:
        return None
    major = head[8:12]
    box_end = min(len(head), max(16, struct.unpack(">I", head[:4])[0]))
    brands = {major} | {head[i : i + 4] for i in range(16, box_end - 3, 4)}
    if major == CR3_BRAND:
        return "raw"
    if major in AVIF_BRANDS:
        return "avif"
    if major in HEIF_BRANDS:
        return "heif"
    if major in GENERIC_BRANDS:
        if brands & AVIF_BRANDS:
            return "avif"
        return "heif"  # mif1 without an AV1 brand: HEVC, or something only libheif may know
    return None


def raw_signature(head: bytes) -> bool:
    """True for the RAW formats whose first bytes differ from a plain TIFF's."""
    return (
        (head.startswith(b"II*\x00") and head[8:10] == b"CR")  # Canon CR2
        or head[4:12] == b"ftyp" + CR3_BRAND  # Canon CR3
        or head.startswith((b"IIRO", b"IIRS", b"MMOR"))  # Olympus ORF
        or head.startswith(b"IIU\x00")  # Panasonic RW2
        or head.startswith(b"FUJIFILMCCD-RAW")  # Fujifilm RAF
    )


def has_dng_tag(data: bytes) -> bool:
    """True when ``data`` is a TIFF whose first directory has a DNGVersion tag (50706)."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8 or struct.unpack(order + "H", data[2:4])[0] != 42:
        return False
    offset = struct.unpack(order + "I", data[4:8])[0]
    if offset + 2 > len(data):
        return False
    count = struct.unpack(order + "H", data[offset : offset + 2])[0]
    for i in range(min(count, 1000)):
        at = offset + 2 + 12 * i
        if at + 2 > len(data):
            return False
        if struct.unpack(order + "H", data[at : at + 2])[0] == 50706:
            return True
    return False


def kind_of(data: bytes, name: str | os.PathLike[str] | None = None) -> Kind | None:
    """The decoder ``data`` needs beyond Pillow's built-in ones (None: Pillow, as before).

    ``name`` (a path or file name, optional) lets RAW files that begin like a TIFF be recognised.
    """
    head = data[:64]
    kind = ftyp_kind(head)
    if kind is not None:
        return kind
    if raw_signature(head):
        return "raw"
    if name is not None and os.path.splitext(os.fspath(name))[1].lower() in RAW_EXTENSIONS:
        return "raw"
    if head.startswith((b"II*\x00", b"MM\x00*")) and has_dng_tag(data):
        return "raw"
    return None


@cache
def decoder(kind: Kind) -> ModuleType | None:
    """The module that decodes ``kind``, imported once; None if none is installed (or works: a
    libheif binding can import without its compiled part and fail on first use, so it is asked its
    version)."""
    for name in _MODULES[kind]:
        try:
            module = importlib.import_module(name)
            if kind == "heif":
                module.libheif_version()
            return module
        except Exception:  # ImportError, or a compiled library that does not load (OSError...)
            continue
    return None


def skip_still_holds(reason: str, detail: str) -> bool:
    """Whether a failure remembered from an earlier run still applies without decoding again.

    A "decoder missing" skip stops applying once that decoder is installed: the user who was told
    to ``pip install pi-heif`` and did expects the next run to index those files.
    """
    if reason != MISSING_REASON:
        return True
    kind = next((k for k, text in MISSING_DETAIL.items() if text == detail), None)
    return kind is not None and decoder(kind) is None
