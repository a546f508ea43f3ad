"""The small greyscale copy of each picture that the index keeps for the geometric check.

Why: ``dups`` (and ``audit``, ``search --verify``, ``sweep``, ``check``) match local features of the
images they are unsure about (:mod:`lookalike.dedup.verify`), which needs each image at
:data:`CHECK_SIDE` pixels. Reading and decoding the original again costs 15-20 ms for a 2-12 MP JPEG
even in draft mode, a third of the check's cost per image. Indexing has just decoded the picture
(for the model), so it keeps this copy, lossless, at about 2 ms and 44 KB an image (bench_e2e's
photos): the check then decodes 44 KB instead of a few MB, and works on files that have since moved
or gone.

The copy is made from the index's own decode (JPEG draft mode at the model's input size). Where that
decode came out smaller than the check's side (e.g. 300 x 225 from a 1200 x 900 photo, where the check
would read 320 x 240) no copy is kept (:func:`decode_is_large_enough`), and the check reads that file.
:data:`PICTURE_KIND` names the recipe, so a check with other settings ignores the copies.
"""

from __future__ import annotations

import io

from PIL import Image

#: Longest side (pixels) the geometric check works at (see ``lookalike.dedup.verify.DEFAULT_SIDE``).
CHECK_SIDE = 320
#: The copy is lossless (PNG at zlib level 1: 2 ms to write, 1 ms to read, about 44 KB at 320 x 240
#: on bench_e2e's photos). Why not JPEG (17 KB at quality 90, 34 KB at 98): its ringing round drawn
#: text and edges adds keypoints, and screenshots of one application that share their chrome then
#: confirm as copies of each other (tests/test_dups_verify.py); from the files they do not.
PNG_LEVEL = 1
#: The recipe's name, stored beside each copy.
PICTURE_KIND = f"grey{CHECK_SIDE}-png"
#: ``dups`` checks point for point by default up to this many distinct contents
#: (``lookalike.dedup.groups.VERIFY_AUTO_LIMIT`` is this number), and indexing keeps copies while the
#: index holds at most this many items: none for a million photos, under 1 GB at the limit.
VERIFIED_UP_TO = 20_000


def check_picture(image: Image.Image, side: int = CHECK_SIDE) -> Image.Image:
    """``image`` as the check sees it: greyscale, longest side at most ``side`` pixels."""
    grey = image.convert("L")
    grey.thumbnail((side, side))
    return grey


def decode_is_large_enough(decoded: tuple[int, int], original: tuple[int, int], side: int = CHECK_SIDE) -> bool:
    """Whether a (draft) decode of size ``decoded`` gives the check its full ``side``: as large as
    the check's own read of the ``original`` would be."""
    return max(decoded) >= min(side, max(original))


def encode_check_picture(image: Image.Image) -> bytes:
    """The bytes the index keeps for ``image`` (an upright decode, e.g. the one made for the model)."""
    out = io.BytesIO()
    check_picture(image).save(out, "PNG", compress_level=PNG_LEVEL)
    return out.getvalue()


def decode_check_picture(data: bytes) -> Image.Image:
    """A kept copy back as a greyscale image (raises ``OSError``/``ValueError`` on damaged bytes)."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format != "PNG" or image.width > CHECK_SIDE or image.height > CHECK_SIDE:
            raise ValueError("not a kept check picture")
        return image.convert("L")
