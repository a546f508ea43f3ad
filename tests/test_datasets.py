"""Data-set helpers and the committed demo set. Tests marked ``data`` need the apt cache."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lookalike_data as datasets
from lookalike import demo


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_images_and_labels(tmp_path: Path, compress: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    got_images = datasets.read_idx(_write_idx(tmp_path / "img", images, compress))
    got_labels = datasets.read_idx(_write_idx(tmp_path / "lbl", labels, compress))
    assert got_images.shape == (2, 3, 4)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_big_endian_int32(tmp_path: Path) -> None:
    path = tmp_path / "ints"
    path.write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 3) + struct.pack(">3i", -1, 2, 70000))
    np.testing.assert_array_equal(datasets.read_idx(path), [-1, 2, 70000])


def test_read_idx_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(b"\x89PNG not idx")
    with pytest.raises(ValueError):
        datasets.read_idx(path)


def test_write_fashion_mnist_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([0, 0, 0, 9, 9, 3, 0], dtype=np.uint8)
    dest = datasets.write_fashion_mnist_folder(tmp_path / "fm", "test", per_class=2, size=56, arrays=(images, labels))
    by_class = {d.name: sorted(p.name for p in d.iterdir()) for d in dest.iterdir()}
    assert by_class == {
        "t-shirt": ["test-00000.png", "test-00001.png"],
        "ankle-boot": ["test-00003.png", "test-00004.png"],
        "dress": ["test-00005.png"],
    }
    with Image.open(dest / "dress" / "test-00005.png") as im:
        assert im.size == (56, 56) and im.mode == "L"
    native = datasets.write_fashion_mnist_folder(tmp_path / "raw", "train", None, arrays=(images, labels))
    with Image.open(native / "t-shirt" / "train-00000.png") as im:
        np.testing.assert_array_equal(np.asarray(im), images[0])
    assert sum(1 for _ in native.rglob("*.png")) == 7


def test_read_rcc_roundtrip() -> None:
    """A hand-built rcc (format 2) with one plain and one zlib-compressed file."""
    import zlib

    def name(s: str) -> bytes:
        return struct.pack(">HI", len(s), 0) + s.encode("utf-16-be")

    names = name("dir") + name("a.txt") + name("b.bin")
    off_dir, off_a, off_b = 0, len(name("dir")), len(name("dir")) + len(name("a.txt"))
    a, b = b"hello", b"x" * 100
    packed_b = struct.pack(">I", len(b)) + zlib.compress(b)
    payload = struct.pack(">I", len(a)) + a + struct.pack(">I", len(packed_b)) + packed_b
    entries = [
        struct.pack(">IHII", 0, 2, 1, 1) + b"\0" * 8,  # root: 1 child at index 1
        struct.pack(">IHII", off_dir, 2, 2, 2) + b"\0" * 8,  # dir: 2 children from index 2
        struct.pack(">IHHHI", off_a, 0, 0, 0, 0) + b"\0" * 8,
        struct.pack(">IHHHI", off_b, 1, 0, 0, 4 + len(a)) + b"\0" * 8,
    ]
    tree = b"".join(entries)
    header_len = 20
    data = (
        b"qres"
        + struct.pack(">IIII", 2, header_len, header_len + len(tree), header_len + len(tree) + len(payload))
        + tree
        + payload
        + names
    )
    assert datasets.read_rcc(data) == {"dir/a.txt": a, "dir/b.bin": b}


def test_data_cache_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "cache"))
    assert datasets.data_cache_dir() == tmp_path / "cache"
    assert (tmp_path / "cache").is_dir()


def test_debian_package_without_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(datasets.shutil, "which", lambda _name: None)
    with pytest.raises(datasets.DatasetUnavailable, match="apt-get"):
        datasets.debian_package("dataset-fashion-mnist")


def test_package_table_is_complete() -> None:
    for name, info in datasets.PACKAGES.items():
        assert info.gives and info.licence, name
    assert len(datasets.FASHION_MNIST_CLASSES) == 10


DEMO_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _demo_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in DEMO_SUFFIXES)


def test_demo_images_decode_and_are_small() -> None:
    images = _demo_files(demo.demo_images_dir())
    assert 16 <= len(images) <= 30
    assert sum(p.stat().st_size for p in images) < 1_500_000
    for path in images:
        with Image.open(path) as im:
            im.load()
            assert im.format == "JPEG" and max(im.size) <= 512, path.name


def test_demo_queries() -> None:
    queries = {p.name for p in _demo_files(demo.demo_queries_dir())}
    assert 2 <= len(queries) <= 4
    assert any(n.startswith("edited-copy-") for n in queries)
    assert any(n.startswith("out-of-domain-") for n in queries)
    images = {p.name for p in _demo_files(demo.demo_images_dir())}
    for name in queries:
        if name.startswith("edited-copy-"):
            assert name.removeprefix("edited-copy-") in images  # its original is in the set
        else:
            assert name not in images


def test_every_demo_file_has_attribution() -> None:
    text = (demo.demo_images_dir().parent / "ATTRIBUTION.md").read_text()
    listed = set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.MULTILINE))
    for folder in (demo.demo_images_dir(), demo.demo_queries_dir()):
        for path in _demo_files(folder):
            assert f"{folder.name}/{path.name}" in listed, path.name
    for row in re.findall(r"^\| `images/[^`]+` \|.*$", text, flags=re.MULTILINE):
        licence = row.split("|")[5]
        assert re.search(r"public.domain|CC0|CC-BY-\d", licence) and "-SA" not in licence, row


@pytest.mark.data
def test_real_photos() -> None:
    photos = datasets.photos()
    assert len(photos) >= 200
    assert len({p.name for p in photos[:5]}) == 5
    assert datasets.photos(limit=10) == photos[:10]
    with Image.open(photos[0]) as im:
        assert min(im.size) >= 200


@pytest.mark.data
def test_real_ood_and_fashion_mnist() -> None:
    ood = datasets.ood_images()
    assert {"clipart", "icons", "fashion-mnist"} <= set(ood)
    images, labels = datasets.fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert sorted(set(labels.tolist())) == list(range(10))
