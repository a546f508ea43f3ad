"""An index on a read-only, full or damaged disk: reads keep working, writes fail in one clear line.

Real file systems, not mocks: a read-only bind mount or ``chattr +i`` (root cannot write through
either), a small tmpfs filled to a few KB for "disk full", and files cut short or overwritten on disk.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import ROOT, make_picture
from lookalike import Index, StoreError
from lookalike.cli.app import app
from lookalike.cli.common import friendly_errors
from lookalike.store import base
from lookalike.store.base import ItemRecord
from lookalike.store.local import LocalStore

runner = CliRunner()
IDENTITY = {"name": "test", "version": "1", "dim": 16, "preprocessing": "none", "input_size": 1}


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _records(n: int, prefix: str = "/x") -> list[ItemRecord]:
    return [ItemRecord(f"{prefix}/{i}.jpg", f"{prefix}{i}", 1, 1, 10, 10) for i in range(n)]


def _cli(args: list[str]) -> tuple[int, str]:
    """Exit code and everything printed (stdout and stderr)."""
    result = runner.invoke(app, args)
    return result.exit_code, result.output


def _cli_json(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _one_line_error(result_output: str) -> str:
    """The CLI's whole complaint: exactly one ``error:`` line and no traceback."""
    assert "Traceback" not in result_output, result_output
    lines = [line for line in result_output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result_output
    return " ".join(lines)  # rich may wrap a long line; the words are what matter


def _index(folder: Path, db: Path) -> None:
    result = runner.invoke(app, ["index", str(folder), "--db", str(db), "--model", "dhash", "-q"])
    assert result.exit_code == 0, result.output


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def _sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True)


@contextmanager
def read_only(folder: Path, how: str) -> Iterator[Path]:
    """``folder`` made read-only for root too; yields the path to open it by. Always undone."""
    if os.geteuid() != 0:  # pragma: no cover - CI runs as root; without root, permission bits bind
        for path in [folder, *folder.iterdir()]:
            path.chmod(path.stat().st_mode & ~0o222)
        try:
            yield folder
        finally:
            for path in [folder, *folder.iterdir()]:
                path.chmod(path.stat().st_mode | 0o200)
        return
    if how == "bind":
        view = folder.with_name(folder.name + "-ro")
        view.mkdir()
        if _sh("mount", "--bind", str(folder), str(view)).returncode:
            pytest.skip("bind mounts are not permitted here")
        try:
            assert _sh("mount", "-o", "remount,bind,ro", str(view)).returncode == 0
            yield view
        finally:
            if _sh("umount", str(view)).returncode:
                _sh("umount", "-l", str(view))
            view.rmdir()
    else:
        paths = [str(p) for p in [folder, *folder.iterdir()]]
        if _sh("chattr", "+i", *paths).returncode:
            pytest.skip("chattr +i is not permitted here")
        try:
            yield folder
        finally:
            _sh("chattr", "-i", *paths)


