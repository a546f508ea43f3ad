"""The audit map (issue 16): UMAP when umap-learn (the ``audit`` extra) is installed, PCA otherwise.

Real photos of two clearly distinct kinds (GCompris' fish and the other packages' photos), embedded by
the default model; the map must keep each kind together far better than chance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike.audit import audit
from lookalike.audit.map import UMAP_FIT_SAMPLE, collection_map, layout
from lookalike.imaging.load import open_rgb
from lookalike.index import Index


@pytest.fixture(scope="module")
def two_kinds(tmp_path_factory: pytest.TempPathFactory, real_photos: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, labels): 20 fish photos (label 0) and 20 photos of other things (label 1)."""
    fish = [p for p in real_photos if p.parent.name == "fishes"][:20]
    other = [p for p in real_photos if p.parent.name != "fishes"][:20]
    assert len(fish) >= 17 and len(other) >= 12
    tmp = tmp_path_factory.mktemp("map")
    with Index.open(tmp / "db") as index:
        pictures = []
        for src in fish + other:
            image = open_rgb(src)
            image.thumbnail((448, 448))
            pictures.append(image)
        vectors = np.asarray(index.model.embed(pictures))
    return vectors, np.array([0] * len(fish) + [1] * len(other))


def _same_kind_neighbours(coords: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Mean fraction of each point's k nearest map neighbours that are of its kind (chance: about 0.5)."""
    d = np.linalg.norm(coords[:, None, :] - coords[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())


def test_umap_map_keeps_two_kinds_of_real_photos_apart(two_kinds: tuple[np.ndarray, np.ndarray]) -> None:
    pytest.importorskip(
        "umap", reason="umap-learn is the optional `audit` extra (scripts/install.sh --test installs it)"
    )
    vectors, labels = two_kinds
    coords, method = layout(vectors)
    assert method == "umap"
    assert coords.shape == (len(vectors), 2) and coords.min() >= 0.0 and coords.max() <= 1.0
    chance = max(labels.mean(), 1 - labels.mean())
    assert _same_kind_neighbours(coords, labels) >= chance + 0.3
    from sklearn.manifold import trustworthiness

    assert trustworthiness(vectors, coords, n_neighbors=5) >= 0.8
    again, _ = layout(vectors)
    assert np.allclose(coords, again)  # seeded: the same map on every load


def test_umap_places_points_beyond_its_fit_sample_by_transform(
    two_kinds: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("umap", reason="umap-learn is the optional `audit` extra")
    vectors, labels = two_kinds
    monkeypatch.setattr("lookalike.audit.map.UMAP_FIT_SAMPLE", 24)  # 40 points: 24 fitted, 16 transformed
    assert UMAP_FIT_SAMPLE > 24
    coords, method = layout(vectors)
    assert method == "umap"
    assert _same_kind_neighbours(coords, labels) >= max(labels.mean(), 1 - labels.mean()) + 0.3


def test_pca_is_used_when_umap_cannot_be_imported(
    two_kinds: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` raises ImportError
    vectors, _ = two_kinds
    coords, method = layout(vectors)
    assert method == "pca" and coords.shape == (len(vectors), 2)
    with pytest.raises(ImportError):
        layout(vectors, method="umap")
    with pytest.raises(ValueError, match="unknown map method"):
        layout(vectors, method="tsne")


def test_too_few_points_for_umap_are_placed_by_pca(two_kinds: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, _ = two_kinds
    coords, method = layout(vectors[:10])
    assert method == "pca" and coords.shape == (10, 2)


def test_collection_map_says_its_method(
    tmp_path: Path, real_photos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for i, src in enumerate(real_photos[:8]):
        image = open_rgb(src)
        image.thumbnail((320, 320))
        image.save(root / f"p{i}.jpg")
    with Index.open(tmp_path / "db", model="dhash") as index:
        index.add([root])
        report = audit(index)
        monkeypatch.setitem(sys.modules, "umap", None)
        found = collection_map(index.store, report)
    doc = found.to_dict()
    assert doc["method"] == "pca" and len(doc["points"]) == 8  # type: ignore[arg-type]
