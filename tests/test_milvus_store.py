"""The Milvus backend against Milvus Lite: same answers as the embedded store, same contract."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from lookalike.index import Index
from lookalike.store import open_store
from lookalike.store.base import ItemRecord, ModelMismatchError, StoreError
from lookalike.store.local import LocalStore
from lookalike.store.milvus import MilvusStore

pytestmark = pytest.mark.slow  # Milvus Lite takes a few seconds to start


def vectors(n: int, dim: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.maximum(rng.normal(size=(12, dim)), 0)
    x = np.maximum(centres[rng.integers(0, 12, n)] + 0.4 * rng.normal(size=(n, dim)), 0)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def records(n: int) -> list[ItemRecord]:
    return [ItemRecord(f"/photos/{i:04d}.jpg", f"{i % 50:064x}", 100 + i, i, 32, 24) for i in range(n)]


def fill(store, x: np.ndarray) -> list[int]:
    store.set_model_identity({"name": "synthetic", "version": "1", "dim": x.shape[1]})
    return store.add(records(len(x)), x)


def test_same_top_k_as_the_embedded_store(tmp_path: Path) -> None:
    x = vectors(600)
    milvus = open_store(tmp_path / "photos.milvus.db")
    local = open_store(tmp_path / "local")
    assert isinstance(milvus, MilvusStore) and isinstance(local, LocalStore)
    ids_m, ids_l = fill(milvus, x), fill(local, x)
    assert ids_m == ids_l
    for store, ids in ((milvus, ids_m), (local, ids_l)):
        store.remove(ids[:20])
        store.move(ids[30], "/photos/renamed.jpg", 7)
        store.touch(ids[31], 999, 8)
        store.add(records(40)[35:36], x[500:501])  # replace a path: same id, new vector
    queries = vectors(25, seed=1)
    got_m = milvus.search(queries, 10, exclude=[ids_m[40]])
    got_l = local.search(queries, 10, exclude=[ids_l[40]])

    # Identical top-k; float32 sums in another order may swap exact-tie neighbours, so ties
    # (scores equal to 1e-5) are compared as sets.
    def canon(rows):
        return [sorted((-round(h.score, 5), h.id) for h in r) for r in rows]

    assert canon(got_m) == canon(got_l)
    assert sum(a.id != b.id for r, s in zip(got_m, got_l, strict=False) for a, b in zip(r, s, strict=False)) <= 6
    np.testing.assert_allclose([[h.score for h in r] for r in got_m], [[h.score for h in r] for r in got_l], atol=1e-5)
    assert len(milvus) == len(local) == 580
    assert milvus.get(ids_m[30]).path == "/photos/renamed.jpg"
    assert milvus.get(ids_m[31]).size == 999
    assert milvus.get_by_path("/photos/0035.jpg").id == ids_m[35]
    np.testing.assert_allclose(milvus.vectors([ids_m[35]]), x[500:501], atol=1e-6)
    assert [r.id for r in milvus.find_by_sha256(f"{7:064x}")] == [r.id for r in local.find_by_sha256(f"{7:064x}")]
    assert milvus.get(ids_m[0]) is None
    assert milvus.file_states() == local.file_states()
    mi, mv = milvus.all_vectors()
    li, lv = local.all_vectors()
    order = np.argsort(li)
    assert mi.tolist() == li[order].tolist()
    np.testing.assert_allclose(mv, lv[order], atol=1e-6)
    milvus.close()
    local.close()


def test_model_identity_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "c.milvus.db"
    store = open_store(path)
    fill(store, vectors(30))
    with pytest.raises(ModelMismatchError, match="synthetic"):
        store.set_model_identity({"name": "other", "dim": 48})
    store.close()
    again = open_store(path, create=False)  # an existing .db file is Milvus Lite without the suffix rule too
    assert len(again) == 30 and again.model_identity["name"] == "synthetic"
    with pytest.raises(StoreError, match="48-d"):
        again.add(records(1), np.ones((1, 16), np.float32))
    again.close()
    with pytest.raises(StoreError, match="no Milvus Lite file"):
        open_store(tmp_path / "missing.milvus.db", create=False)


def test_index_api_end_to_end(tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(12):
        im = Image.new("RGB", (96, 80), tuple(int(v) for v in rng.integers(0, 255, 3)))
        ImageDraw.Draw(im).rectangle([i * 5, 10, 40 + i * 3, 60], fill=(255 - i * 20, i * 20, 128))
        im.save(folder / f"{i:02d}.png")
    with (
        Index.open(tmp_path / "m.milvus.db", model="dhash") as milvus,
        Index.open(tmp_path / "l", model="dhash") as local,
    ):
        rm, rl = milvus.add(folder), local.add(folder)
        assert rm.added == rl.added == 12
        again = milvus.add(folder)
        assert again.unchanged == 12 and again.embedded == 0
        res_m = milvus.search(str(folder / "03.png"), k=5)
        res_l = local.search(str(folder / "03.png"), k=5)
        assert [round(m.score, 5) for m in res_m.results] == [round(m.score, 5) for m in res_l.results]
        assert milvus.info()["backend"] == "milvus-lite"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_milvus_server_uri(tmp_path: Path) -> None:
    """``milvus://HOST:PORT/COLLECTION`` against a Milvus Lite server (same client code as a cluster)."""
    exe = Path(sys.executable).with_name("milvus-lite")
    if not exe.exists():
        pytest.skip("milvus-lite server launcher not installed")
    port = free_port()
    proc = subprocess.Popen(
        [str(exe), "server", "--data-dir", str(tmp_path / "data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.3)
        store = open_store(f"milvus://127.0.0.1:{port}/my-photos")
        assert store.collection == "my_photos"
        x = vectors(100)
        ids = fill(store, x)
        hits = store.search(x[:3], 1)
        assert [h[0].id for h in hits] == ids[:3]
        store.close()
    finally:
        proc.terminate()
        proc.wait(20)


def test_index_option_rejected_for_milvus(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="embedded store"):
        open_store(tmp_path / "x.milvus.db", index_kind="ivf64,sq8")
    assert not os.path.exists(tmp_path / "x.milvus.db")
