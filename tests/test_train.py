"""`lookalike train`: both recipes learn on a tiny real labelled set, errors are clear, and the trained
model indexes and searches through the CLI.

Data: Fashion-MNIST's four look-alike upper-body classes (t-shirt, pullover, coat, shirt), 30 images
each, where ImageNet features are weakest, so that training has something to improve.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike.cli.app import app

runner = CliRunner()
CLASSES = ("t-shirt", "pullover", "coat", "shirt")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models")
    mp = pytest.MonkeyPatch()
    mp.setenv("LOOKALIKE_MODELS_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def labeled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lookalike_data import write_fashion_mnist_folder

    root = write_fashion_mnist_folder(tmp_path_factory.mktemp("fm") / "labeled", "train", per_class=30)
    for folder in root.iterdir():
        if folder.name not in CLASSES:
            shutil.rmtree(folder)
    return root


def _train(args: list[str]) -> dict:
    result = runner.invoke(app, ["train", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def head_model(labeled: Path, models_dir: Path) -> dict:
    return _train([str(labeled), "--name", "fm-head", "--epochs", "12", "--val-split", "0.3"])


def test_head_improves_validation_recall(head_model: dict) -> None:
    report = head_model["report"]
    recalls = report["val_recall_at_1"]
    assert report["data"]["val_images"] == 36
    assert recalls["trained"] > recalls["untrained_head"]
    assert recalls["trained"] >= recalls["frozen_backbone"]
    assert report["history"][0]["epoch"] == 0 and len(report["history"]) >= 2
    assert report["config"]["augment_views_used"] == 2
    package = Path(head_model["path"])
    assert {p.name for p in package.iterdir()} >= {"config.json", "weights.pt", "report.json"}
    assert json.loads((package / "config.json").read_text())["classes"] == sorted(CLASSES)


def test_head_second_run_uses_feature_cache(labeled: Path, head_model: dict) -> None:
    report = _train([str(labeled), "--name", "fm-head", "--force", "--epochs", "1", "--val-split", "0.3"])["report"]
    assert report["timings"]["features_computed"] == 0
    assert report["timings"]["features_from_cache"] == 120 + 2 * 84


def test_trained_model_registers_and_matches_training_geometry(head_model: dict, labeled: Path) -> None:
    from lookalike.evaluation.metrics import leave_one_out
    from lookalike.models.registry import create_model, list_models

    model = create_model("fm-head")
    assert model.spec.dim == 1280 + 256 and model.spec.name == "fm-head"  # frozen vector + head output
    assert "fm-head" in [m.name for m in list_models()]
    paths = sorted(labeled.rglob("*.png"))
    vectors = model.embed([Image.open(p).convert("RGB") for p in paths])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    labels = [p.parent.name for p in paths]
    # The head was fit on 70% of these images: retrieval among them must be far above chance (0.25).
    assert leave_one_out(vectors, np.unique(labels, return_inverse=True)[1], ks=(1,)).recall[1] > 0.6


@pytest.fixture(scope="module")
def unseen(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Image.Image], np.ndarray]:
    """The six classes the head never saw (trousers, dresses, shoes, bags), 20 test-split images each."""
    from lookalike_data import write_fashion_mnist_folder

    root = write_fashion_mnist_folder(tmp_path_factory.mktemp("fm-unseen") / "u", "test", per_class=20)
    paths = sorted(p for p in root.rglob("*.png") if p.parent.name not in CLASSES)
    names = [p.parent.name for p in paths]
    assert len(set(names)) == 6
    return [Image.open(p).convert("RGB") for p in paths], np.unique(names, return_inverse=True)[1]


def test_head_keeps_unseen_class_retrieval(head_model: dict, unseen: tuple[list[Image.Image], np.ndarray]) -> None:
    """Issue #7's second target: training on 4 classes must not wreck retrieval of the others.

    A head-only embedding (the old default, ``--alpha 0``) trained on these 4 classes drops unseen-class
    mAP@R well below the frozen backbone's; the default blend keeps the backbone's geometry.
    """
    from lookalike.evaluation.metrics import leave_one_out
    from lookalike.models.registry import create_model

    images, labels = unseen
    frozen = leave_one_out(create_model("mobilenet_v2").embed(images), labels, ks=(1,))
    trained = leave_one_out(create_model("fm-head").embed(images), labels, ks=(1,))
    assert trained.recall[1] >= frozen.recall[1] - 0.05, (trained, frozen)
    assert trained.map_at_r >= 0.9 * frozen.map_at_r, (trained, frozen)


def test_cli_index_and_search_with_trained_model(head_model: dict, labeled: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    result = runner.invoke(app, ["index", str(labeled), "--db", str(db), "--model", "fm-head", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["count"] == 120
    original = sorted((labeled / "coat").iterdir())[0]
    query = tmp_path / "query.png"  # a copy outside the index: embedded by the trained model at query time
    shutil.copy(original, query)
    result = runner.invoke(app, ["search", str(query), "--db", str(db), "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["queries"][0]["results"]
    assert hits[0]["path"] == str(original) and hits[0]["score"] > 0.999
    info = json.loads(runner.invoke(app, ["info", "--db", str(db), "--json"]).stdout)
    assert "fm-head" in json.dumps(info)


@pytest.mark.slow
def test_scratch_improves_validation_recall(labeled: Path, models_dir: Path) -> None:
    args = ["--name", "fm-scratch", "--recipe", "scratch", "--epochs", "6", "--val-split", "0.3"]
    report = _train([str(labeled), *args])
    recalls = report["report"]["val_recall_at_1"]
    assert recalls["trained"] > recalls["untrained"]
    from lookalike.models.registry import create_model

    model = create_model("fm-scratch")
    assert model.spec.dim == 514 and model.spec.input_size == 100
    vec = model.embed([Image.open(next((labeled / "coat").iterdir())).convert("RGB")])
    assert vec.shape == (1, 514)


# -- errors -------------------------------------------------------------------------------------------


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)


def _fails(args: list[str], *needles: str) -> None:
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 2, result.output
    for needle in needles:
        assert needle in result.output, result.output


def test_error_fewer_than_two_classes(tmp_path: Path, models_dir: Path) -> None:
    for i in range(3):
        _png(tmp_path / "only" / f"{i}.png", i)
    _fails([str(tmp_path), "--name", "x"], "at least 2")


def test_error_class_with_one_image(tmp_path: Path, models_dir: Path) -> None:
    for i in range(3):
        _png(tmp_path / "a" / f"{i}.png", i)
    _png(tmp_path / "b" / "0.png", 9)
    _fails([str(tmp_path), "--name", "x"], "'b' (1)")


def test_unreadable_images_are_skipped_and_can_empty_a_class(tmp_path: Path, models_dir: Path) -> None:
    from lookalike.training.data import TrainingDataError, load_all, scan_labeled_folder

    for i in range(3):
        _png(tmp_path / "a" / f"{i}.png", i)
    _png(tmp_path / "b" / "0.png", 10)
    good = (tmp_path / "b" / "0.png").read_bytes()
    (tmp_path / "b" / "1.png").write_bytes(good[: len(good) // 2])  # truncated: sniffs as PNG, cannot decode
    data = scan_labeled_folder(tmp_path)
    assert len(data) == 5
    with pytest.raises(TrainingDataError, match="'b' \\(1\\)") as info:
        load_all(data, lambda im, i: im.size)
    assert "skipped" in str(info.value)
    _png(tmp_path / "b" / "2.png", 11)
    data, sizes = load_all(scan_labeled_folder(tmp_path), lambda im, i: im.size)
    assert len(sizes) == 5 and [s.reason for s in data.skipped] == ["corrupt"]


def test_error_existing_name_needs_force(head_model: dict, labeled: Path) -> None:
    _fails([str(labeled), "--name", "fm-head"], "already exists", "--force")


def test_error_invalid_or_builtin_name(labeled: Path, models_dir: Path) -> None:
    _fails([str(labeled), "--name", "mobilenet_v2"], "built-in")
    _fails([str(labeled), "--name", "../evil"], "invalid model name")
    _fails([str(tmp := labeled / "missing"), "--name", "ok"], "not a folder")
    assert not tmp.exists()
