"""HEIC/HEIF, AVIF and camera RAW: real photos in those formats decode upright, index and are found.

Every file is made here, offline, from the real photos of the data cache: HEIC with pillow-heif
(libheif + x265), AVIF with Pillow (libavif + aom), DNG by hand (tests/rawgen.py: no Debian
package ships a camera RAW sample and LibRaw cannot write one). Bombs in these formats are refused
before they are decoded, and a machine without pillow-heif or rawpy skips those files and says
what to install.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pillow_heif import as_plugin as heif_encoder

import rawgen
from conftest import make_picture
from lookalike.imaging import avif, formats
from lookalike.imaging.discover import sniff_image
from lookalike.imaging.load import ImageLoadError, decode_image, load_image
from test_bombs import FLAT_MB, decode_in_child

ROOT = Path(__file__).resolve().parents[1]

# lookalike decodes HEIF with pi-heif (decoders only); the tests make their HEIC files with pillow-heif's
# encoder, registered for saving only, so every decode below still goes through lookalike's own opener.
Image.register_save("HEIF", heif_encoder._save_heif)
Image.register_save_all("HEIF", heif_encoder._save_all_heif)


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    """``img`` in ``fmt``: HEIF through pillow-heif's encoder, AVIF through Pillow's own."""
    buffer = io.BytesIO()
    if fmt == "AVIF":
        kw.setdefault("speed", 8)
    img.save(buffer, fmt, **kw)
    return buffer.getvalue()


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel (0-255) after bringing ``b`` to ``a``'s size."""
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b.resize(a.size, Image.LANCZOS), dtype=float)).mean())


def sideways(upright: Image.Image) -> tuple[Image.Image, int]:
    """The pixels a camera held sideways stores, and the EXIF orientation that shows them upright."""
    return upright.transpose(Image.Transpose.ROTATE_90), 6  # 6: "rotate 90 degrees clockwise to show"


@pytest.fixture(scope="module")
def large_photos() -> list[Image.Image]:
    """Three real photographs (Debian wallpapers, 1.5-20 MP JPEGs), brought to <= 1600 px."""
    import lookalike_data as datasets

    try:
        paths = [p for p in datasets.photos() if p.suffix.lower() in (".jpg", ".jpeg")]
    except datasets.DatasetUnavailable as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"real photos are needed for this test and could not be fetched: {exc}")
    chosen = []
    for path in paths:
        with Image.open(path) as img:
            if img.width * img.height < 1_500_000:
                continue
            img.draft("RGB", (1600, 1600))
            photo = img.convert("RGB")
        photo.thumbnail((1600, 1600), Image.LANCZOS)
        chosen.append(photo)
        if len(chosen) == 3:
            return chosen
    pytest.fail(f"expected 3 photos of >= 1.5 MP among {len(paths)} JPEGs")


# --------------------------------------------------------------------------- recognising the formats


def ftyp(brand: bytes, *compatible: bytes) -> bytes:
    """An ISO-BMFF ``ftyp`` box: the major brand, a zero minor version, the compatible brands."""
    return struct.pack(">I", 16 + 4 * len(compatible)) + b"ftyp" + brand + b"\0" * 4 + b"".join(compatible)


def test_formats_are_recognised_by_their_bytes_and_names() -> None:
    heic = encode(make_picture(1), "HEIF")
    avif = encode(make_picture(1), "AVIF")
    dng = rawgen.dng(make_picture(1), preview=None)
    tiff = encode(make_picture(1), "TIFF")
    cases: dict[str, tuple[bytes, str | None, str | None]] = {
        "HEIC from pillow-heif": (heic, None, "heif"),
        "AVIF from Pillow": (avif, None, "avif"),
        "mif1 + heic brands": (ftyp(b"mif1", b"mif1", b"heic"), None, "heif"),
        "mif1 + avif brands": (ftyp(b"mif1", b"mif1", b"miaf", b"avif"), None, "avif"),
        "Canon CR3": (ftyp(b"crx ", b"crx ", b"isom"), None, "raw"),
        "Canon CR2": (b"II*\x00\x10\x00\x00\x00CR\x02\x00" + b"\0" * 20, None, "raw"),
        "Olympus ORF": (b"IIRO\x08\x00\x00\x00" + b"\0" * 20, None, "raw"),
        "Panasonic RW2": (b"IIU\x00\x18\x00\x00\x00" + b"\0" * 20, None, "raw"),
        "Fujifilm RAF": (b"FUJIFILMCCD-RAW 0201FF383501", None, "raw"),
        "DNG (by its DNGVersion tag)": (dng, None, "raw"),
        "NEF (a TIFF, by its name)": (tiff, "DSC_0001.NEF", "raw"),
        "plain TIFF": (tiff, "scan.tif", None),
        "JPEG": (encode(make_picture(1), "JPEG"), "photo.jpg", None),
    }
    for case, (data, name, kind) in cases.items():
        assert formats.kind_of(data, name) == kind, case
        if case != "NEF (a TIFF, by its name)":
            assert sniff_image(data[:32]), case  # walk_images finds it by content


