"""Pixel statistics come out of the indexing decode and move the way quality checks need them to."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from lookalike import Index
from lookalike.imaging.stats import pixel_stats


def test_each_statistic_reacts_to_its_own_problem(real_photos: list[Path]) -> None:
    photo = Image.open(real_photos[0]).convert("RGB")
    photo.thumbnail((640, 640))
    base = pixel_stats(photo)
    blurred = pixel_stats(photo.filter(ImageFilter.GaussianBlur(4)))
    dark = pixel_stats(ImageEnhance.Brightness(photo).enhance(0.2))
    grey = pixel_stats(ImageOps.grayscale(photo).convert("RGB"))
    solid = pixel_stats(Image.new("RGB", (400, 300), (90, 120, 200)))

    assert blurred["sharpness"] < base["sharpness"] / 5
    assert dark["brightness"] < base["brightness"] * 0.35
    assert grey["colourfulness"] < 0.005 < base["colourfulness"]
    assert solid["entropy"] == 0.0 and solid["contrast"] == 0.0 and solid["sharpness"] == 0.0
    assert base["entropy"] > 5.0


def test_tone_and_colour_statistics_do_not_depend_on_resolution(real_photos: list[Path]) -> None:
    photo = Image.open(real_photos[1]).convert("RGB")
    photo.thumbnail((1600, 1600))
    big, small = pixel_stats(photo), pixel_stats(photo.resize((photo.width // 2, photo.height // 2)))
    for key in ("brightness", "contrast", "entropy", "colourfulness"):
        assert abs(big[key] - small[key]) <= 0.05 * max(abs(big[key]), 1e-3), key


def test_indexing_stores_the_statistics_of_each_new_picture(real_photos: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, src in enumerate(real_photos[:3]):
        Image.open(src).convert("RGB").save(folder / f"p{i}.jpg", quality=90)
    ImageEnhance.Brightness(Image.open(real_photos[3]).convert("RGB")).enhance(0.15).save(folder / "dark.jpg")
    with Index.open(tmp_path / "db", model="dhash") as index:
        index.add([folder])
        stats = {Path(r.path).name: r.extra["stats"] for r in index.store.items()}
    assert set(stats) == {"p0.jpg", "p1.jpg", "p2.jpg", "dark.jpg"}
    assert stats["dark.jpg"]["brightness"] < min(s["brightness"] for n, s in stats.items() if n != "dark.jpg")
