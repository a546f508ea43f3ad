"""``dups --quarantine DIR --link hard|symbolic`` (issue 16): a duplicate's name is taken by a link to
the kept copy, the original goes to quarantine, and ``restore`` removes the link and puts it back.

Real photos, the real CLI, the cheap dHash model (links do not depend on the model).
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookalike.cli.app import app
from lookalike.imaging.load import open_rgb
from lookalike.index import Index

runner = CliRunner()
qmod = importlib.import_module("lookalike.dedup.quarantine")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(root: Path) -> dict[str, tuple[str, bool]]:
    """Every name under ``root``: (sha256 of its bytes, whether it is a symlink)."""
    return {str(p): (_sha(p), p.is_symlink()) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def collection(tmp_path: Path, real_photos: list[Path]) -> dict[str, Path]:
    """Six real photos, an exact copy of one (newer: the original is kept) and a re-encoded copy of another."""
    root = tmp_path / "photos"
    root.mkdir()
    for i, src in enumerate(real_photos[:6]):
        image = open_rgb(src)
        image.thumbnail((640, 640))
        image.save(root / f"photo{i}.jpg", quality=90)
    copy = root / "photo0 copy.jpg"
    shutil.copyfile(root / "photo0.jpg", copy)
    image = open_rgb(root / "photo1.jpg")
    image.save(root / "photo1 small.jpg", quality=75)
    for n, path in enumerate(sorted(root.iterdir())):  # the copies are the newer files: the originals are kept
        stamp = 1_600_000_000 + (10_000 if "copy" in path.name or "small" in path.name else n)
        os.utime(path, (stamp, stamp))
    db = tmp_path / "db"
    with Index.open(db, model="dhash") as index:
        index.add([root])
    return {"root": root, "db": db, "quarantine": tmp_path / "quarantine", "tmp": tmp_path}


def _dups(c: dict[str, Path], *extra: str) -> tuple[int, str]:
    args = ["dups", "--db", str(c["db"]), "--keep", "oldest", "--quarantine", str(c["quarantine"]), *extra]
    result = runner.invoke(app, args)
    return result.exit_code, result.output


@pytest.mark.parametrize("kind", ["hard", "symbolic"])
def test_link_takes_the_duplicates_name_and_restore_undoes_it_exactly(kind: str, collection: dict[str, Path]) -> None:
    root, qdir = collection["root"], collection["quarantine"]
    before = _state(root)
    copy, small = root / "photo0 copy.jpg", root / "photo1 small.jpg"
    originals = {copy: _sha(copy), small: _sha(small)}
    code, output = _dups(collection, "--link", kind, "--json")
    assert code == 0, output
    doc = json.loads(output)
    moved = {o["path"]: o for o in doc["quarantine"]["moved"]}
    assert set(moved) == {str(copy), str(small)}
    for dup, kept in ((copy, root / "photo0.jpg"), (small, root / "photo1.jpg")):
        assert moved[str(dup)]["link"] == kind and moved[str(dup)]["link_target"] == str(kept)
        if kind == "hard":
            assert not dup.is_symlink() and os.path.samefile(dup, kept) and kept.stat().st_nlink == 2
        else:
            assert dup.is_symlink() and os.readlink(dup) == str(kept)
        assert _sha(dup) == _sha(kept)  # the path still opens a picture: the kept one
        assert _sha(Path(moved[str(dup)]["new_path"])) == originals[dup]  # the original is safe in quarantine
    assert not list(root.glob(".*lookalike-link"))
    manifest = Path(doc["quarantine"]["manifest"])
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert {e.get("link") for e in entries if e["state"] == "moved"} == {kind}

    result = runner.invoke(app, ["restore", str(manifest), "--json"])
    assert result.exit_code == 0, result.output
    assert _state(root) == before  # links gone, originals back byte for byte, no leftovers
    assert (root / "photo0.jpg").stat().st_nlink == 1
    assert not [p for p in qdir.rglob("*") if p.is_file() and p.suffix != ".jsonl"]
    with Index.open(collection["db"], create=False) as index:
        assert {Path(r.path).name for r in index.store.items()} >= {copy.name, small.name}


def test_link_needs_quarantine_and_a_known_kind(collection: dict[str, Path]) -> None:
    before = _state(collection["root"])
    result = runner.invoke(app, ["dups", "--db", str(collection["db"]), "--link", "hard"])
    assert result.exit_code == 2 and "--link needs --quarantine" in result.output
    code, output = _dups(collection, "--link", "soft")
    assert code == 2 and "unknown --link 'soft'" in output
    assert _state(collection["root"]) == before


@pytest.fixture
def other_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path | None]:
    """A folder on another file system (a tmpfs), or None: then the link step fails with EXDEV as the
    kernel does across disks."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        folder = Path(tempfile.mkdtemp(prefix="lookalike-test-", dir=shm))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:

        def no_link(target: str, at: Path) -> None:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(at))

        monkeypatch.setattr(qmod, "_make_hard_link", no_link)
        yield None