# --------------------------------------------------------------------------- HEIC and AVIF


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_real_photo_decodes(fmt: str, large_photos: list[Image.Image]) -> None:
    photo = large_photos[0]
    loaded = decode_image(encode(photo, fmt, quality=80))
    assert loaded.format == fmt
    assert loaded.image.mode == "RGB" and loaded.image.size == photo.size
    assert (loaded.width, loaded.height) == photo.size
    assert mean_diff(loaded.image, photo) < 6


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_orientation_is_applied_once(fmt: str, large_photos: list[Image.Image]) -> None:
    """A phone held sideways: the encoder turns EXIF orientation 6 into the container's rotation
    (``irot``), which the decoder applies; the EXIF tag must not turn the picture a second time."""
    upright = large_photos[1].resize((600, 400))
    stored, orientation = sideways(upright)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, fmt, exif=exif.tobytes(), quality=85)
    assert b"irot" in data
    loaded = decode_image(data)
    assert loaded.image.size == (600, 400) and (loaded.width, loaded.height) == (600, 400)
    assert mean_diff(loaded.image, upright) < 8
    assert mean_diff(loaded.image, stored.resize((600, 400))) > 20  # not just the right shape


def test_heic_with_thumbnails_decodes_its_primary_image(large_photos: list[Image.Image]) -> None:
    """A phone's HEIC carries small copies; lookalike's decoder (pi-heif) reads the primary image
    whole (pillow-heif's thumbnail draft mode is not in pi-heif: docs/formats.md)."""
    photo = large_photos[2]
    data = encode(photo, "HEIF", quality=70, thumbnails=[480, 160])  # as phones: a few sizes
    loaded = decode_image(data, draft_size=224)
    assert (loaded.width, loaded.height) == photo.size  # the original size is reported
    assert loaded.image.size == photo.size  # the primary image, not a 480 or 160 px thumbnail
    assert mean_diff(loaded.image, photo) < 10


def test_heic_primary_image_is_decoded_from_a_multi_image_file() -> None:
    first, second = Image.new("RGB", (64, 48), (220, 20, 20)), Image.new("RGB", (64, 48), (20, 20, 220))
    buffer = io.BytesIO()
    first.save(buffer, "HEIF", save_all=True, append_images=[second], primary_index=1)
    rgb = np.asarray(decode_image(buffer.getvalue()).image)
    assert rgb[10, 10, 2] > 180 and rgb[10, 10, 0] < 60


# --------------------------------------------------------------------------- camera RAW (DNG)


