"""Quarantine and restore: the safety rules of issue 4, each a test. Uses the cheap pHash model."""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imagegen import jpeg_bytes, scene
from lookalike.cli.app import app
from lookalike.dedup.quarantine import QuarantineError, quarantine, read_manifest, restore, restore_files
from lookalike.index import Index
from lookalike.store.base import ItemRecord

runner = CliRunner()
SRC = str(Path(__file__).resolve().parents[1] / "src")
TESTS = str(Path(__file__).resolve().parent)
qmod = importlib.import_module("lookalike.dedup.quarantine")  # the module; the package exports a function of that name


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _all_contents(*folders: Path) -> list[str]:
    """sha256 of every image file under the folders (manifests excluded): what 'nothing deleted' compares."""
    return sorted(_sha(p) for f in folders for p in f.rglob("*") if p.is_file() and p.suffix != ".jsonl")


@pytest.fixture
def collection(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "photos"
    for i in range(8):
        folder = root / ("cars" if i < 5 else "misc") / ("sub" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i}.jpg").write_bytes(jpeg_bytes(scene(100 + i, (160, 120))))
    db = tmp_path / "db"
    with Index.open(db, model="phash") as index:
        index.add([root])
    return {"root": root, "db": db, "quarantine": tmp_path / "quarantine", "tmp": tmp_path}


def _records(db: Path, names: list[str]) -> list[ItemRecord]:
    with Index.open(db, create=False) as index:
        recs = [r for r in index.store.items() if Path(r.path).name in names]
    assert len(recs) == len(names)
    return recs


def test_round_trip_is_byte_identical(collection: dict[str, Path]) -> None:
    root, db, qdir = collection["root"], collection["db"], collection["quarantine"]
    before = {p: p.read_bytes() for p in root.rglob("*.jpg")}
    recs = _records(db, ["img1.jpg", "img6.jpg"])
    with Index.open(db, create=False) as index:
        report = quarantine(index.store, recs, qdir, reason="test sweep")
        assert len(report.moved) == 2 and not report.skipped and report.removed_from_index == 2
        assert len(index) == 6 and all(index.store.get_by_path(r.path) is None for r in recs)
    for rec in recs:  # moved, keeping the path relative to the indexed root
        rel = Path(rec.path).relative_to(root)
        assert not Path(rec.path).exists() and (qdir / rel).read_bytes() == before[Path(rec.path)]
    header, entries = read_manifest(report.manifest)
    assert header["db"] == str(db.absolute())
    assert {e["original"] for e in entries} == {r.path for r in recs}
    assert all(e["state"] == "moved" and e["reason"] == "test sweep" and e["sha256"] for e in entries)

    restored = restore(report.manifest)
    assert len(restored.restored) == 2 and not restored.skipped and restored.reindexed == 2
    assert {p: p.read_bytes() for p in root.rglob("*.jpg")} == before
    assert not list(qdir.rglob("*.jpg"))
    with Index.open(db, create=False) as index:
        assert len(index) == 8 and all(index.store.get_by_path(r.path) for r in recs)
        assert index.store.get_meta("roots") == [str(root)]
    assert restore(report.manifest).skipped == []  # running it again is harmless


def test_name_collisions_never_overwrite(collection: dict[str, Path], tmp_path: Path) -> None:
    root, db, qdir = collection["root"], collection["db"], collection["quarantine"]
    rec = _records(db, ["img0.jpg"])[0]
    rel = Path(rec.path).relative_to(root)
    squatter = qdir / rel
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"someone else's file")
    original = Path(rec.path).read_bytes()
    with Index.open(db, create=False) as index:
        report = quarantine(index.store, [rec], qdir, reason="collision")
    new = Path(report.moved[0].new_path)
    assert new == squatter.with_name("img0 (1).jpg") and new.read_bytes() == original
    assert squatter.read_bytes() == b"someone else's file"
    assert restore(report.manifest).restored[0].path == rec.path
    assert Path(rec.path).read_bytes() == original and squatter.exists()


