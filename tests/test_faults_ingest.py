"""Faults a hostile run found in ``lookalike index`` (issue #13), reproduced with real files and processes.

Each test runs the real CLI in a child process, as a user would, and then checks the index against
the files on disk: every indexed path must carry the sha256 and the vector of its *current* content.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import make_picture
from lookalike import Index
from lookalike.models.registry import DEFAULT_MODEL
from lookalike.web.thumbnails import ThumbnailCache

ROOT = Path(__file__).resolve().parents[1]
MODEL = "dhash"  # the ingest logic is model-independent; a hash model keeps the child processes quick


def lookalike(*args: str | os.PathLike[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process; a traceback or non-zero exit fails the test with its stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike", *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"lookalike {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def index_json(folder: Path, db: Path, *extra: str, model: str = MODEL) -> dict:
    return json.loads(lookalike("index", folder, "--db", db, "--model", model, "--json", *extra).stdout)


def assert_index_matches_disk(db: Path) -> int:
    """Every item's sha256 and vector are those of the file now at its path; returns the item count."""
    with Index.open(db, create=False) as index:
        items = list(index.store.items())
        for item in items:
            data = Path(item.path).read_bytes()
            assert item.sha256 == hashlib.sha256(data).hexdigest(), f"stale content hash for {item.path}"
        stored = index.store.vectors([item.id for item in items])
        fresh = index.embed([item.path for item in items])
        mismatched = [items[i].path for i in np.flatnonzero(~np.isclose((stored * fresh).sum(1), 1.0, atol=1e-5))]
        assert not mismatched, f"stale vectors for {mismatched}"
        return len(items)


