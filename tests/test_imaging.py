"""Every kind of awkward file decodes to upright RGB or fails with a clear reason; nothing crashes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_picture
from lookalike.imaging.discover import Skip, walk_images
from lookalike.imaging.load import ImageLoadError, decode_image, load_image


def _bytes(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_zero_bytes_is_empty_file() -> None:
    with pytest.raises(ImageLoadError) as exc:
        decode_image(b"")
    assert exc.value.reason == "empty file"


def test_truncated_jpeg_is_corrupt() -> None:
    data = _bytes(make_picture(1), "JPEG")
    with pytest.raises(ImageLoadError) as exc:
        decode_image(data[: len(data) // 2])
    assert exc.value.reason == "corrupt"


def test_random_bytes_and_text_are_not_images() -> None:
    for data in (os.urandom(5000), b"just some text\n" * 20):
        with pytest.raises(ImageLoadError) as exc:
            decode_image(data)
        assert exc.value.reason == "not an image"


def test_palette_png_with_transparency_composites_over_white() -> None:
    img = Image.new("P", (40, 40), 0)
    img.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    img.paste(1, (20, 0, 40, 40))
    data = _bytes(img, "PNG", transparency=0)
    rgb = np.asarray(decode_image(data).image)
    assert rgb.shape == (40, 40, 3)
    assert tuple(rgb[5, 5]) == (255, 255, 255)  # transparent -> white, not black or red
    assert tuple(rgb[5, 30]) == (0, 0, 255)


def test_16bit_png_keeps_its_range() -> None:
    arr = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    data = _bytes(Image.fromarray(arr), "PNG")
    rgb = np.asarray(decode_image(data).image)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    assert rgb[0, 0, 0] < 5 and rgb[-1, -1, 0] > 250  # scaled, not clipped to white
    assert 100 < rgb[32, 0, 0] < 156


def test_grayscale_png() -> None:
    data = _bytes(make_picture(2).convert("L"), "PNG")
    loaded = decode_image(data)
    assert loaded.image.mode == "RGB" and loaded.image.size == (320, 240)


def test_cmyk_jpeg() -> None:
    data = _bytes(make_picture(3).convert("CMYK"), "JPEG")
    rgb = np.asarray(decode_image(data).image).astype(int)
    ref = np.asarray(make_picture(3)).astype(int)
    assert np.abs(rgb - ref).mean() < 25


def test_exif_rotated_jpeg_is_upright() -> None:
    upright = make_picture(4, (300, 200))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # sideways pixels (200 x 300)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": undoes ROTATE_90 (which is counter-clockwise)
    data = _bytes(stored, "JPEG", exif=exif.tobytes(), quality=95)
    loaded = decode_image(data)
    assert loaded.image.size == (300, 200)
    assert (loaded.width, loaded.height) == (300, 200)
    diff = np.abs(np.asarray(loaded.image).astype(int) - np.asarray(upright).astype(int)).mean()
    assert diff < 8


def test_animated_gif_first_frame() -> None:
    frames = [Image.new("RGB", (30, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    rgb = np.asarray(decode_image(buf.getvalue()).image)
    assert rgb[10, 10, 0] > 200 and rgb[10, 10, 1] < 50


def test_webp() -> None:
    data = _bytes(make_picture(5), "WEBP", quality=80)
    assert decode_image(data).image.size == (320, 240)


def test_huge_image_refused_before_decoding() -> None:
    # A 20,000 x 20,000 PNG: tiny on disk (one colour), 400 MP when decoded.
    img = Image.new("1", (20_000, 20_000), 0)
    data = _bytes(img, "PNG", optimize=True)
    assert len(data) < 200_000
    with pytest.raises(ImageLoadError) as exc:
        decode_image(data)
    assert exc.value.reason == "too many pixels"
    assert "20000 x 20000" in exc.value.detail


def test_jpeg_draft_mode_decodes_large_photos_smaller() -> None:
    data = _bytes(make_picture(6, (4000, 3000)), "JPEG", quality=85)
    loaded = decode_image(data, draft_size=224)
    assert (loaded.width, loaded.height) == (4000, 3000)  # the original size is reported
    assert min(loaded.image.size) >= 224 and loaded.image.size[0] <= 1000


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits; a directory in place of a file is the unreadable case we can make
        target = tmp_path / "dir.jpg"
        target.mkdir()
        with pytest.raises(ImageLoadError) as exc:
            load_image(target)
        assert exc.value.reason in ("not a file", "unreadable")
    else:  # pragma: no cover
        target = tmp_path / "locked.jpg"
        make_picture(1).save(target)
        target.chmod(0)
        with pytest.raises(ImageLoadError) as exc:
            load_image(target)
        assert exc.value.reason == "unreadable"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError) as exc:
        load_image(tmp_path / "gone.jpg")
    assert exc.value.reason == "missing"


def test_walk_finds_images_by_content_and_survives_symlink_loops(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub dir ünïcode").mkdir(parents=True)
    make_picture(1).save(root / "sub dir ünïcode" / "photo with spaces é.jpg")
    make_picture(2).save(root / "no_extension", "PNG")
    (root / "notes.txt").write_text("hello")
    (root / "fake.jpg").write_bytes(os.urandom(100))
    os.symlink(root, root / "sub dir ünïcode" / "loop")
    skips: list[Skip] = []
    found = sorted(Path(f.path).name for f in walk_images([root], skips.append))
    assert found == ["no_extension", "photo with spaces é.jpg"]
    reasons = {Path(s.path).name: s.reason for s in skips}
    assert reasons["fake.jpg"] == "not an image"
    assert reasons["loop"] == "symlink loop"
