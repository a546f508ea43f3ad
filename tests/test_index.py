"""Indexing is incremental, recognises moves and copies, reports bad files, and never mixes models."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import make_picture
from lookalike import Index, ModelMismatchError
from lookalike.cli.app import app
from lookalike.ingest import Progress

runner = CliRunner()


def test_incremental_reindex_embeds_only_new_and_changed(picture_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    with Index.open(db, model="dhash") as index:
        first = index.add([picture_dir])
        assert (first.added, first.embedded, len(index)) == (8, 8, 8)

        again = index.add([picture_dir])
        assert (again.added, again.updated, again.embedded, again.unchanged) == (0, 0, 0, 8)

        make_picture(100).save(picture_dir / "new.png")
        make_picture(101).save(picture_dir / "pic0.jpg")  # same path, new content
        third = index.add([picture_dir])
        assert (third.added, third.updated, third.embedded, third.unchanged) == (1, 1, 2, 7)
        assert len(index) == 9


def test_moved_file_is_recognised_by_hash_and_not_reembedded(picture_dir: Path, tmp_path: Path) -> None:
    with Index.open(tmp_path / "db", model="dhash") as index:
        index.add([picture_dir])
        before = index.store.get_by_path(str(picture_dir / "pic3.jpg"))
        assert before is not None
        (picture_dir / "moved").mkdir()
        shutil.move(picture_dir / "pic3.jpg", picture_dir / "moved" / "renamed.jpg")
        report = index.add([picture_dir])
        assert (report.moved, report.embedded, report.added, report.removed) == (1, 0, 0, 0)
        after = index.store.get_by_path(str(picture_dir / "moved" / "renamed.jpg"))
        assert after is not None and after.id == before.id
        assert len(index) == 8


def test_copy_reuses_vector_and_deleted_files_leave(picture_dir: Path, tmp_path: Path) -> None:
    with Index.open(tmp_path / "db", model="dhash") as index:
        index.add([picture_dir])
        shutil.copy(picture_dir / "pic1.jpg", picture_dir / "copy.jpg")
        (picture_dir / "pic2.jpg").unlink()
        report = index.add([picture_dir])
        assert (report.copied, report.embedded, report.removed) == (1, 0, 1)
        a = index.store.get_by_path(str(picture_dir / "pic1.jpg"))
        b = index.store.get_by_path(str(picture_dir / "copy.jpg"))
        assert a and b and np.array_equal(index.store.vectors([a.id]), index.store.vectors([b.id]))
        assert index.store.get_by_path(str(picture_dir / "pic2.jpg")) is None


def test_search_ranks_the_same_picture_first_and_excludes_itself_by_path(picture_dir: Path, tmp_path: Path) -> None:
    with Index.open(tmp_path / "db") as index:  # the default model
        index.add([picture_dir])
        query = tmp_path / "query.jpg"
        make_picture(5).resize((200, 150)).save(query, quality=60)
        result = index.search(query, k=3)
        assert result.results[0].path == str(picture_dir / "pic5.jpg")
        assert result.results[0].score > result.results[1].score
        assert not result.no_match
        by_path = index.search(str(picture_dir / "pic5.jpg"), k=3)
        assert str(picture_dir / "pic5.jpg") not in [m.path for m in by_path.results]
        by_id = index.similar(result.results[0].id, k=3)
        assert [m.id for m in by_id.results] == [m.id for m in by_path.results]


def test_refuses_a_different_model(picture_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    with Index.open(db, model="dhash") as index:
        index.add([picture_dir])
    with pytest.raises(ModelMismatchError, match="dhash"):
        Index.open(db, model="phash")
    # Same name, different preprocessing recorded: refused too.
    with Index.open(db) as index:
        identity = dict(index.store.model_identity or {})
        identity["preprocessing"] = "something-else"
        index.store.set_meta("model", identity)
    with Index.open(db) as index, pytest.raises(ModelMismatchError, match="preprocessing"):
        index.add([picture_dir])


def _write_bad_files(folder: Path) -> dict[str, str]:
    """One file per awkward case; returns file name -> expected skip reason (None = indexed)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").write_bytes(b"")
    good = io.BytesIO()
    make_picture(7).save(good, "JPEG")
    (folder / "truncated.jpg").write_bytes(good.getvalue()[:3000])
    (folder / "random.jpg").write_bytes(os.urandom(4096))
    (folder / "readme.txt").write_text("not a picture")
    Image.new("1", (20_000, 20_000)).save(folder / "bomb.png", optimize=True)
    (folder / "a folder.jpg").mkdir()
    pal = make_picture(8).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(folder / "palette.png", transparency=0)
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(folder / "deep16.png")
    make_picture(9).convert("L").save(folder / "gray.png")
    make_picture(10).convert("CMYK").save(folder / "cmyk.jpg")
    make_picture(11).save(folder / "anim.gif", save_all=True, append_images=[make_picture(12)])
    make_picture(13).save(folder / "photo.webp")
    make_picture(14).save(folder / "naïve name with spaces.jpg")
    return {
        "zero.jpg": "empty file",
        "truncated.jpg": "corrupt",
        "random.jpg": "not an image",
        "readme.txt": "not an image",
        "bomb.png": "too many pixels",
    }


