"""End to end on real photos: edited copies of indexed photos find their original first."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import ImageEnhance

from lookalike import Index
from lookalike.imaging.edits import jpeg
from lookalike.imaging.load import load_image

pytestmark = pytest.mark.slow


EDITS = {
    "resize 0.3": lambda im: im.resize((max(32, im.width * 3 // 10), max(32, im.height * 3 // 10))),
    "centre crop 70%": lambda im: im.crop(
        (im.width * 15 // 100, im.height * 15 // 100, im.width * 85 // 100, im.height * 85 // 100)
    ),
    "jpeg q25": lambda im: jpeg(im, 25),
    "crop 80% + resize + jpeg q50": lambda im: jpeg(
        im.crop((0, 0, im.width * 8 // 10, im.height * 8 // 10)).resize((480, 360)), 50
    ),
    "brightness +30%": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
}


def test_edited_copies_find_their_original(real_photos: list[Path], tmp_path: Path) -> None:
    with Index.open(tmp_path / "db") as index:
        report = index.add(real_photos)
        assert report.added == len(real_photos) and not report.skipped
        originals = real_photos[:: max(1, len(real_photos) // 8)][:8]
        misses = []
        queries, expected = [], []
        for photo in originals:
            base = load_image(photo, draft_size=1024).image
            for name, edit in EDITS.items():
                queries.append(edit(base))
                expected.append((str(photo), name))
        for result, (want, name) in zip(index.search_many(queries, k=3), expected, strict=True):
            if result.results[0].path != want:
                misses.append((Path(want).name, name, result.results[0].path))
        assert not misses, f"{len(misses)}/{len(queries)} edited copies did not find their original: {misses}"
