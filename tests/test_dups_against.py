"""``lookalike dups --against LIBRARY`` (issue 16): the files of one index that another already holds.

Real photos through the real CLI and the default model: a library of 12 photos, and a new folder with an
exact copy, an edited (cropped, shrunk, re-encoded) copy and an unrelated photo.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike.audit import check
from lookalike.cli.app import app
from lookalike.imaging.load import open_rgb
from lookalike.index import Index

runner = CliRunner()


def _photo(path: Path, longest: int = 640) -> Image.Image:
    image = open_rgb(path)
    image.thumbnail((longest, longest))
    return image


def _shas(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def two_indexes(tmp_path: Path, real_photos: list[Path]) -> dict[str, Path]:
    lib, new = tmp_path / "library", tmp_path / "new"
    lib.mkdir()
    new.mkdir()
    for i, src in enumerate(real_photos[:12]):
        _photo(src).save(lib / f"lib{i:02d}.jpg", quality=90)
    shutil.copyfile(lib / "lib03.jpg", new / "exact.jpg")
    edited = _photo(real_photos[7])
    w, h = edited.size
    edited.crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize((500, int(500 * h / w))).save(
        new / "edited.jpg", quality=60
    )
    _photo(real_photos[-1]).save(new / "unrelated.jpg", quality=90)
    with Index.open(tmp_path / "libdb") as index:
        index.add([lib])
    with Index.open(tmp_path / "newdb") as index:
        index.add([new])
    return {"lib": lib, "new": new, "libdb": tmp_path / "libdb", "newdb": tmp_path / "newdb", "tmp": tmp_path}


def _against(t: dict[str, Path], *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["dups", "--db", str(t["newdb"]), "--against", str(t["libdb"]), *extra])
    return result.exit_code, result.output


def test_against_finds_exact_and_near_copies_by_the_rule_of_check(two_indexes: dict[str, Path]) -> None:
    t = two_indexes
    code, output = _against(t, "--json")
    assert code == 0, output
    doc = json.loads(output)
    status = {Path(f["path"]).name: f for f in doc["files"]}
    assert status["exact.jpg"]["status"] == "exact"
    assert Path(status["exact.jpg"]["matches"][0]["path"]).name == "lib03.jpg"
    assert status["edited.jpg"]["status"] == "near"
    assert Path(status["edited.jpg"]["matches"][0]["path"]).name == "lib07.jpg"
    assert status["unrelated.jpg"]["status"] == "new" and not status["unrelated.jpg"]["matches"]
    assert doc["counts"] == {"exact": 1, "near": 1, "new": 1, "unreadable": 0, "in_library": 0}
    # one rule: checking the same files (embedded afresh) gives the same answers and matches
    with Index.open(t["libdb"], create=False) as library:
        checked = {Path(r.path).name: r for r in check(library, [t["new"]])}
    for name, entry in status.items():
        assert checked[name].status == entry["status"], name
        assert [m.record.path for m in checked[name].matches] == [m["path"] for m in entry["matches"]], name

    code, text = _against(t)
    assert code == 0, text
    assert "exact" in text and "lib03.jpg" in text and "2 already in the library, 1 new" in text
    assert "dry run: nothing moved" in text


def test_against_quarantine_moves_only_the_new_side_copies_and_restore_undoes(two_indexes: dict[str, Path]) -> None:
    t = two_indexes
    library_before, new_before = _shas(t["lib"]), _shas(t["new"])
    qdir = t["tmp"] / "quarantine"
    code, output = _against(t, "--quarantine", str(qdir), "--json")
    assert code == 0, output
    doc = json.loads(output)
    assert sorted(Path(o["path"]).name for o in doc["quarantine"]["moved"]) == ["edited.jpg", "exact.jpg"]
    assert _shas(t["lib"]) == library_before  # the library's files are never touched
    assert sorted(Path(p).name for p in _shas(t["new"])) == ["unrelated.jpg"]
    assert (qdir / "exact.jpg").exists() and (qdir / "edited.jpg").exists()
    with Index.open(t["libdb"], create=False) as library:
        assert len(library) == 12
    manifest = Path(doc["quarantine"]["manifest"])
    assert "copy of" in manifest.read_text() and str(t["libdb"]) in manifest.read_text()
    result = runner.invoke(app, ["restore", str(manifest)])
    assert result.exit_code == 0, result.output
    assert _shas(t["new"]) == new_before


def test_against_an_index_of_another_model_is_refused_and_nothing_moves(two_indexes: dict[str, Path]) -> None:
    t = two_indexes
    with Index.open(t["tmp"] / "dhashdb", model="dhash") as index:
        index.add([t["lib"]])
    new_before = _shas(t["new"])
    qdir = t["tmp"] / "quarantine"
    result = runner.invoke(
        app, ["dups", "--db", str(t["newdb"]), "--against", str(t["tmp"] / "dhashdb"), "--quarantine", str(qdir)]
    )
    assert result.exit_code == 2, result.output
    assert "different models" in result.output and "dhash" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert _shas(t["new"]) == new_before and not qdir.exists()


def test_a_file_the_library_holds_itself_is_never_a_copy_to_move(two_indexes: dict[str, Path]) -> None:
    """Overlapping indexes: a file indexed in both, or inside the library's folders, is the library's."""
    t = two_indexes
    shared = t["lib"] / "lib05.jpg"
    with Index.open(t["newdb"], create=False) as index:
        index.add([t["new"], shared])
    qdir = t["tmp"] / "quarantine"
    code, output = _against(t, "--quarantine", str(qdir), "--json")
    assert code == 0, output
    doc = json.loads(output)
    status = {f["path"]: f["status"] for f in doc["files"]}
    assert status[str(shared)] == "in_library"
    assert shared.exists() and str(shared) not in {o["path"] for o in doc["quarantine"]["moved"]}


def test_against_option_errors(two_indexes: dict[str, Path]) -> None:
    t = two_indexes
    for extra, message in (
        (["--precision", "0.99"], "--precision cannot be combined with --against"),
        (["--keep", "oldest"], "--keep cannot be combined with --against"),
        (["--html", str(t["tmp"] / "x.html")], "--html cannot be combined"),
    ):
        code, output = _against(t, *extra)
        assert code == 2 and message in output, output
    result = runner.invoke(app, ["dups", "--db", str(t["newdb"]), "--against", str(t["newdb"])])
    assert result.exit_code == 2 and "the same one" in result.output, result.output
    result = runner.invoke(app, ["dups", "--db", str(t["newdb"]), "--against", str(t["tmp"] / "nothing")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def test_against_with_links_points_the_new_side_names_at_the_library(two_indexes: dict[str, Path]) -> None:
    t = two_indexes
    library_before, new_before = _shas(t["lib"]), _shas(t["new"])
    code, output = _against(t, "--quarantine", str(t["tmp"] / "q"), "--link", "symbolic", "--json")
    assert code == 0, output
    exact = t["new"] / "exact.jpg"
    assert exact.is_symlink() and os.readlink(exact) == str(t["lib"] / "lib03.jpg")
    assert _shas(t["lib"]) == library_before
    result = runner.invoke(app, ["restore", json.loads(output)["quarantine"]["manifest"]])
    assert result.exit_code == 0, result.output
    assert _shas(t["new"]) == new_before and not exact.is_symlink()