def test_bad_files_are_skipped_with_reasons_and_the_rest_indexed(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    expected_skips = _write_bad_files(folder)
    os.symlink(folder, folder / "loop")
    result = runner.invoke(app, ["index", str(folder), "--db", str(tmp_path / "db"), "--model", "dhash", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    for name, reason in expected_skips.items():
        assert reasons.get(name) == reason, (name, reasons)
    assert reasons.get("loop") == "symlink loop"
    assert report["count"] == report["added"] == 7  # palette, 16-bit, gray, CMYK, GIF, WebP, non-ASCII name
    # Re-running reports the same bad files again without re-decoding them and adds nothing.
    again = json.loads(runner.invoke(app, ["index", str(folder), "--db", str(tmp_path / "db"), "--json"]).stdout)
    assert again["embedded"] == 0 and again["unchanged"] == 7
    assert {Path(s["path"]).name for s in again["skipped"]} == set(reasons)


def test_folder_disappearing_during_the_run(picture_dir: Path, tmp_path: Path) -> None:
    sub = picture_dir / "vanishing"
    sub.mkdir()
    for i in range(3):
        make_picture(50 + i).save(sub / f"v{i}.jpg")

    class DeleteAfterDiscovery(Progress):
        def found(self, total: int) -> None:
            shutil.rmtree(sub)

    with Index.open(tmp_path / "db", model="dhash") as index:
        report = index.add([picture_dir], progress=DeleteAfterDiscovery())
        assert report.added == 8
        assert sorted(s.reason for s in report.skipped) == ["missing"] * 3
        assert len(index) == 8


def test_cli_search_json_contract(picture_dir: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    assert runner.invoke(app, ["index", str(picture_dir), "--db", db, "-q"]).exit_code == 0
    query = tmp_path / "q.jpg"
    make_picture(2).crop((10, 10, 300, 230)).save(query)
    result = runner.invoke(app, ["search", str(query), str(picture_dir / "pic4.jpg"), "--db", db, "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert [q["query"] for q in doc["queries"]] == [str(query), str(picture_dir / "pic4.jpg")]
    first = doc["queries"][0]
    assert isinstance(first["no_match"], bool) and len(first["results"]) == 3
    assert first["results"][0]["path"] == str(picture_dir / "pic2.jpg")
    scores = [r["score"] for r in first["results"]]
    assert scores == sorted(scores, reverse=True)
    by_id = json.loads(runner.invoke(app, ["search", "--id", "1", "--db", db, "--json"]).stdout)
    assert by_id["queries"][0]["query"] == "id:1" and all(r["id"] != 1 for r in by_id["queries"][0]["results"])
    info = json.loads(runner.invoke(app, ["info", "--db", db, "--json"]).stdout)
    assert info["count"] == 8 and info["model"] == "mobilenet_v2_ml" and info["dimensions"] == 1376
    missing = runner.invoke(app, ["search", str(tmp_path / "nope.jpg"), "--db", db, "--json"])
    assert missing.exit_code == 1 and "missing" in json.loads(missing.stdout)["queries"][0]["error"]


def test_search_on_missing_index_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", "x.jpg", "--db", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no lookalike index" in result.stderr


def test_exif_rotated_copy_embeds_like_the_upright_picture(tmp_path: Path) -> None:
    folder = tmp_path / "exif"
    folder.mkdir()
    upright = make_picture(21, (320, 200))
    upright.save(folder / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(folder / "sideways.jpg", exif=exif.tobytes(), quality=95)
    upright.transpose(Image.Transpose.ROTATE_90).save(folder / "sideways_no_exif.jpg", quality=95)
    with Index.open(tmp_path / "db") as index:
        index.add([folder])
        ids = {Path(r.path).name: r.id for r in index.store.items()}
        up, side, raw = index.store.vectors([ids["upright.jpg"], ids["sideways.jpg"], ids["sideways_no_exif.jpg"]])
        assert float(up @ side) > 0.98  # EXIF applied: the same picture
        assert float(up @ raw) < float(up @ side) - 0.05  # really rotated pixels look different
        rec = index.store.get(ids["sideways.jpg"])
        assert rec is not None and (rec.width, rec.height) == (320, 200)


def test_unreadable_file_is_skipped_and_reported(picture_dir: Path, tmp_path: Path, monkeypatch) -> None:
    locked = picture_dir / "locked.jpg"
    make_picture(77).save(locked)
    if os.geteuid() != 0:  # pragma: no cover - CI runs as root, where permission bits do not bind
        locked.chmod(0)
    else:
        import builtins

        real_open = builtins.open

        def guarded_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
            if os.fspath(file) == str(locked):
                raise PermissionError(13, "Permission denied", str(locked))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded_open)
    with Index.open(tmp_path / "db", model="dhash") as index:
        report = index.add([picture_dir])
    assert report.added == 8
    assert [(Path(s.path).name, s.reason) for s in report.skipped] == [("locked.jpg", "unreadable")]