def test_a_hard_link_across_file_systems_is_refused_and_loses_nothing(
    collection: dict[str, Path], other_disk: Path | None
) -> None:
    root, db = collection["root"], collection["db"]
    copy = root / "photo0 copy.jpg"
    if other_disk is not None:  # the duplicate lives on another disk than its kept copy
        shutil.move(copy, other_disk / copy.name)
        copy = other_disk / copy.name
        shutil.rmtree(db)
        with Index.open(db, model="dhash") as index:
            index.add([root, other_disk])
    before = {**_state(root), **_state(copy.parent)}
    code, output = _dups(collection, "--link", "hard")
    assert code == 1, output
    line = next(line for line in output.splitlines() if str(copy) in line and "skipped" in line)
    assert "a hard link cannot join two file systems" in line and "use a symbolic link" in line
    assert _sha(copy) == before[str(copy)][0] and not copy.is_symlink()  # still there, untouched
    assert not list(copy.parent.glob(".*lookalike-link"))
    assert not (collection["quarantine"] / copy.name).exists()
    with Index.open(db, create=False) as index:
        assert index.store.get_by_path(str(copy)) is not None  # still indexed
    # a symbolic link crosses file systems
    code, output = _dups(collection, "--link", "symbolic")
    assert code == 0, output
    assert copy.is_symlink() and os.readlink(copy) == str(root / "photo0.jpg")


def test_a_changed_kept_copy_is_never_linked_to(collection: dict[str, Path]) -> None:
    root = collection["root"]
    kept, copy = root / "photo0.jpg", root / "photo0 copy.jpg"
    copy_sha = _sha(copy)
    with kept.open("ab") as handle:
        handle.write(b"edited since the review")
    code, output = _dups(collection, "--link", "symbolic")
    assert code == 1 and "changed since it was indexed" in output, output
    assert not copy.is_symlink() and _sha(copy) == copy_sha


class _Killed(BaseException):
    """Stands in for kill -9: nothing after it runs, no except clause catches it."""


@pytest.mark.parametrize("stage", ["before_replace", "after_replace"])
def test_a_run_killed_mid_link_leaves_a_manifest_restore_completes(
    collection: dict[str, Path], monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """Killed with the original in both places and the link waiting, or just after the link took the
    name (before the manifest says "moved"): restore puts every original back, byte for byte."""
    root = collection["root"]
    before = _state(root)
    real_replace = os.replace
    if stage == "before_replace":

        def replace(src: object, dst: object) -> None:
            raise _Killed

    else:

        def replace(src: object, dst: object) -> None:
            real_replace(src, dst)  # type: ignore[arg-type]
            raise _Killed

    monkeypatch.setattr(qmod.os, "replace", replace)
    with pytest.raises(_Killed):
        runner.invoke(
            app,
            [
                "dups",
                "--db",
                str(collection["db"]),
                "--keep",
                "oldest",
                "--quarantine",
                str(collection["quarantine"]),
                "--link",
                "hard",
            ],
            catch_exceptions=False,
        )
    monkeypatch.setattr(qmod.os, "replace", real_replace)
    manifest = next(collection["quarantine"].glob("manifest-*.jsonl"))
    assert [json.loads(line)["state"] for line in manifest.read_text().splitlines()][-1] == "planned"
    result = runner.invoke(app, ["restore", str(manifest)])
    assert result.exit_code == 0, result.output
    assert _state(root) == before
    assert not list(root.glob(".*lookalike-link"))
    assert (root / "photo0.jpg").stat().st_nlink == 1