def test_swapping_two_files_contents_is_indexed_in_one_run(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(10):
        make_picture(i).save(photos / f"p{i}.jpg", quality=90)
    db = tmp_path / "db"
    index_json(photos, db)
    a, b, swap = photos / "p2.jpg", photos / "p7.jpg", photos / "swap.tmp"
    os.rename(a, swap)
    os.rename(b, a)
    os.rename(swap, b)

    report = index_json(photos, db)  # crashed with IndexError in ingest.py before the fix

    assert report["count"] == 10
    assert (report["updated"], report["unchanged"], report["embedded"]) == (2, 8, 0)  # vectors reused, not redone
    assert assert_index_matches_disk(db) == 10


def test_content_the_sink_stashes_while_a_worker_asks_stays_known(tmp_path: Path) -> None:
    """The swap above once embedded one file in CI (embedded 1, not 0): a worker asked "is this content
    indexed?" while the sink was overwriting the path that held it. The sink stashes the vector, then the
    store forgets the row; a worker that looked at the stash *before* and at the store *after* saw
    neither. This plays that interleaving exactly: the sink acts right after the stash is looked at."""
    from lookalike.ingest import _KnownHashes

    photos = tmp_path / "photos"
    photos.mkdir()
    make_picture(0).save(photos / "p0.jpg", quality=90)
    db = tmp_path / "db"
    index_json(photos, db)
    with Index.open(db, create=False) as index:
        store = index.store
        (item,) = list(store.items())

        class SinkActsAfterThisLook(dict):
            def __contains__(self, key: object) -> bool:
                seen = dict.__contains__(self, key)
                if not dict.__contains__(self, item.sha256):  # the sink, on the other thread
                    self[item.sha256] = (store.vectors([item.id]), item)
                    store.remove([item.id])
                return seen

        known = _KnownHashes(store, SinkActsAfterThisLook())
        assert known(item.sha256), "content moved from the store to the stash read as unknown"


def test_backup_copy_then_resaved_originals_is_indexed_in_one_run(tmp_path: Path, real_photos: list[Path]) -> None:
    """The hostile run's second case: a backup of the folder, then the originals re-saved smaller.

    With the default model (batches of 32) the first batch of re-saved originals is committed before
    the backup's files, hashed earlier as "known", look for the content it just replaced.
    """
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, src in enumerate(real_photos[:40]):
        Image.open(src).convert("RGB").save(photos / f"photo{i:02d}.jpg", quality=88)
    db = tmp_path / "db"
    assert index_json(photos, db, model=DEFAULT_MODEL)["count"] == 40
    shutil.copytree(photos, tmp_path / "zbackup", copy_function=shutil.copy2)  # cp -rp
    for path in sorted(photos.iterdir()):
        with Image.open(path) as img:
            img.thumbnail((800, 800))
            img.save(path, quality=85)

    report = index_json(tmp_path, db, model=DEFAULT_MODEL)

    assert report["count"] == 80
    assert assert_index_matches_disk(db) == 80


def test_a_file_rewritten_with_its_old_size_and_mtime_is_caught_by_rehash(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        make_picture(i).save(photos / f"p{i}.bmp")  # BMP: the same pixel size gives the same byte size
    db = tmp_path / "db"
    index_json(photos, db)
    target = photos / "p1.bmp"
    before = os.stat(target)
    make_picture(99).save(target)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(target).st_size == before.st_size

    assert index_json(photos, db)["unchanged"] == 4  # (size, mtime) cannot see it: documented
    report = index_json(photos, db, "--rehash")

    assert (report["updated"], report["embedded"], report["unchanged"]) == (1, 1, 3)
    assert assert_index_matches_disk(db) == 4


def test_an_interrupted_moves_partial_file_is_never_indexed(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        make_picture(i).save(photos / f"p{i}.jpg")
    make_picture(50).save(photos / ".p9.jpg.lookalike-partial", format="JPEG")  # a complete-looking partial copy
    db = tmp_path / "db"

    report = index_json(photos, db)
    explicit = index_json(photos / ".p9.jpg.lookalike-partial", db)

    assert report["count"] == 3
    with Index.open(db, create=False) as index:
        assert all(not item.path.endswith(".lookalike-partial") for item in index.store.items())
    assert [s["reason"] for s in explicit["skipped"]] == ["partial copy"]


def test_an_index_inside_the_indexed_folder_never_indexes_its_own_thumbnails(tmp_path: Path) -> None:
    pictures = tmp_path / "Pictures"
    pictures.mkdir()
    for i in range(6):
        make_picture(i).save(pictures / f"p{i}.jpg", quality=90)
    # cd ~/Pictures && lookalike index .   (the default --db lookalike.db lands inside the folder)
    first = json.loads(lookalike("index", ".", "--model", MODEL, "--json", cwd=pictures).stdout)
    db = pictures / "lookalike.db"
    assert first["count"] == 6
    # What `serve` does for every item shown: thumbnails under the index folder ...
    with Index.open(db, create=False) as index:
        items = list(index.store.items())
    for size in (320, 1024):
        cache = ThumbnailCache(db / "thumbnails", size=size)
        for item in items:
            cache.get(item.path, item.sha256)
    # ... or under --thumbnails somewhere inside the collection; and a quarantine folder in it.
    custom = ThumbnailCache(pictures / "thumbs")
    for item in items:
        custom.get(item.path, item.sha256)
    (pictures / "quarantine").mkdir()
    make_picture(3).save(pictures / "quarantine" / "p3-moved.jpg", quality=90)
    header = {"state": "header", "version": 1, "db": str(db), "quarantine": str(pictures / "quarantine")}
    (pictures / "quarantine" / "manifest-20260101-000000.jsonl").write_text(json.dumps(header) + "\n")

    again = json.loads(lookalike("index", ".", "--model", MODEL, "--json", cwd=pictures).stdout)
    dups = json.loads(lookalike("dups", "--json", cwd=pictures).stdout)

    assert again["count"] == 6, again
    assert (again["added"], again["unchanged"]) == (0, 6)
    assert sorted(again["excluded"]) == sorted(str(p) for p in (db, pictures / "thumbs", pictures / "quarantine"))
    assert dups["groups"] == [], dups


def test_thumbnails_an_older_version_indexed_leave_the_index_once_tagged(tmp_path: Path) -> None:
    pictures = tmp_path / "Pictures"
    (pictures / "thumbs").mkdir(parents=True)
    for i in range(4):
        make_picture(i).save(pictures / f"p{i}.jpg", quality=90)
        make_picture(i).resize((160, 120)).save(pictures / "thumbs" / f"t{i}.jpg")  # untagged: indexed
    db = tmp_path / "db"
    assert index_json(pictures, db)["count"] == 8
    # The Cache Directory Tagging spec's tag, which lookalike now writes into every cache folder it makes.
    (pictures / "thumbs" / "CACHEDIR.TAG").write_bytes(b"Signature: 8a477f597d28d172789f06886806bc55\n")

    report = index_json(pictures, db)

    assert (report["count"], report["removed"]) == (4, 4)
    assert report["excluded"] == [str(pictures / "thumbs")]
