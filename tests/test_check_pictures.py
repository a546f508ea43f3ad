"""The geometric check's small copies kept in the index (lookalike.imaging.checkpicture, issue #17).

Indexing keeps a 320 px greyscale copy of each new picture; the check reads that copy instead of
decoding the file again. Checked on real photos: a quarter-turned copy is confirmed from the kept
copies when the files themselves no longer decode, a damaged copy falls back to the file, copies
leave with the last item holding their content, and none are kept past the size where ``dups``
checks by default.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

import lookalike.dedup.groups as groups_module
import lookalike.imaging.checkpicture as checkpicture
from lookalike.dedup.groups import find_duplicate_groups
from lookalike.dedup.verify import GeometricCheck
from lookalike.imaging.checkpicture import CHECK_SIDE, PICTURE_KIND, decode_check_picture
from lookalike.index import Index


def _photo_folder(real_photos: list[Path], root: Path) -> Path:
    """A real photo, its quarter turn, and two other photos of the collection."""
    folder = root / "photos"
    folder.mkdir()
    photo = Image.open(real_photos[0]).convert("RGB")
    photo.thumbnail((640, 640))
    photo.save(folder / "original.jpg", quality=90)
    photo.transpose(Image.Transpose.ROTATE_90).save(folder / "turned.jpg", quality=90)
    for i, other in enumerate(real_photos[1:3]):
        image = Image.open(other).convert("RGB")
        image.thumbnail((640, 640))
        image.save(folder / f"other{i}.jpg", quality=90)
    return folder


@pytest.fixture
def indexed(real_photos: list[Path], tmp_path: Path) -> tuple[Path, Path]:
    folder = _photo_folder(real_photos, tmp_path)
    db = tmp_path / "db"
    with Index.open(db) as index:
        index.add([folder], calibrate=False)
    return folder, db


def test_indexing_keeps_a_small_grey_copy_of_each_picture(indexed: tuple[Path, Path]) -> None:
    _, db = indexed
    with Index.open(db, create=False) as index:
        records = list(index.store.items())
        kept = index.store.pictures(PICTURE_KIND, [rec.sha256 for rec in records])
        info = index.info()
    assert set(kept) == {rec.sha256 for rec in records}
    assert info["check_pictures"] == len(records)
    assert info["check_pictures_bytes"] == sum(map(len, kept.values())) < info["size_bytes"]
    for rec in records:
        image = decode_check_picture(kept[rec.sha256])
        assert image.mode == "L"
        assert max(image.size) <= CHECK_SIDE
        # the copy shows the picture the right way up: its aspect is the file's
        assert abs(image.width / image.height - rec.width / rec.height) < 0.02


def test_the_check_reads_the_kept_copies_instead_of_the_files(indexed: tuple[Path, Path]) -> None:
    folder, db = indexed
    for path in folder.iterdir():  # the files no longer decode: only the kept copies can answer
        path.write_bytes(b"not a picture any more" * 100)
    with Index.open(db, create=False) as index:
        by_name = {Path(rec.path).stem: rec for rec in index.store.items()}
        kept = GeometricCheck(stores=[index.store])
        assert kept.confirms(by_name["original"], by_name["turned"])
        assert not kept.confirms(by_name["original"], by_name["other0"])
        assert kept.from_index == 3 and kept.unreadable == 0
        from_files = GeometricCheck()
        assert not from_files.confirms(by_name["original"], by_name["turned"])
        assert from_files.unreadable == 2

        groups = find_duplicate_groups(index.store, verify=GeometricCheck(stores=[index.store]))
    grouped = [{Path(rec.path).stem for rec in (g.keep, *g.duplicates)} for g in groups]
    assert {"original", "turned"} in grouped


def test_a_damaged_kept_copy_falls_back_to_the_file(indexed: tuple[Path, Path]) -> None:
    _, db = indexed
    with Index.open(db, create=False) as index:
        by_name = {Path(rec.path).stem: rec for rec in index.store.items()}
        index.store.add_pictures(PICTURE_KIND, {by_name["turned"].sha256: b"\xff\xd8 damaged"})
        check = GeometricCheck(stores=[index.store])
        assert check.confirms(by_name["original"], by_name["turned"])
        assert check.from_index == 1 and check.decoded == 2  # the original's copy, the turned file


def test_kept_copies_leave_with_the_last_item_holding_their_content(indexed: tuple[Path, Path]) -> None:
    folder, db = indexed
    shutil.copy(folder / "other0.jpg", folder / "other0-copy.jpg")
    with Index.open(db, create=False) as index:
        index.add([folder], calibrate=False)
        sha = index.store.get_by_path(str(folder / "other0.jpg")).sha256
        assert len(index.store.find_by_sha256(sha)) == 2
        (folder / "other0.jpg").unlink()
        index.add([folder], calibrate=False)
        assert sha in index.store.pictures(PICTURE_KIND, [sha])  # the copy's file still holds it
        (folder / "other0-copy.jpg").unlink()
        index.add([folder], calibrate=False)
        assert index.store.pictures(PICTURE_KIND, [sha]) == {}
        # a file whose content changes drops the old content's copy and keeps the new one's
        old = index.store.get_by_path(str(folder / "other1.jpg")).sha256
        Image.open(folder / "original.jpg").rotate(180).save(folder / "other1.jpg", quality=80)
        index.add([folder], calibrate=False)
        new = index.store.get_by_path(str(folder / "other1.jpg")).sha256
        assert new != old
        assert set(index.store.pictures(PICTURE_KIND, [old, new])) == {new}


def test_dups_checks_by_default_as_far_as_copies_are_kept() -> None:
    assert groups_module.VERIFY_AUTO_LIMIT == checkpicture.VERIFIED_UP_TO


def test_no_copies_are_kept_past_the_size_dups_checks_by_default(
    real_photos: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _photo_folder(real_photos, tmp_path)
    monkeypatch.setattr(checkpicture, "VERIFIED_UP_TO", 3)  # 4 files: past the limit
    with Index.open(tmp_path / "db") as index:
        index.add([folder], calibrate=False)
        shas = [rec.sha256 for rec in index.store.items()]
        assert len(shas) == 4
        assert index.store.pictures(PICTURE_KIND, shas) == {}


def test_no_copy_is_kept_where_the_draft_decode_is_smaller_than_the_check_reads(
    real_photos: list[Path], tmp_path: Path
) -> None:
    """A 1200 x 900 JPEG decodes at a quarter (300 x 225) for the model; the check reads it at
    320 x 240, so the index keeps no copy of it and the check reads the file (and still confirms)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = Image.open(real_photos[0]).convert("RGB").resize((1200, 900))
    photo.save(folder / "large.jpg", quality=90)
    photo.resize((640, 480)).save(folder / "small.jpg", quality=90)
    with Index.open(tmp_path / "db") as index:
        index.add([folder], calibrate=False)
        by_name = {Path(rec.path).stem: rec for rec in index.store.items()}
        kept = index.store.pictures(PICTURE_KIND, [rec.sha256 for rec in by_name.values()])
        assert set(kept) == {by_name["small"].sha256}
        check = GeometricCheck(stores=[index.store])
        assert check.confirms(by_name["large"], by_name["small"])
        assert check.from_index == 1 and check.decoded == 2