def test_changed_or_deleted_since_review_is_skipped(collection: dict[str, Path]) -> None:
    db, qdir = collection["db"], collection["quarantine"]
    changed, deleted, fine = _records(db, ["img2.jpg", "img3.jpg", "img4.jpg"])
    Path(changed.path).write_bytes(jpeg_bytes(scene(999, (160, 120))))  # edited after the review
    new_content = Path(changed.path).read_bytes()
    os.rename(deleted.path, collection["tmp"] / "elsewhere.jpg")
    with Index.open(db, create=False) as index:
        report = quarantine(index.store, [changed, deleted, fine], qdir, reason="review")
        assert [o.path for o in report.moved] == [fine.path]
        reasons = {o.path: o.reason for o in report.skipped}
        assert "sha256 differs" in reasons[changed.path] and "missing" in reasons[deleted.path]
        assert index.store.get_by_path(changed.path) is not None  # skipped items stay indexed
    assert Path(changed.path).read_bytes() == new_content


def test_never_moves_files_outside_the_indexed_roots(collection: dict[str, Path]) -> None:
    root, db, qdir, tmp = collection["root"], collection["db"], collection["quarantine"], collection["tmp"]
    outside = tmp / "outside"
    outside.mkdir()
    victim = outside / "precious.jpg"
    victim.write_bytes(jpeg_bytes(scene(7, (64, 48))))
    (root / "escape").symlink_to(outside)  # a symlinked folder inside the root pointing out of it
    sha = _sha(victim)
    forged = [
        ItemRecord(str(victim), sha, victim.stat().st_size, 0, 64, 48, id=10_001),
        ItemRecord(str(root / "escape" / "precious.jpg"), sha, victim.stat().st_size, 0, 64, 48, id=10_002),
        ItemRecord(str(root), sha, 1, 0, 1, 1, id=10_003),  # the root itself
    ]
    with Index.open(db, create=False) as index:
        report = quarantine(index.store, forged, qdir, reason="attack")
    assert not report.moved and len(report.skipped) == 3
    assert all("outside the indexed folders" in o.reason for o in report.skipped)
    assert victim.exists() and _sha(victim) == sha


def test_quarantine_folder_inside_root_is_refused(collection: dict[str, Path]) -> None:
    root, db = collection["root"], collection["db"]
    with Index.open(db, create=False) as index, pytest.raises(QuarantineError, match="inside the indexed folder"):
        quarantine(index.store, _records(db, ["img0.jpg"]), root / "trash", reason="x")
    assert not (root / "trash").exists()


def test_restore_does_not_overwrite_a_new_file_at_the_original_path(collection: dict[str, Path]) -> None:
    db, qdir = collection["db"], collection["quarantine"]
    rec = _records(db, ["img5.jpg"])[0]
    with Index.open(db, create=False) as index:
        report = quarantine(index.store, [rec], qdir, reason="x")
    Path(rec.path).write_bytes(b"a new file with the old name")
    result = restore(report.manifest)
    assert not result.restored and "another file" in result.skipped[0].reason
    assert Path(rec.path).read_bytes() == b"a new file with the old name"
    assert Path(report.moved[0].new_path).exists()


_KILL_SCRIPT = """
import sys, time
sys.path[:0] = [{src!r}, {tests!r}]
from pathlib import Path
import importlib
q = importlib.import_module("lookalike.dedup.quarantine")  # the module, not the function of that name
from lookalike.index import Index

stage, ready = sys.argv[1], Path(sys.argv[2])
calls = 0
real_move = q._move_no_overwrite

def slow_move(src, dst, sha256, **kw):
    global calls
    calls += 1
    if calls == 3:  # freeze in the middle of the third move and wait for kill -9
        if stage == "after_link":
            dst.parent.mkdir(parents=True, exist_ok=True)
            q.os.link(src, q._free_name(dst))
        ready.write_text("ready")
        time.sleep(600)
    return real_move(src, dst, sha256, **kw)

q._move_no_overwrite = slow_move
index = Index.open(sys.argv[3], create=False)
recs = sorted(index.store.items(), key=lambda r: r.path)
q.quarantine(index.store, recs, sys.argv[4], reason="killed run", manifest=sys.argv[5])
"""


