"""`sweep` without a threshold: the collection's "same picture" cut-off, and where the next tier starts.

A fixed 0.75 once swept look-alike photos together with copies. The collection here is real: one
underwater photo from GCompris (sea1), real edits of it, the five other underwater photos of the same
set (look-alikes: same kind of scene, different pictures) and 24 unrelated photos, so that the index
is calibrated (at least 20 images).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from imagegen import center_crop, downscale, mirror, recompress
from lookalike import Index
from lookalike.cli.app import app
from lookalike.dedup import KIND_SWEEP_THRESHOLD, default_threshold, same_picture_threshold, sweep
from lookalike.dedup.sweep import TIER_BAND, TIER_GAP, next_tier

STRONG_COPIES = ("copy_half.jpg", "copy_q25.jpg", "copy_crop90.jpg", "copy_mirror.jpg")


@pytest.fixture(scope="module")
def sea_collection(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from lookalike_data import photos

    every = photos(None)
    sea = sorted(p for p in every if "clickgame" in str(p) and p.stem in {f"sea{i}" for i in range(1, 7)})
    assert len(sea) == 6, "GCompris' six underwater photos should be in the data cache (scripts/fetch_data.py)"
    others = [p for p in every if p not in sea][::9][:24]
    root = tmp_path_factory.mktemp("sea") / "collection"
    root.mkdir()

    def save(src: Path, name: str) -> Image.Image:
        image = Image.open(src).convert("RGB")
        image.thumbnail((800, 800))
        image.save(root / name, quality=92)
        return image

    example = save(sea[0], "example.jpg")
    downscale(example, 0.5).save(root / "copy_half.jpg", quality=90)
    recompress(example, 25).save(root / "copy_q25.jpg", quality=25)
    center_crop(example, 0.9).save(root / "copy_crop90.jpg", quality=90)
    mirror(example).save(root / "copy_mirror.jpg", quality=90)
    ImageOps.expand(example, border=30, fill="white").save(root / "copy_border.jpg", quality=90)
    for src in sea[1:]:
        save(src, f"lookalike_{src.stem}.jpg")
    for i, src in enumerate(others):
        save(src, f"other{i}.jpg")
    db = root.parent / "db"
    with Index.open(db) as index:
        index.add([root])
        assert index.calibration is not None and index.calibration.ok
    return {"root": root, "db": db}


def names(result: object) -> set[str]:
    return {Path(m.record.path).name for m in result.matches}  # type: ignore[attr-defined]


@pytest.mark.slow
def test_default_sweep_takes_the_copies_and_leaves_look_alikes_to_the_next_tier(
    sea_collection: dict[str, Path],
) -> None:
    root, db = sea_collection["root"], sea_collection["db"]
    with Index.open(db, create=False) as index:
        result = sweep(index, [str(root / "example.jpg")])
        everything = sweep(index, [str(root / "example.jpg")], threshold=-1.0)
    got = names(result)
    assert {"example.jpg", *STRONG_COPIES} <= got
    assert not {n for n in got if n.startswith(("lookalike_", "other"))}, got  # 0.75 took three look-alikes
    assert result.rule == "same picture (precision 0.95)"

    tier = result.next_tier
    assert tier is not None
    below = [m.score for m in everything.matches if m.score < result.threshold]
    assert tier.highest == pytest.approx(max(below), abs=1e-6)  # the tier starts right under the threshold
    assert tier.gap_above == pytest.approx(min(m.score for m in result.matches) - max(below), abs=1e-6)
    # its threshold adds exactly the tier, nothing under it
    with Index.open(db, create=False) as index:
        wider = sweep(index, [str(root / "example.jpg")], threshold=tier.threshold)
    assert len(wider.matches) == len(result.matches) + tier.count
    assert got <= names(wider)


@pytest.mark.slow
def test_cli_sweep_prints_the_rule_and_the_next_tier(sea_collection: dict[str, Path]) -> None:
    root, db = sea_collection["root"], sea_collection["db"]
    runner = CliRunner()
    example = str(root / "example.jpg")
    text = runner.invoke(app, ["sweep", "--like", example, "--db", str(db)])
    assert text.exit_code == 0, text.output
    assert "(same picture (precision 0.95))" in text.output
    assert "next tier:" in text.output and "--threshold" in text.output
    doc = json.loads(runner.invoke(app, ["sweep", "--like", example, "--db", str(db), "--json"]).output)
    assert doc["rule"] == "same picture (precision 0.95)"
    assert doc["next_tier"]["count"] >= 1 and doc["next_tier"]["threshold"] <= doc["next_tier"]["lowest"]
    # the looser "same kind" sweep is one option away and takes the look-alikes
    kind = json.loads(
        runner.invoke(
            app, ["sweep", "--like", example, "--db", str(db), "--threshold", str(KIND_SWEEP_THRESHOLD), "--json"]
        ).output
    )
    assert kind["rule"] == "threshold"
    assert sum(Path(m["path"]).name.startswith("lookalike_") for m in kind["matches"]) >= 2


def test_an_uncalibrated_index_sweeps_at_the_models_plain_duplicate_threshold(tmp_path: Path) -> None:
    from conftest import make_picture

    folder = tmp_path / "few"
    folder.mkdir()
    for i in range(5):
        make_picture(i).save(folder / f"p{i}.png")
    shutil.copyfile(folder / "p0.png", folder / "p0_copy.png")
    with Index.open(tmp_path / "db", model="dhash") as index:
        index.add([folder])
        threshold, rule = same_picture_threshold(index)
        result = sweep(index, [str(folder / "p0.png")])
    assert rule == "same picture (uncalibrated)"
    assert threshold == default_threshold("dhash", margin=0.0)
    assert names(result) == {"p0.png", "p0_copy.png"}


def test_next_tier_ends_at_the_first_clear_gap_and_its_threshold_takes_nothing_more() -> None:
    scores = np.array([0.80, 0.79, 0.785, 0.70, 0.69], dtype=np.float32)
    tier = next_tier(scores, lowest_match=0.92, label=None)
    assert tier is not None
    assert (tier.count, round(tier.highest, 3), round(tier.lowest, 3)) == (3, 0.8, 0.785)
    assert 0.70 < tier.threshold <= 0.785 and tier.gap_above == pytest.approx(0.12, abs=1e-6)
    # a continuum stops at the band's depth, and the threshold still takes nothing under the band
    dense = np.arange(0.80, 0.60, -0.004)
    tier = next_tier(dense, lowest_match=None, label=lambda s: "similar")
    assert tier is not None and tier.label == "similar" and tier.gap_above is None
    assert tier.highest - tier.lowest <= TIER_BAND + 1e-9
    assert int((dense >= tier.threshold).sum()) == tier.count
    assert TIER_GAP > 0.004
    assert next_tier(np.zeros(0, dtype=np.float32), lowest_match=0.9, label=None) is None


@pytest.mark.slow
def test_review_page_sweeps_at_the_same_picture_cut_off_and_shows_the_next_tier(
    sea_collection: dict[str, Path],
) -> None:
    from fastapi.testclient import TestClient

    from lookalike.web import create_app

    with TestClient(create_app(sea_collection["db"])) as client:  # type: ignore[arg-type]
        items = client.get("/api/items", params={"limit": 500}).json()["items"]
        example = next(it["id"] for it in items if it["name"] == "example.jpg")
        doc = client.post("/api/review/sweep", data={"like": [str(example)]}).json()
        page = client.get("/review").text
    assert doc["rule"] == "same picture (precision 0.95)"
    assert {m["name"] for m in doc["matches"]} >= {"example.jpg", *STRONG_COPIES}
    assert not [m["name"] for m in doc["matches"] if m["name"].startswith("lookalike_")]
    assert doc["next_tier"]["count"] >= 1
    assert f'value="{doc["threshold"]:.3f}"' in page  # the form starts at the same cut-off