@contextmanager
def nearly_full_disk(tmp_path: Path, size: str = "4m") -> Iterator[Path]:
    """A small tmpfs; call ``fill(mount)`` to leave ~8 KB free. Always unmounted."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0 or _sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        if _sh("umount", str(mount)).returncode:
            _sh("umount", "-l", str(mount))


def fill(mount: Path, leave: int = 8192) -> None:
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    with open(mount / "filler", "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    assert os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize <= leave


def _serve_checks(db: Path) -> None:
    """What `lookalike serve` does for a reader: open the index, answer health and similar-image calls."""
    from lookalike.web import create_app

    with TestClient(create_app(db)) as client:
        assert client.get("/api/health").json()["items"] == 8
        similar = client.get("/api/items/1/similar", params={"k": 3})
        assert similar.status_code == 200 and len(similar.json()["queries"][0]["results"]) == 3
        assert client.get("/").status_code == 200
        thumbnail = client.get("/api/items/1/thumbnail")  # its default cache folder lies in the index folder
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"


# -- 1. read-only ---------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["bind", "chattr"])
def test_read_only_index_is_searchable_and_refuses_writes(how: str, picture_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    _index(picture_dir, db)
    before = _snapshot(db)
    make_picture(300).save(picture_dir / "new.jpg")
    with read_only(db, how) as view:
        assert _cli_json(["info", "--db", str(view)])["count"] == 8
        code, output = _cli(["search", str(picture_dir / "pic3.jpg"), str(picture_dir / "new.jpg"), "--db", str(view)])
        assert code == 0, output
        assert "groups" in _cli_json(["dups", "--db", str(view)])
        _serve_checks(view)

        code, output = _cli(["index", str(picture_dir), "--db", str(view), "-q"])
        assert code == 2
        assert "read-only" in _one_line_error(output)

        with Index.open(view) as index:
            assert index.store.read_only
            assert len(index.search(str(picture_dir / "new.jpg"), k=3).results) == 3
            with pytest.raises(base.ReadOnlyIndexError, match="read-only"):
                index.add([picture_dir])
    assert _snapshot(db) == before  # nothing was written, not even a cache or a -shm file


def test_read_only_ann_index_is_built_in_memory(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    store = LocalStore(folder, index_kind="hnsw16")
    store.set_model_identity(IDENTITY)
    vecs = _vectors(1000)
    ids = store.add(_records(1000), vecs)
    store.close()
    assert not list(folder.glob("ann-*"))  # no cache yet: a reader must build one
    before = _snapshot(folder)
    with read_only(folder, "bind") as view:
        reader = LocalStore(view, create=False)
        hits = reader.search(vecs[:20], 1)
        assert sum(h[0].id == ids[i] for i, h in enumerate(hits)) >= 19
        assert str(reader.info()["index"]).startswith("hnsw")
        reader.save_search_index()  # a cache it cannot write is skipped, not a crash
        reader.close()
    assert _snapshot(folder) == before


# -- 2. full disk ---------------------------------------------------------------------------------
def test_full_disk_reads_work_and_a_write_fails_in_one_line(picture_dir: Path, tmp_path: Path) -> None:
    with nearly_full_disk(tmp_path) as disk:
        db = disk / "db"
        _index(picture_dir, db)
        make_picture(301).save(picture_dir / "new.jpg")
        fill(disk)
        assert _cli_json(["info", "--db", str(db)])["count"] == 8
        code, output = _cli(["search", str(picture_dir / "new.jpg"), "--db", str(db)])
        assert code == 0, output
        _serve_checks(db)

        code, output = _cli(["index", str(picture_dir), "--db", str(db), "-q"])
        assert code == 2
        assert "no space left on device" in _one_line_error(output)

        (disk / "filler").unlink()
        with Index.open(db) as index:  # consistent: the old committed state, and writable again
            assert len(index) == 8
            assert index.add([picture_dir]).added == 1


def test_disk_full_in_the_middle_of_a_write_keeps_the_last_commit(tmp_path: Path) -> None:
    with nearly_full_disk(tmp_path) as disk:
        store = LocalStore(disk / "db", index_kind="hnsw16")
        store.set_model_identity(IDENTITY)
        vecs = _vectors(1000)
        ids = store.add(_records(1000), vecs)
        vector_file = next((disk / "db").glob("vectors-*.f32"))
        fill(disk)
        hits = store.search(vecs[:20], 1)  # the ANN cache cannot be saved: searched from memory
        assert sum(h[0].id == ids[i] for i, h in enumerate(hits)) >= 19
        with pytest.raises(StoreError, match="no space left on device"):
            store.add(_records(2000, "/big"), _vectors(2000, seed=1))  # 128 KB of rows: ENOSPC mid-append
        assert len(store) == 1000
        assert vector_file.stat().st_size == 1000 * 16 * 4  # the partial rows were cut off again
        with pytest.raises(base.IndexWriteError, match="no space left on device"):
            store.add(_records(1, "/one"), _vectors(1, seed=1))  # the row fits; SQLite's commit does not
        assert len(store) == 1000 and store.get_by_path("/one/0.jpg") is None
        store.close()
        (disk / "filler").unlink()
        reopened = LocalStore(disk / "db")
        assert len(reopened) == 1000
        assert reopened.search(vecs[:1], 1)[0][0].id == ids[0]
        reopened.add(_records(5, "/after"), _vectors(5, seed=2))
        assert len(reopened) == 1005


# -- 3. damaged vector file -----------------------------------------------------------------------
def _cut_vectors(db: Path, keep_rows: int) -> int:
    """Cut the vector file to ``keep_rows`` rows and a few stray bytes; returns the row size."""
    vector_file = db / "vectors-0.f32"
    row_bytes = vector_file.stat().st_size // 8
    with open(vector_file, "r+b") as handle:
        handle.truncate(keep_rows * row_bytes + 7)
    return row_bytes


def test_truncated_vector_file_is_reported_then_repaired(picture_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    _index(picture_dir, db)
    _cut_vectors(db, 5)
    for command in (["info", "--db", str(db)], ["search", str(picture_dir / "pic1.jpg"), "--db", str(db)]):
        code, output = _cli(command)
        assert code == 2, output
        message = _one_line_error(output)
        assert "vectors-0.f32" in message and "3 missing" in message and "lookalike repair" in message
    with pytest.raises(base.DamagedIndexError):
        Index.open(db)

    report = _cli_json(["repair", "--db", str(db)])
    assert len(report["dropped"]) == 3 and report["rows_intact"] == 5
    with Index.open(db) as index:
        assert len(index) == 5
        again = index.add([picture_dir])
        assert (again.added, again.embedded, again.unchanged) == (3, 3, 5)  # exactly the lost ones
        _assert_vectors_match_files(index)


def test_index_run_repairs_a_truncated_vector_file_by_itself(picture_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    _index(picture_dir, db)
    _cut_vectors(db, 6)
    report = _cli_json(["index", str(picture_dir), "--db", str(db)])
    assert (report["added"], report["unchanged"], report["count"]) == (2, 6, 8)
    assert len(report["repaired"]["dropped"]) == 2
    with Index.open(db) as index:
        _assert_vectors_match_files(index)


def test_repair_drops_rows_of_zeros_inside_the_file(picture_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    _index(picture_dir, db)
    vector_file = db / "vectors-0.f32"
    row_bytes = vector_file.stat().st_size // 8
    with open(vector_file, "r+b") as handle:  # a hole: the size is right, the content is gone
        handle.seek(2 * row_bytes)
        handle.write(b"\0" * row_bytes)
    assert len(_cli_json(["repair", "--db", str(db)])["dropped"]) == 1
    with Index.open(db) as index:
        assert index.add([picture_dir]).added == 1
        _assert_vectors_match_files(index)


def _assert_vectors_match_files(index: Index) -> None:
    from lookalike.imaging.load import load_image

    records = list(index.store.items())
    assert len(records) == 8
    fresh = index.model.embed([load_image(r.path).image for r in records])
    stored = index.store.vectors([r.id for r in records])
    assert np.allclose(fresh, stored, atol=1e-5)


# -- 4. zero-byte and garbage database ------------------------------------------------------------
def test_zero_byte_database_is_refused_when_the_folder_holds_an_index(picture_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    _index(picture_dir, db)
    (db / "items.sqlite").write_bytes(b"")
    for command in (["info", "--db", str(db)], ["index", str(picture_dir), "--db", str(db), "-q"]):
        code, output = _cli(command)
        assert code == 2, output
        assert "items.sqlite" in _one_line_error(output) and "0 bytes" in output
    assert (db / "items.sqlite").stat().st_size == 0  # not silently turned into a new, empty index
    with pytest.raises(base.DamagedIndexError):
        LocalStore(db)


def test_zero_byte_database_in_an_empty_folder_is_a_new_index(tmp_path: Path) -> None:
    db = tmp_path / "db"
    db.mkdir()
    (db / "items.sqlite").write_bytes(b"")  # what a process killed while creating the index leaves
    with pytest.raises(StoreError, match="no lookalike index"):
        LocalStore(db, create=False)
    assert (db / "items.sqlite").stat().st_size == 0
    store = LocalStore(db)
    store.set_model_identity(IDENTITY)
    store.add(_records(3), _vectors(3))
    assert len(store) == 3


def test_garbage_database_is_a_clear_error(picture_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    _index(picture_dir, db)
    (db / "items.sqlite").write_bytes(os.urandom(8192))
    for command in (["info", "--db", str(db)], ["index", str(picture_dir), "--db", str(db), "-q"]):
        code, output = _cli(command)
        assert code == 2, output
        assert "not a lookalike index database" in _one_line_error(output)
    with pytest.raises(base.DamagedIndexError, match=r"items\.sqlite"):
        LocalStore(db)
    # and as a real process: one line on stderr, exit 2, no traceback
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike", "search", str(picture_dir / "pic1.jpg"), "--db", str(db)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and "items.sqlite" in proc.stderr


# -- 5. the CLI never shows a traceback -----------------------------------------------------------
def test_friendly_errors_turns_sqlite_and_os_errors_into_one_line(tmp_path: Path, capsys) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(typer.Exit) as exit_info, friendly_errors():
        sqlite3.connect(garbage).execute("SELECT 1 FROM sqlite_master").fetchall()
    assert exit_info.value.exit_code == 2
    assert "file is not a database" in _one_line_error(capsys.readouterr().err)

    folder = tmp_path / "locked"
    folder.mkdir()
    with read_only(folder, "bind") as view, pytest.raises(typer.Exit) as exit_info, friendly_errors(view):
        (view / "new-file").write_bytes(b"x")
    assert exit_info.value.exit_code == 2
    message = _one_line_error(capsys.readouterr().err)
    assert str(view) in message and ("read-only" in message or "denied" in message)


def test_every_command_that_opens_an_index_uses_friendly_errors() -> None:
    import inspect

    for command in app.registered_commands:
        source = inspect.getsource(inspect.unwrap(command.callback))  # type: ignore[arg-type]
        wrapped = getattr(command.callback, "__wrapped__", None) is not None
        assert "friendly_errors(" in source or wrapped, command.name
