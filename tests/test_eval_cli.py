"""`lookalike eval` and `lookalike models` end to end on small real labelled folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lookalike_data as datasets
from lookalike.cli.app import app

runner = CliRunner()
CLASSES = {1: "trouser", 7: "sneaker", 8: "bag"}  # visually distinct Fashion-MNIST classes


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 6 real Fashion-MNIST test images, upscaled to 64 px."""
    try:
        images, labels = datasets.fashion_mnist("test")
    except datasets.DatasetUnavailable as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"Fashion-MNIST is needed for this test and could not be fetched: {exc}")
    keep = [i for i, label in enumerate(labels.tolist()) if label in CLASSES]
    dest = tmp_path_factory.mktemp("fm") / "labelled"
    datasets.write_fashion_mnist_folder(dest, "test", per_class=6, size=64, arrays=(images[keep], labels[keep]))
    return dest


def flat(text: str) -> str:
    """Rich wraps long lines to the terminal width; compare text with the wrapping undone."""
    return " ".join(text.split())


def run_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def check_scores(doc: dict) -> None:
    for key in ("recall@1", "recall@5", "recall@10", "map@r"):
        assert 0.0 <= doc[key] <= 1.0, key
    assert doc["recall@1"] <= doc["recall@5"] <= doc["recall@10"]


@pytest.mark.data
def test_eval_json_keys_and_values_phash(fashion_folder: Path) -> None:
    doc = run_json("eval", str(fashion_folder), "--model", "phash")
    assert {"recall@1", "recall@5", "recall@10", "map@r", "per_class", "models", "images_per_second"} <= set(doc)
    check_scores(doc)
    assert sorted(doc["per_class"]) == sorted(CLASSES.values())
    assert all(row["n"] == 6 for row in doc["per_class"].values())
    assert doc["images"] == 18 and doc["n_queries"] == 18
    assert doc["images_per_second"] > 0
    assert [m["model"] for m in doc["models"]] == ["phash"]


@pytest.mark.data
@pytest.mark.slow
def test_eval_mobilenet_beats_chance_and_compares_models(fashion_folder: Path) -> None:
    doc = run_json("eval", str(fashion_folder), "-m", "mobilenet_v2", "-m", "dhash", "--adapt", "center")
    assert [m["model"] for m in doc["models"]] == ["mobilenet_v2", "dhash"]
    check_scores(doc)
    # three visually distinct classes: chance Recall@1 is ~1/3; ImageNet features separate them
    assert doc["recall@1"] >= 0.8, doc["recall@1"]
    assert doc["map@r"] >= 0.5, doc["map@r"]
    assert 0.0 <= doc["center"]["recall@1"] <= 1.0
    md = runner.invoke(app, ["eval", str(fashion_folder), "-m", "phash", "--markdown"])
    assert md.exit_code == 0 and "| model |" in md.stdout and "| trouser |" in md.stdout


@pytest.mark.data
@pytest.mark.slow
def test_eval_neardup_and_ood_on_real_photos(tmp_path: Path, real_photos: list[Path], fashion_folder: Path) -> None:
    folder = tmp_path / "photos"
    for i, photo in enumerate(real_photos[:8]):
        cls = folder / f"class{i % 2}"
        cls.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, cls / f"{i}{photo.suffix}")
    doc = run_json("eval", str(folder), "-m", "phash", "--neardup", "--neardup-images", "6")
    dup = doc["neardup"]
    assert dup["originals"] == 6 and dup["images"] == 6 * 10
    assert 0.0 <= dup["precision"] <= 1.0 and 0.0 <= dup["f1"] <= dup["best_f1"] + 1e-9
    # pHash works on a greyscale image, so a greyscale copy has the same hash; a mirror image does not
    assert dup["recall_by_edit"]["greyscale"] == 1.0
    assert dup["recall_by_edit"]["flip"] <= 0.5
    # Fashion-MNIST products are out of distribution for a photo collection: the best-match score of
    # an in-collection photo is higher than a product's most of the time
    doc = run_json("eval", str(folder), "-m", "mobilenet_v2", "--ood", str(fashion_folder))
    assert doc["ood"]["ood_queries"] == 18
    assert doc["ood"]["auroc"] >= 0.7, doc["ood"]
    # The default model reads no-match scores in its view, which is mobilenet_v2's vector: the same
    # scores, so the same AUROC and error rates (its whole 1376-d vector would give other numbers).
    default = run_json("eval", str(folder), "--ood", str(fashion_folder))
    assert default["models"][0]["model"] == "mobilenet_v2_ml"
    for key in ("auroc", "ood_missed", "in_collection_flagged"):
        assert default["ood"][key] == pytest.approx(doc["ood"][key], abs=1e-4), key


def test_eval_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    result = runner.invoke(app, ["eval", str(tmp_path / "flat")])
    assert result.exit_code == 2 and "sub-folder" in flat(result.output)
    result = runner.invoke(app, ["eval", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not a folder" in flat(result.output)
    cls = tmp_path / "ok" / "a"
    cls.mkdir(parents=True)
    from conftest import make_picture

    make_picture(0).save(cls / "0.png")
    make_picture(1).save(cls / "1.png")
    result = runner.invoke(app, ["eval", str(tmp_path / "ok"), "--model", "no_such_model"])
    assert result.exit_code == 2 and "unknown model" in flat(result.output)


def test_models_lists_dimension_size_and_availability() -> None:
    doc = run_json("models")
    rows = {row["name"]: row for row in doc["models"]}
    assert doc["default"] == "mobilenet_v2_ml"
    assert {"mobilenet_v2", "mobilenet_v2_ml", "efficientnet_lite0", "phash", "dhash"} <= set(rows)
    assert rows["mobilenet_v2_ml"]["dim"] == 1376 and rows["mobilenet_v2_ml"]["available"] is True
    mobile = rows["mobilenet_v2"]
    assert mobile["dim"] == 1280 and mobile["available"] is True and mobile["offline"] is True
    assert mobile["size_bytes"] > 10_000_000  # the ImageNet .pth is ~14 MB
    assert rows["phash"]["size_bytes"] == 0 and rows["phash"]["dim"] == 64
    text = runner.invoke(app, ["models"])
    assert text.exit_code == 0 and "mobilenet_v2" in text.stdout


def test_labelled_folder_and_neardup_truth(tmp_path: Path) -> None:
    from conftest import make_picture
    from lookalike.evaluation.retrieval import build_neardup_set, labelled_folder

    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    make_picture(0).save(tmp_path / "a" / "0.png")
    make_picture(1).save(tmp_path / "b" / "1.png")
    make_picture(2).save(tmp_path / "b" / "deep" / "2.png")  # counts for class b
    make_picture(3).save(tmp_path / "loose.png")  # no class
    data = labelled_folder(tmp_path)
    assert data.class_names == ["a", "b"] and data.labels.tolist() == [0, 1, 1]
    assert [s.reason for s in data.skipped] == ["no class"]
    dup = build_neardup_set([make_picture(4), make_picture(5)], edits=["flip", "jpeg-q20"])
    assert dup.group.tolist() == [0, 0, 0, 1, 1, 1]
    # within each group of 3 (original + 2 edits): 3 pairs; none across groups
    assert dup.true_pairs() == {(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5)}
