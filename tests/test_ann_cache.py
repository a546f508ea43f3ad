"""The ANN cache of a store folder on its own: which file it trusts, what it prunes, where it falls back."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from lookalike.store.ann_cache import AnnCache
from lookalike.store.vector_index import AnnIndex, probe_file

DIM = 16
KIND = "ivf8,flat,nprobe2"  # small and quick to train; a fixed nprobe writes no probe-policy file
TAG = "vectors0"


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class Harness:
    """A cache over an in-memory "vector file", with the store's side of the contract."""

    def __init__(self, folder: Path, kind: str = KIND, *, read_only: bool = False) -> None:
        self.lock = threading.RLock()
        self.replaced = 0
        self.cache = AnnCache(
            folder,
            kind,
            read_only=read_only,
            lock=self.lock,
            vector_tag=lambda: TAG,
            on_replace=self._replaced,
        )

    def _replaced(self) -> None:
        self.replaced += 1

    def search_index(self, x: np.ndarray) -> AnnIndex:
        with self.lock:
            index = self.cache.search_index(x, np.ones(len(x), bool))
        assert isinstance(index, AnnIndex)
        return index


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _overwrite(path: Path, data: bytes) -> None:
    """Damage a cache file as a new inode: this process may still map the old one (cut under a map: SIGBUS)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.replace(path)


def _finds_itself(index: AnnIndex, x: np.ndarray) -> bool:
    return bool((index.search(x[:20], 1)[1][:, 0] == np.arange(20)).all())


def test_background_retrain_replaces_the_file_and_prunes_the_old_one(tmp_path: Path) -> None:
    x = _vectors(2000)
    harness = Harness(tmp_path)
    first = harness.search_index(x[:400])  # no cache yet: built now, saved, reopened memory-mapped
    assert _files(tmp_path) == ["ann-ivf8_flat-vectors0-400-400.faiss"] and first.path == tmp_path / _files(tmp_path)[0]
    serving = harness.search_index(x)  # grown 5x: the old index serves with an exact tail meanwhile
    assert serving.trained == 400 and serving.tail == 1600 and _finds_itself(serving, x)
    harness.cache.wait(60)
    assert harness.cache.bg_error is None and harness.replaced == 1
    assert _files(tmp_path) == ["ann-ivf8_flat-vectors0-2000-2000.faiss"]  # exactly one file, no temp left
    fresh = harness.search_index(x)
    assert fresh.trained == 2000 and fresh.tail == 0 and _finds_itself(fresh, x)


def test_a_damaged_file_is_passed_over_and_rebuilt(tmp_path: Path) -> None:
    x = _vectors(600)
    good = Harness(tmp_path).search_index(x[:400]).path
    assert good is not None
    newer = tmp_path / "ann-ivf8_flat-vectors0-600-600.faiss"
    _overwrite(newer, good.read_bytes()[:500])  # cut short: its name promises more than it holds
    reopened = Harness(tmp_path).search_index(x)
    assert reopened.path == good and reopened.covered == 400 and reopened.tail == 200  # the older, whole file
    assert _finds_itself(reopened, x)

    _overwrite(good, b"not a faiss index" * 100)  # now no file can be trusted
    rebuilt = Harness(tmp_path).search_index(x)
    assert rebuilt.covered == 600 and rebuilt.tail == 0 and _finds_itself(rebuilt, x)
    assert _files(tmp_path) == [newer.name]  # the rebuild replaced the broken files (pruned)
    assert AnnIndex.load(rebuilt.spec, newer).covered == 600


def test_a_file_past_the_committed_slots_is_not_used(tmp_path: Path) -> None:
    x = _vectors(600)
    Harness(tmp_path).search_index(x)  # covers 600 slots
    fewer = Harness(tmp_path).search_index(x[:450])  # e.g. the last rows were never committed
    assert fewer.covered == 450 and fewer.tail == 0
    assert _files(tmp_path) == ["ann-ivf8_flat-vectors0-450-450.faiss"]


def test_an_orphan_probe_file_is_removed_and_the_real_one_kept(tmp_path: Path) -> None:
    x = _vectors(1000)
    tuned = Harness(tmp_path, "ivf8,flat").search_index(x)  # no nprobe: measured, saved beside the index
    assert tuned.path is not None and tuned.probes is not None
    policy = probe_file(tuned.path)
    orphan = tmp_path / "ann-ivf8_flat-vectors0-500-500.probes.json"  # its index file never landed
    orphan.write_text(policy.read_text())
    harness = Harness(tmp_path, "ivf8,flat")
    harness.cache.remove_orphans()
    assert not orphan.exists() and policy.exists()
    assert harness.search_index(x).probes == tuned.probes  # reopened with the measured policy


def test_read_only_builds_in_memory_and_writes_nothing(tmp_path: Path) -> None:
    x = _vectors(2000)
    harness = Harness(tmp_path, read_only=True)
    index = harness.search_index(x[:400])
    assert index.path is None and _finds_itself(index, x)
    grown = harness.search_index(x)  # would retrain in the background, but could not save the result
    assert grown.tail == 1600 and _finds_itself(grown, x)
    harness.cache.save(grown)
    harness.cache.wait(60)
    assert _files(tmp_path) == [] and harness.replaced == 0


def test_an_index_that_cannot_be_saved_is_used_from_memory_then_saved_later(tmp_path: Path) -> None:
    folder = tmp_path / "gone"  # writing there fails, as on a full disk
    x = _vectors(2000)
    harness = Harness(folder)
    index = harness.search_index(x[:400])
    assert index.path is None and _finds_itself(index, x)
    harness.search_index(x)  # no background build: its result could not be saved either
    harness.cache.wait(60)
    assert harness.replaced == 0
    folder.mkdir()
    with harness.lock:
        harness.cache.save(harness.search_index(x[:400]))
    assert harness.replaced == 1
    assert _files(folder) == ["ann-ivf8_flat-vectors0-400-400.faiss"]
    assert harness.search_index(x[:400]).path == folder / _files(folder)[0]


def test_drop_removes_the_files_and_voids_a_build_in_flight(tmp_path: Path) -> None:
    x = _vectors(2000)
    harness = Harness(tmp_path)
    harness.search_index(x[:400])
    (tmp_path / "hnsw-vectors0.faiss").write_bytes(b"x")  # a cache under the names of older versions
    with harness.lock:  # the store holds its lock while it compacts
        harness.cache.search_index(x, np.ones(len(x), bool))  # starts a retrain in the background
        assert harness.cache.drop() == 2
    harness.cache.wait(60)
    assert _files(tmp_path) == [] and harness.replaced == 1  # the retrain was for the old slot numbers


def test_drop_after_lost_rows_keeps_the_files_that_cover_only_intact_ones(tmp_path: Path) -> None:
    x = _vectors(400)
    kept = Harness(tmp_path).search_index(x).path
    past = tmp_path / "ann-ivf8_flat-vectors0-600-600.faiss"
    unnamed = tmp_path / "ann-unknown.faiss"
    for path in (past, unnamed):
        path.write_bytes(b"x")
    assert Harness(tmp_path).cache.drop(lost_from=500, n_slots=500) == 1  # holes only: no row past 500 lost
    assert Harness(tmp_path).cache.drop(lost_from=500, n_slots=700) == 1  # rows lost: a name that says nothing goes
    assert kept is not None and _files(tmp_path) == [kept.name]