@pytest.mark.parametrize("preview", [1024, None], ids=["embedded preview", "demosaic"])
def test_real_photo_as_dng_decodes_upright(preview: int | None, large_photos: list[Image.Image]) -> None:
    upright = large_photos[0]
    stored, orientation = sideways(upright)
    data = rawgen.dng(stored, orientation=orientation, preview=preview)
    loaded = decode_image(data)
    width, height = upright.width & ~1, upright.height & ~1
    assert loaded.format == "RAW" and (loaded.width, loaded.height) == (width, height)
    if preview:  # the preview, as stored
        assert max(loaded.image.size) == preview
    else:  # a half-size demosaic
        assert loaded.image.size == (width // 2, height // 2)
    assert loaded.image.width > loaded.image.height  # turned upright
    assert mean_diff(loaded.image, upright) < 12


def test_dng_preview_is_draft_decoded_at_the_model_size(large_photos: list[Image.Image]) -> None:
    loaded = decode_image(rawgen.dng(large_photos[1], preview=1024), draft_size=224)
    assert 224 <= min(loaded.image.size) < min(large_photos[1].size) // 2


def test_dng_with_a_tiny_preview_is_demosaiced(large_photos: list[Image.Image]) -> None:
    photo = large_photos[1]
    loaded = decode_image(rawgen.dng(photo, preview=160), draft_size=224)
    assert min(loaded.image.size) > 160  # not the 160 px thumbnail: half the sensor
    assert loaded.image.size == ((photo.width & ~1) // 2, (photo.height & ~1) // 2)


def test_a_jpeg_named_like_a_raw_file_is_still_a_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0001.CR2"
    make_picture(3).save(path, "JPEG")
    assert load_image(path).format == "JPEG"


# --------------------------------------------------------------------------- damaged files and bombs

DAMAGED: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda data: data[: len(data) // 2],
    "header only": lambda data: data[:300],
    "garbage after the header": lambda data: data[:64] + bytes(range(256)) * 8,
}


@pytest.mark.parametrize("damage", list(DAMAGED))
@pytest.mark.parametrize("fmt", ["HEIF", "AVIF", "DNG"])
def test_damaged_files_are_corrupt(fmt: str, damage: str) -> None:
    picture = make_picture(5, (640, 480))
    data = rawgen.dng(picture, preview=None) if fmt == "DNG" else encode(picture, fmt)
    with pytest.raises(ImageLoadError) as exc:
        decode_image(DAMAGED[damage](data), name=f"damaged.{fmt.lower()}")
    assert exc.value.reason == "corrupt", exc.value


def _patch_ispe(data: bytes, width: int, height: int) -> bytes:
    """The same file with its (only) image spatial extents box claiming another size."""
    at = data.index(b"ispe")
    assert data.count(b"ispe") == 1
    return data[: at + 8] + struct.pack(">II", width, height) + data[at + 16 :]


BOMBS: dict[str, Callable[[], bytes]] = {
    # The declared size is what Pillow checks (before decoding) and what libheif then holds the decoder to.
    "heic claiming 20000 x 20000": lambda: _patch_ispe(encode(make_picture(1), "HEIF"), 20_000, 20_000),
    "avif claiming 15000 x 15000": lambda: _patch_ispe(encode(make_picture(1), "AVIF"), 15_000, 15_000),
    "dng sensor of 20000 x 20000 with a preview": lambda: rawgen.dng(make_picture(1), declared=(20_000, 20_000)),
    "dng sensor of 20000 x 20000": lambda: rawgen.dng(make_picture(1), preview=None, declared=(20_000, 20_000)),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_declared_size_is_checked_before_decoding(case: str, tmp_path: Path) -> None:
    path = tmp_path / ("bomb.dng" if "dng" in case else "bomb")
    path.write_bytes(BOMBS[case]())
    outcome = decode_in_child(path)
    assert outcome["reason"] == "too many pixels", outcome
    assert "decompression bomb" in str(outcome["detail"])
    assert outcome["grew_mb"] < FLAT_MB, outcome


def test_heic_that_declares_less_than_it_holds_is_refused(tmp_path: Path) -> None:
    """ispe says 640 x 480, the HEVC stream is 2400 x 2400: libheif will not decode past the declared size."""
    path = tmp_path / "liar.heic"
    path.write_bytes(_patch_ispe(encode(Image.new("RGB", (2400, 2400), (40, 90, 160)), "HEIF", quality=20), 640, 480))
    outcome = decode_in_child(path)
    assert outcome["reason"] == "too many pixels", outcome
    assert outcome["grew_mb"] < 40, outcome  # the 2400 x 2400 picture would be 17 MB as RGB, more as YUV planes


def test_avif_frame_size_is_read_from_its_av1_streams() -> None:
    """Still, with alpha, animated: every AV1 stream's sequence header is found (items and tracks)."""
    still = encode(make_picture(1, (320, 240)), "AVIF")
    alpha = encode(Image.new("RGBA", (50, 40), (255, 0, 0, 128)), "AVIF")
    first, *rest = _frames()
    buffer = io.BytesIO()
    first.save(buffer, "AVIF", save_all=True, append_images=rest, duration=100, speed=8)
    assert avif.frame_sizes(still) == [(320, 240)]
    assert avif.frame_sizes(alpha) == [(50, 40), (50, 40)]  # colour and alpha items
    assert set(avif.frame_sizes(buffer.getvalue())) == {(40, 30)}  # the still item and the track's first frame
    assert avif.frame_sizes(still[:200]) == []  # cut before its data: nothing to go by, libavif refuses it


def test_avif_whose_av1_frame_is_bigger_than_it_declares_is_refused() -> None:
    """ispe says 640 x 480, the AV1 stream is 2400 x 2400: libavif would decode (and allocate) the latter."""
    data = _patch_ispe(encode(Image.new("RGB", (2400, 2400), (40, 90, 160)), "AVIF", speed=10), 640, 480)
    with pytest.raises(ImageLoadError) as exc:
        decode_image(data, max_pixels=4_000_000)
    assert exc.value.reason == "too many pixels"
    assert "AV1 frame of 2400 x 2400" in exc.value.detail


def test_server_limit_applies_to_raw_sensors() -> None:
    data = rawgen.dng(make_picture(2, (1200, 900)), preview=512)
    with pytest.raises(ImageLoadError) as exc:
        decode_image(data, max_pixels=1_000_000)
    assert exc.value.reason == "too many pixels" and "sensor 1200 x 900" in exc.value.detail
    assert decode_image(data, max_pixels=1_100_000).format == "RAW"


# --------------------------------------------------------------------------- multi-frame files


def _frames() -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), c) for c in ((230, 20, 20), (20, 230, 20), (20, 20, 230))]