@pytest.mark.parametrize("stage", ["before_link", "after_link"])
def test_kill_9_during_a_move_leaves_a_manifest_restore_completes(collection: dict[str, Path], stage: str) -> None:
    root, db, qdir, tmp = collection["root"], collection["db"], collection["quarantine"], collection["tmp"]
    before = {p: p.read_bytes() for p in root.rglob("*.jpg")}
    contents = _all_contents(root)
    ready, manifest = tmp / "ready", tmp / "run.jsonl"
    script = tmp / "kill_me.py"
    script.write_text(_KILL_SCRIPT.format(src=SRC, tests=TESTS))
    proc = subprocess.Popen([sys.executable, str(script), stage, str(ready), str(db), str(qdir), str(manifest)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "the quarantine process died on its own"
            assert time.monotonic() < deadline, "the quarantine process never reached the third move"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    states = [json.loads(line)["state"] for line in manifest.read_text().splitlines()]
    assert states == ["header", "planned", "moved", "planned", "moved", "planned"]  # killed mid-move
    assert _all_contents(root, qdir) == contents or stage == "after_link"  # nothing lost
    assert set(_all_contents(root, qdir)) == set(contents)

    result = restore(manifest, Index.open(db, create=False))
    assert len(result.restored) == 3 and not result.skipped
    assert {p: p.read_bytes() for p in root.rglob("*.jpg")} == before
    assert not list(qdir.rglob("*.jpg"))  # the extra hard link of the interrupted move is gone too
    with Index.open(db, create=False) as index:
        assert len(index) == 8


def test_cli_sweep_quarantine_and_restore(collection: dict[str, Path]) -> None:
    root, db, qdir = collection["root"], collection["db"], collection["quarantine"]
    example = str(next(root.rglob("img0.jpg")))
    dry = runner.invoke(app, ["sweep", "--like", example, "--db", str(db), "--threshold", "0.99", "--json"])
    assert dry.exit_code == 0, dry.output
    doc = json.loads(dry.stdout)
    assert doc["count"] == 1 and doc["matches"][0]["path"] == example and Path(example).exists()  # dry run
    moved = runner.invoke(
        app, ["sweep", "--like", example, "--db", str(db), "--threshold", "0.99", "--quarantine", str(qdir), "--json"]
    )
    assert moved.exit_code == 0, moved.output
    report = json.loads(moved.stdout)["quarantine"]
    assert [m["path"] for m in report["moved"]] == [example] and not Path(example).exists()
    entry = json.loads(Path(report["manifest"]).read_text().splitlines()[-1])
    assert set(entry) >= {"original", "new", "sha256", "time", "reason"} and "sweep like=" in entry["reason"]
    back = runner.invoke(app, ["restore", report["manifest"], "--json"])
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["reindexed"] == 1 and Path(example).exists()


def test_cli_dups_quarantine_moves_only_non_kept_copies(collection: dict[str, Path]) -> None:
    root, db, qdir = collection["root"], collection["db"], collection["quarantine"]
    original = next(root.rglob("img0.jpg"))
    copy = root / "misc" / "img0 copy.jpg"
    copy.write_bytes(original.read_bytes())
    os.utime(copy, ns=(original.stat().st_mtime_ns + 10**9,) * 2)  # newer: the original is kept
    with Index.open(db, create=False) as index:
        index.add([root])
    result = runner.invoke(app, ["dups", "--db", str(db), "--quarantine", str(qdir), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["groups"] == [{"keep": str(original), "duplicates": [str(copy)], "scores": [1.0]}]
    assert original.exists() and not copy.exists() and (qdir / "misc" / "img0 copy.jpg").exists()
    marked = runner.invoke(app, ["dups", "--db", str(db), "--not-dup", str(original), str(root / "misc" / "img6.jpg")])
    assert marked.exit_code == 0 and "marked" in marked.stdout


# -- issue 13: hostile runs -----------------------------------------------------------------------
PARTIAL = ".lookalike-partial"


def _partials(*folders: Path) -> list[Path]:
    return sorted(p for f in folders if f.exists() for p in f.rglob(f"*{PARTIAL}"))


def _no_link(src: str, dst: Path) -> None:
    raise OSError(errno.EXDEV, "Invalid cross-device link (test stand-in for a second disk)", str(dst))


@pytest.fixture
def other_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, bool]]:
    """(folder on another file system than tmp_path, forced). Moves into it copy instead of linking.

    A tmpfs (/dev/shm) where there is one; otherwise a folder in tmp_path with the module's link step
    failing with EXDEV as the kernel does across disks (forced=True: subprocesses must do the same).
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        folder = Path(tempfile.mkdtemp(prefix="lookalike-test-", dir=shm))
        try:
            yield folder, False
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        monkeypatch.setattr(qmod, "_hard_link", _no_link)
        yield tmp_path / "other-disk", True


_COPY_KILL_SCRIPT = """
import errno, os, sys, time
sys.path[:0] = [{src!r}, {tests!r}]
from pathlib import Path
import importlib
q = importlib.import_module("lookalike.dedup.quarantine")
from lookalike.index import Index

action, stage, ready, db, qdir, manifest, forced = sys.argv[1:8]
if forced == "1":
    def no_link(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(dst))
    q._hard_link = no_link
copies = 0
real_sha = q.sha256_file

def verify_then_freeze(path):
    global copies
    digest = real_sha(path)
    name = os.path.basename(path)
    if name.endswith(".lookalike-partial"):  # the cross-device copy is written and fsynced: being verified
        copies += 1
        if copies == 2:  # freeze in the second copy and wait for kill -9
            if stage == "half":  # what a kill in the middle of writing leaves
                os.truncate(path, os.path.getsize(path) // 2)
            elif stage == "linked":  # what a kill right after the copy got its real name leaves
                os.link(path, os.path.join(os.path.dirname(path), name[1 : -len(".lookalike-partial")]))
            Path(ready).write_text(str(path))
            time.sleep(600)
    return digest

q.sha256_file = verify_then_freeze
index = Index.open(db, create=False)
if action == "quarantine":
    recs = sorted(index.store.items(), key=lambda r: r.path)
    q.quarantine(index.store, recs, qdir, reason="killed run", manifest=manifest)
else:
    q.restore(manifest, index)
"""


def _copy_and_kill(
    action: str,
    stage: str,
    c: dict[str, Path],
    qdir: Path,
    manifest: Path,
    forced: bool,
    while_frozen: Callable[[Path], None] | None = None,
) -> Path:
    """Run quarantine or restore in a subprocess, SIGKILL it during its second cross-device copy; the partial."""
    ready, script = c["tmp"] / f"ready-{action}", c["tmp"] / "copy_kill.py"
    script.write_text(_COPY_KILL_SCRIPT.format(src=SRC, tests=TESTS))
    args = [action, stage, str(ready), str(c["db"]), str(qdir), str(manifest), "1" if forced else "0"]
    proc = subprocess.Popen([sys.executable, str(script), *args])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "the process died on its own"
            assert time.monotonic() < deadline, "the process never reached its second copy"
            time.sleep(0.05)
        if while_frozen is not None:
            while_frozen(Path(ready.read_text()))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return Path(ready.read_text())


@pytest.mark.parametrize(
    ("stage", "rerun"),
    [
        ("half", "quarantine"),
        ("complete", "quarantine"),
        ("linked", "quarantine"),
        ("complete", "restore"),
        ("linked", "restore"),
    ],
)
def test_cross_device_quarantine_killed_mid_copy_completes_on_rerun(
    collection: dict[str, Path], other_disk: tuple[Path, bool], stage: str, rerun: str
) -> None:
    root, db, tmp = collection["root"], collection["db"], collection["tmp"]
    qdir = other_disk[0] / "quarantine"
    before = {p: p.read_bytes() for p in root.rglob("*.jpg")}
    manifest = tmp / "killed.jsonl"
    partial = _copy_and_kill("quarantine", stage, collection, qdir, manifest, other_disk[1])
    assert partial.parent.is_relative_to(qdir) and partial.exists()
    on_disk = [p.read_bytes() for p in [*root.rglob("*.jpg"), *qdir.rglob("*.jpg")]]
    assert set(before.values()) <= set(on_disk)  # nothing lost: each file whole under some name

    if rerun == "quarantine":
        with Index.open(db, create=False) as index:
            recs = sorted((r for r in index.store.items() if os.path.exists(r.path)), key=lambda r: r.path)
            again = quarantine(index.store, recs, qdir, reason="run again")
        assert not again.skipped, again.skipped
        assert not list(root.rglob("*.jpg")) and not _partials(root, qdir)
        assert sorted(p.read_bytes() for p in qdir.rglob("*.jpg")) == sorted(before.values())  # no stray copy
        assert not restore(manifest).skipped and not restore(again.manifest).skipped
    else:
        result = restore(manifest)
        assert not result.skipped, result.skipped
    assert {p: p.read_bytes() for p in root.rglob("*.jpg")} == before
    assert not list(qdir.rglob("*.jpg")) and not _partials(root, qdir)
    with Index.open(db, create=False) as index:
        assert len(index) == 8


@pytest.mark.parametrize("stage", ["half", "complete"])
def test_cross_device_restore_killed_mid_copy_completes_on_rerun(
    collection: dict[str, Path], other_disk: tuple[Path, bool], stage: str
) -> None:
    root, db = collection["root"], collection["db"]
    qdir = other_disk[0] / "quarantine"
    before = {p: p.read_bytes() for p in root.rglob("*.jpg")}
    recs = _records(db, ["img1.jpg", "img2.jpg", "img6.jpg"])
    with Index.open(db, create=False) as index:
        report = quarantine(index.store, recs, qdir, reason="across disks")
    assert len(report.moved) == 3 and not _partials(root, qdir) and not any(Path(r.path).exists() for r in recs)

    def live_copy_is_left_alone(partial: Path) -> None:
        """A second restore while the first is still copying: the partial is not taken over."""
        size = partial.stat().st_size
        live, _ = restore_files(report.manifest)
        reasons = {o.path: o.reason for o in live.skipped}
        original = str(partial.with_name(partial.name[1 : -len(PARTIAL)]))
        assert "another process" in reasons.get(original, ""), reasons
        assert partial.stat().st_size == size and not os.path.exists(original)

    check = live_copy_is_left_alone if stage == "complete" else None
    partial = _copy_and_kill("restore", stage, collection, qdir, Path(report.manifest), other_disk[1], check)
    assert partial.parent.is_relative_to(root) and partial.exists()
    original = partial.with_name(partial.name[1 : -len(PARTIAL)])
    assert not original.exists()
    assert (qdir / original.relative_to(root)).read_bytes() == before[original]  # the source is kept
    result = restore(report.manifest)
    assert len(result.restored) == 3 and not result.skipped, result.skipped
    assert result.reindexed == 3
    assert {p: p.read_bytes() for p in root.rglob("*.jpg")} == before
    assert not list(qdir.rglob("*.jpg")) and not _partials(root, qdir)
    with Index.open(db, create=False) as index:
        assert len(index) == 8


_SWEEP_KILL_SCRIPT = """
import sys, time
sys.path[:0] = [{src!r}, {tests!r}]
from pathlib import Path
import importlib
q = importlib.import_module("lookalike.dedup.quarantine")
from lookalike.cli.app import app

ready = Path(sys.argv[1])
calls = 0
real_move = q._move_no_overwrite

def freeze_on_third(src, dst, sha256, **kw):
    global calls
    calls += 1
    if calls == 3:  # two files moved: freeze before the third and wait for kill -9
        ready.write_text("ready")
        time.sleep(600)
    return real_move(src, dst, sha256, **kw)

q._move_no_overwrite = freeze_on_third
app(sys.argv[2:], prog_name="lookalike")
"""


def test_sweep_killed_midway_leaves_an_index_of_existing_files(collection: dict[str, Path]) -> None:
    root, db, qdir, tmp = collection["root"], collection["db"], collection["quarantine"], collection["tmp"]
    before = {p: p.read_bytes() for p in root.rglob("*.jpg")}
    ready, script = tmp / "ready", tmp / "sweep_kill.py"
    script.write_text(_SWEEP_KILL_SCRIPT.format(src=SRC, tests=TESTS))
    example = str(next(root.rglob("img0.jpg")))
    args = ["sweep", "--like", example, "--db", str(db), "--threshold", "-1", "--quarantine", str(qdir)]
    proc = subprocess.Popen([sys.executable, str(script), str(ready), *args])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "the sweep died on its own"
            assert time.monotonic() < deadline, "the sweep never reached its third move"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(list(qdir.rglob("*.jpg"))) == 2
    with Index.open(db, create=False) as index:
        listed = [r.path for r in index.store.items()]
    missing = [p for p in listed if not os.path.exists(p)]
    assert not missing, f"the index still lists moved files: {missing}"
    assert len(listed) == 6

    (manifest,) = qdir.glob("manifest-*.jsonl")
    result = restore(manifest)
    assert len(result.restored) == 3 and not result.skipped  # the third: planned, never moved, in place
    assert {p: p.read_bytes() for p in root.rglob("*.jpg")} == before
    with Index.open(db, create=False) as index:
        assert len(index) == 8


def test_restore_writes_only_inside_the_indexed_folders(collection: dict[str, Path]) -> None:
    root, db, qdir, tmp = collection["root"], collection["db"], collection["quarantine"], collection["tmp"]
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True)
    qdir.mkdir()
    payload = qdir / "payload"
    payload.write_bytes(b"ssh-ed25519 AAAAC3Nza attacker@example\n")
    (root / "escape").symlink_to(home)  # a symlinked folder inside the root leading out of it
    good = qdir / "misc" / "good.jpg"
    good.parent.mkdir()
    good.write_bytes(jpeg_bytes(scene(321, (160, 120))))
    mine = tmp / "mine.jpg"  # a user's file outside the quarantine folder
    mine.write_bytes(jpeg_bytes(scene(322, (160, 120))))
    header = {"state": "header", "version": 1, "db": str(db), "quarantine": str(qdir), "roots": [str(tmp)]}
    entries = [
        (home / ".ssh" / "authorized_keys", payload),  # outside every indexed folder
        (Path(f"{root}/../home/.ssh/authorized_keys2"), payload),  # climbs out with ..
        (root / "escape" / ".ssh" / "authorized_keys3", payload),  # through the symlinked folder
        ("relative/authorized_keys4", payload),  # not absolute
        (root / "misc" / "mine.jpg", mine),  # takes a file from outside the quarantine folder
        (root / "misc" / "good.jpg", good),  # the one honest entry
    ]
    manifest = tmp / "crafted.jsonl"
    lines = [header] + [
        {"state": "moved", "original": str(o), "new": str(n), "sha256": _sha(n), "time": 0, "reason": "x"}
        for o, n in entries
    ]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))

    result = runner.invoke(app, ["restore", str(manifest), "--json"])
    assert result.exit_code == 1, result.output  # some entries skipped, no crash
    doc = json.loads(result.stdout)
    assert [o["path"] for o in doc["restored"]] == [str(root / "misc" / "good.jpg")]
    reasons = {o["path"]: o["reason"] for o in doc["skipped"]}
    assert len(reasons) == 5
    for original, _ in entries[:3]:
        assert "outside the indexed folders" in reasons[str(original)] or ".." in reasons[str(original)]
    assert "absolute" in reasons["relative/authorized_keys4"]
    assert "outside the quarantine folder" in reasons[str(root / "misc" / "mine.jpg")]
    assert list((home / ".ssh").iterdir()) == []  # nothing written outside the indexed folders
    assert not Path("relative").exists()
    assert payload.exists() and mine.exists() and not (root / "misc" / "mine.jpg").exists()
    assert (root / "misc" / "good.jpg").exists()


def test_a_partial_name_taken_by_a_link_to_a_user_file_is_never_written_through(
    collection: dict[str, Path], other_disk: tuple[Path, bool]
) -> None:
    root, db, tmp = collection["root"], collection["db"], collection["tmp"]
    qdir = other_disk[0] / "quarantine"
    precious = other_disk[0] / "precious.txt"  # on the quarantine's disk, so a hard link to it can exist
    precious.parent.mkdir(parents=True, exist_ok=True)
    precious.write_bytes(b"the user's own file")
    recs = _records(db, ["img0.jpg", "img2.jpg"])
    for rec, kind in zip(recs, ["symlink", "hardlink"], strict=True):
        partial = qdir / Path(rec.path).relative_to(root).parent / f".{Path(rec.path).name}{PARTIAL}"
        partial.parent.mkdir(parents=True, exist_ok=True)
        if kind == "symlink":
            partial.symlink_to(precious)
        else:
            os.link(precious, partial)
    with Index.open(db, create=False) as index:
        report = quarantine(index.store, recs, qdir, reason="x")
        assert not report.moved and all("in the way" in o.reason for o in report.skipped), report.skipped
        assert all(index.store.get_by_path(r.path) for r in recs)  # still indexed: still there
    assert precious.read_bytes() == b"the user's own file"
    assert all(Path(r.path).exists() for r in recs) and not list(qdir.rglob("*.jpg"))
    assert tmp.exists()