MULTI_FRAME = {
    "TIFF": dict(format="TIFF"),
    "WEBP": dict(format="WEBP", lossless=True, duration=100),
    "GIF": dict(format="GIF", duration=100),
    "AVIF": dict(format="AVIF", duration=100, speed=8),
}


@pytest.mark.parametrize("fmt", list(MULTI_FRAME))
def test_multi_frame_files_give_their_first_frame(fmt: str) -> None:
    first, *rest = _frames()
    buffer = io.BytesIO()
    first.save(buffer, save_all=True, append_images=rest, **MULTI_FRAME[fmt])
    loaded = decode_image(buffer.getvalue())
    rgb = np.asarray(loaded.image)
    assert loaded.image.size == (40, 30)
    assert rgb[10, 10, 0] > 180 and rgb[10, 10, 1] < 60 and rgb[10, 10, 2] < 60, rgb[10, 10]


# --------------------------------------------------------------------------- through the CLI


def _run(args: list[str], *, block: tuple[str, ...] = ()) -> dict[str, object]:
    """Run the ``lookalike`` CLI in a child process (``block``: modules it must not be able to import)."""
    code = (
        "import importlib.abc, sys\n"
        "class Blocked(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] in {set(block)!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (blocked by the test)', name=name)\n"
        "sys.meta_path.insert(0, Blocked())\n"
        "from lookalike.cli.app import main\n"
        "sys.argv = ['lookalike', *sys.argv[1:]]\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.data
def test_cli_indexes_heic_avif_and_dng_and_finds_each_from_its_original(
    large_photos: list[Image.Image], real_photos: list[Path], tmp_path: Path
) -> None:
    folder, queries = tmp_path / "phone", tmp_path / "queries"
    folder.mkdir()
    queries.mkdir()
    for photo in real_photos[:16]:  # other real photos around them
        shutil.copy(photo, folder / photo.name)
    heic_photo, avif_photo, dng_photo = large_photos
    stored, orientation = sideways(heic_photo)
    exif = Image.Exif()
    exif[0x0112] = orientation
    (folder / "IMG_0001.HEIC").write_bytes(encode(stored, "HEIF", quality=75, exif=exif.tobytes()))
    (folder / "IMG_0002.avif").write_bytes(encode(avif_photo, "AVIF", quality=70))
    stored, orientation = sideways(dng_photo)
    (folder / "DSC_0003.DNG").write_bytes(rawgen.dng(stored, orientation=orientation))
    (folder / "DSC_0004.DNG").write_bytes(rawgen.dng(stored, orientation=orientation, preview=None))
    expected = {}
    for name, photo in (("heic", heic_photo), ("avif", avif_photo), ("dng", dng_photo)):
        photo.save(queries / f"{name}.jpg", quality=90)
        expected[name] = photo

    db = tmp_path / "db"
    report = _run(["index", str(folder), "--db", str(db), "--model", "dhash", "--json", "-q"])
    assert report["skipped"] == [], report["skipped"]
    assert report["added"] == 16 + 4

    result = _run(["search", *(str(queries / f"{n}.jpg") for n in expected), "--db", str(db), "-k", "3", "--json"])
    found = {Path(q["query"]).stem: [Path(r["path"]).name for r in q["results"]] for q in result["queries"]}
    assert found["heic"][0] == "IMG_0001.HEIC", found
    assert found["avif"][0] == "IMG_0002.avif", found
    assert set(found["dng"][:2]) == {"DSC_0003.DNG", "DSC_0004.DNG"}, found  # preview and demosaic alike


def test_cli_skips_heic_and_raw_with_a_reason_when_their_decoders_are_missing(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    make_picture(1).save(folder / "plain.jpg")
    (folder / "phone.heic").write_bytes(encode(make_picture(2), "HEIF"))
    (folder / "web.avif").write_bytes(encode(make_picture(3), "AVIF"))  # Pillow's own: still decoded
    (folder / "camera.dng").write_bytes(rawgen.dng(make_picture(4), preview=None))
    make_picture(5).save(folder / "camera.nef", "TIFF")  # a TIFF named like a Nikon RAW
    args = ["index", str(folder), "--db", str(tmp_path / "db"), "--model", "dhash", "--json", "-q"]
    report = _run(args, block=("pi_heif", "pillow_heif", "rawpy"))
    skipped = {Path(s["path"]).name: (s["reason"], s["detail"]) for s in report["skipped"]}  # type: ignore[attr-defined]
    assert skipped == {
        "phone.heic": ("decoder missing", "HEIC/HEIF support is not installed: pip install pi-heif"),
        "camera.dng": ("decoder missing", "camera RAW support is not installed: pip install rawpy"),
        "camera.nef": ("decoder missing", "camera RAW support is not installed: pip install rawpy"),
    }, report
    assert report["added"] == 2
    # With the decoders installed, the same folder indexes whole (the rerun picks up the three it skipped).
    report = _run(args)
    assert report["skipped"] == [] and report["added"] == 3, report


def test_web_serves_heic_and_raw_items_as_jpeg_and_takes_them_as_queries(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from lookalike.index import Index
    from lookalike.web import create_app

    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(4):
        make_picture(seed).save(folder / f"pic{seed}.png")
    (folder / "phone.heic").write_bytes(encode(make_picture(10), "HEIF"))
    nef = rawgen.dng(make_picture(11, (640, 480)), preview=512)
    (folder / "camera.nef").write_bytes(nef)
    with Index.open(tmp_path / "db", model="dhash") as index:
        report = index.add([folder])
    assert report.added == 6 and not report.skipped, report.skipped
    with TestClient(create_app(tmp_path / "db")) as client:
        items = {it["name"]: it["id"] for it in client.get("/api/items", params={"limit": 50}).json()["items"]}
        for name in ("phone.heic", "camera.nef"):
            response = client.get(f"/api/items/{items[name]}/image")
            assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg", name
            assert Image.open(io.BytesIO(response.content)).format == "JPEG"
        # Uploaded as queries (the "NEF" is the DNG under another name: LibRaw goes by the content).
        for name, data, want in (
            ("IMG_1.HEIC", (folder / "phone.heic").read_bytes(), "phone.heic"),
            ("DSC_1.NEF", nef, "camera.nef"),
        ):
            response = client.post("/api/search", files={"image": (name, data, "application/octet-stream")})
            assert response.status_code == 200, response.text
            assert Path(response.json()["queries"][0]["results"][0]["path"]).name == want
