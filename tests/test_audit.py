"""``lookalike audit`` and ``lookalike check`` (issue 16): behaviour on real photos with planted problems.

Quality checks read the pixel statistics indexing stores, which do not depend on the model, so most
tests index with the cheap dHash model; odd ones out and ``check`` need the real default model.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from typer.testing import CliRunner

from lookalike.audit import ISSUES, audit, check, mark_not_a_problem
from lookalike.audit.quality import assess
from lookalike.cli.app import app
from lookalike.imaging.load import open_rgb
from lookalike.imaging.stats import pixel_stats
from lookalike.index import Index

runner = CliRunner()


# -- planted problems, made from a real photo ------------------------------------------------------------
def photo(path: Path, longest: int = 800) -> Image.Image:
    image = open_rgb(path)
    image.thumbnail((longest, longest))
    return image


def blurred(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(max(image.size) * 0.012))


def exposed(image: Image.Image, median: float, stops: tuple[float, float]) -> Image.Image:
    """Re-exposed in linear light (as a camera would) so the median grey lands on ``median``, by
    ``stops`` (low, high) stops of light: a photo that is already dim still gets darker."""
    linear = (np.asarray(image, dtype=np.float32) / 255.0) ** 2.2
    gain = median**2.2 / max(float(np.median(linear @ np.array([0.299, 0.587, 0.114]))), 1e-4)
    gain = float(np.clip(gain, 2.0 ** stops[0], 2.0 ** stops[1]))
    return Image.fromarray((np.clip(linear * gain, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8))


def dark(image: Image.Image) -> Image.Image:
    return exposed(image, 0.06, (-8, -2))


def bright(image: Image.Image) -> Image.Image:
    return exposed(image, 0.93, (1.5, 8))


def near_solid(image: Image.Image, seed: int = 0) -> Image.Image:
    """The photo's mean colour with faint noise: what a failed download or a lens cap gives."""
    arr = np.asarray(image, dtype=np.float32)
    mean = arr.reshape(-1, 3).mean(axis=0)
    noise = np.random.default_rng(seed).normal(0, 2.0, arr.shape)
    return Image.fromarray(np.clip(mean + noise, 0, 255).astype(np.uint8))


def gradient(size: tuple[int, int] = (640, 480)) -> Image.Image:
    w, h = size
    t = np.linspace(0, 1, w)[None, :, None]
    arr = (np.array([30, 60, 200]) * (1 - t) + np.array([240, 200, 40]) * t) * np.ones((h, 1, 1))
    return Image.fromarray(arr.astype(np.uint8))


def placeholder(text: str = "pictures coming soon", size: tuple[int, int] = (640, 480)) -> Image.Image:
    img = Image.new("RGB", size, (236, 236, 240))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=40)
    draw.rounded_rectangle((270, 120, 370, 190), radius=10, outline=(60, 60, 60), width=5)
    draw.ellipse((300, 135, 340, 175), outline=(60, 60, 60), width=5)
    draw.text((size[0] // 2, 280), text, fill=(60, 60, 60), font=font, anchor="mm")
    return img


def save_jpeg(image: Image.Image, path: Path, quality: int = 90) -> Path:
    image.save(path, quality=quality)
    return path


def issues_of(image: Image.Image) -> list[str]:
    return assess(pixel_stats(image), image.width, image.height).issues


# -- the quality rules on single pictures ----------------------------------------------------------------
def test_planted_problems_made_from_real_photos_get_the_right_issue(real_photos: list[Path]) -> None:
    checked = 0
    for path in real_photos[:12]:
        image = photo(path)
        # scenes only: a few real photos have a finding of their own, and on a flat black or white
        # studio background exposure changes little (black stays black)
        if issues_of(image) or pixel_stats(image)["dominant"] > 0.3:
            continue
        checked += 1
        assert "blurry" in issues_of(blurred(image)), path
        assert issues_of(dark(image)) == ["dark"], path
        assert "bright" in issues_of(bright(image)) or "low_information" in issues_of(bright(image)), path
        assert "low_information" in issues_of(near_solid(image)), path
        assert issues_of(image.convert("L").convert("RGB")) == ["grayscale"], path
        w, h = image.size
        assert "odd_aspect" in issues_of(image.crop((0, 0, w, max(8, w // 10)))), path
        assert "tiny" in issues_of(image.resize((32, max(1, 32 * h // w)))), path
    assert checked >= 6, "most real photos are clean scenes"


def test_gradients_and_text_placeholders_are_low_information() -> None:
    assert "low_information" in issues_of(gradient())
    assert "low_information" in issues_of(placeholder())


def test_explained_findings_are_not_repeated(real_photos: list[Path]) -> None:
    """A dark photo is not also called blurry or greyscale; a solid picture is not called blurry."""
    image = photo(real_photos[3])
    assert issues_of(dark(blurred(image))) == ["dark"]
    assert "blurry" not in issues_of(near_solid(image))


# -- a collection -----------------------------------------------------------------------------------------
@pytest.fixture
def collection(tmp_path: Path, real_photos: list[Path]) -> dict[str, object]:
    """20 real photos, planted problems made from three of them, an exact and a near copy; dHash index."""
    root = tmp_path / "photos"
    root.mkdir()
    sources = [p for p in real_photos if not issues_of(photo(p))][:20]
    for i, src in enumerate(sources):
        save_jpeg(photo(src), root / f"photo{i:02d}.jpg")
    planted = {
        "blurry": save_jpeg(blurred(photo(sources[0])), root / "planted-blurry.jpg"),
        "dark": save_jpeg(dark(photo(sources[1])), root / "planted-dark.jpg"),
        "low_information": save_jpeg(near_solid(photo(sources[2])), root / "planted-solid.jpg"),
    }
    shutil.copyfile(root / "photo05.jpg", root / "photo05-copy.jpg")
    photo(sources[6]).resize((400, 300)).save(root / "photo06-small.jpg", quality=80)
    db = tmp_path / "db"
    with Index.open(db, model="dhash") as index:
        index.add([root])
    return {"root": root, "db": db, "planted": planted, "tmp": tmp_path}


def test_audit_flags_planted_problems_and_leaves_clean_photos_alone(collection: dict[str, object]) -> None:
    with Index.open(collection["db"], create=False) as index:  # type: ignore[arg-type]
        report = audit(index)
    by_path = {Path(a.record.path).name: a for a in report.items}
    for issue, path in collection["planted"].items():  # type: ignore[union-attr]
        assert issue in by_path[path.name].issues, (path.name, by_path[path.name].quality.scores)
    clean = [a for name, a in by_path.items() if name.startswith("photo")]
    assert not [a.record.path for a in clean if a.issues]
    exact = [g for g in report.exact_duplicates if Path(g.keep.path).name.startswith("photo05")]
    assert exact and {Path(d.path).name for d in exact[0].duplicates} | {Path(exact[0].keep.path).name} == {
        "photo05.jpg",
        "photo05-copy.jpg",
    }


def test_a_not_a_problem_mark_suppresses_the_finding_next_time(collection: dict[str, object]) -> None:
    db = collection["db"]
    dark_file = collection["planted"]["dark"]  # type: ignore[index]
    result = runner.invoke(app, ["audit", "--db", str(db), "--not-a-problem", str(dark_file), "--kind", "dark"])
    assert result.exit_code == 0, result.output
    with Index.open(db, create=False) as index:  # type: ignore[arg-type]
        report = audit(index)
        found = {Path(a.record.path).name: a.issues for a in report.quality()}
        assert "planted-dark.jpg" not in found
        assert "blurry" in found["planted-blurry.jpg"]  # other findings stay
        # the decision follows the content, not the path: a renamed file keeps it
        rec = index.store.get_by_path(str(dark_file))
        assert mark_not_a_problem(index.store, [rec.sha256], ["dark"]) == 0  # type: ignore[union-attr]


def test_statistics_missing_from_old_items_are_measured_once(collection: dict[str, object]) -> None:
    with Index.open(collection["db"], create=False) as index:  # type: ignore[arg-type]
        index.store.update_extra({rec.id: {"stats": {"version": 1}} for rec in index.store.items()})
        first = audit(index)
        second = audit(index)
    assert first.measured_now == len(first.items) and second.measured_now == 0
    assert [a.issues for a in first.items] == [a.issues for a in second.items]
    assert "dark" in {i for a in second.items for i in a.issues}


def test_json_contract(collection: dict[str, object]) -> None:
    result = runner.invoke(app, ["audit", "--db", str(collection["db"]), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc) == ["outliers", "quality", "clusters", "exact_duplicates", "near_duplicates"]
    for entry in doc["outliers"]:
        assert set(entry) == {"path", "score", "flagged"} and entry["flagged"] is True
        assert isinstance(entry["score"], float)
    assert doc["quality"], "the planted problems are listed"
    for entry in doc["quality"]:
        assert set(entry) == {"path", "issues", "scores"} and entry["issues"]
        assert set(entry["issues"]) <= set(ISSUES) and set(ISSUES) <= set(entry["scores"])
        assert all(0.0 <= s <= 1.0 for s in entry["scores"].values())
    names = {Path(e["path"]).name: e["issues"] for e in doc["quality"]}
    assert "dark" in names["planted-dark.jpg"] and "photo01.jpg" not in names
    indexed = {str(p) for p in Path(str(collection["root"])).iterdir()}
    assert sum(c["size"] for c in doc["clusters"]) == len(indexed)
    for c in doc["clusters"]:
        assert isinstance(c["id"], int) and c["size"] >= 1 and set(c["examples"]) <= indexed
    assert any(Path(g["keep"]).name.startswith("photo05") for g in doc["exact_duplicates"])
    for group in doc["exact_duplicates"] + doc["near_duplicates"]:
        assert set(group) == {"keep", "duplicates", "scores"} and len(group["duplicates"]) == len(group["scores"])

    full = json.loads(runner.invoke(app, ["audit", "--db", str(collection["db"]), "--json", "--all"]).stdout)
    assert len(full["quality"]) == len(indexed) and len(full["outliers"]) == len(indexed)
    assert {e["flagged"] for e in full["outliers"]} <= {True, False}


def test_export_and_quarantine_then_restore_round_trip(collection: dict[str, object]) -> None:
    root, db, qdir = Path(str(collection["root"])), str(collection["db"]), Path(str(collection["tmp"])) / "q"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir()}
    export = Path(str(collection["tmp"])) / "findings.csv"
    result = runner.invoke(
        app, ["audit", "--db", db, "--only", "quality", "--export", str(export), "--quarantine", str(qdir)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(export.open()))
    assert {r["finding"] for r in rows} <= set(ISSUES) and {"blurry", "dark", "low_information"} <= {
        r["finding"] for r in rows
    }
    moved = {Path(r["path"]).name for r in rows}
    assert moved >= {"planted-blurry.jpg", "planted-dark.jpg", "planted-solid.jpg"}
    assert all(not (root / name).exists() and (qdir / name).exists() for name in moved)
    with Index.open(db, create=False) as index:
        assert not {Path(r.path).name for r in index.store.items()} & moved
    manifest = next(qdir.glob("manifest-*.jsonl"))
    assert "audit: dark" in manifest.read_text()

    result = runner.invoke(app, ["restore", str(manifest)])
    assert result.exit_code == 0, result.output
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir()}
    assert after == before
    with Index.open(db, create=False) as index:
        assert {Path(r.path).name for r in index.store.items()} >= moved


# -- odd ones out and checking new files: the real model ---------------------------------------------------
@pytest.fixture(scope="module")
def photo_library(tmp_path_factory: pytest.TempPathFactory, real_photos: list[Path]) -> dict[str, object]:
    """A library of one kind, GCompris' 26 fish photos, with the default model; other photos left out."""
    tmp = tmp_path_factory.mktemp("library")
    root = tmp / "library"
    root.mkdir()
    indexed = [p for p in real_photos if p.parent.name == "fishes"]
    left_out = [p for p in real_photos if p.parent.name != "fishes"]
    assert len(indexed) >= 20 and left_out
    for i, src in enumerate(indexed):
        save_jpeg(photo(src, 640), root / f"photo{i:02d}.jpg")
    db = tmp / "db"
    with Index.open(db) as index:
        index.add([root])
    return {"root": root, "db": db, "indexed": indexed, "left_out": left_out, "tmp": tmp}


@pytest.mark.slow
def test_an_odd_picture_among_similar_photos_is_the_top_outlier(
    photo_library: dict[str, object], tmp_path: Path
) -> None:
    root = tmp_path / "collection"
    shutil.copytree(Path(str(photo_library["root"])), root)
    # the placeholder three times over (an exact copy and a re-encoded one): copies must not vouch for it
    save_jpeg(placeholder(), root / "coming-soon.jpg")
    shutil.copyfile(root / "coming-soon.jpg", root / "coming-soon-2.jpg")
    placeholder().resize((480, 360)).save(root / "coming-soon-small.png")
    with Index.open(tmp_path / "db") as index:
        index.add([root])
        report = audit(index)
    ranked = report.outliers(flagged_only=False)
    assert Path(ranked[0].record.path).name.startswith("coming-soon")
    flagged = {Path(a.record.path).name for a in report.outliers()}
    assert {"coming-soon.jpg", "coming-soon-2.jpg", "coming-soon-small.png"} <= flagged
    assert len(flagged - {"coming-soon.jpg", "coming-soon-2.jpg", "coming-soon-small.png"}) <= 1  # of 26 photos


@pytest.mark.slow
def test_check_finds_an_edited_copy_and_not_an_unrelated_photo(
    photo_library: dict[str, object], tmp_path: Path
) -> None:
    new = tmp_path / "new"
    new.mkdir()
    indexed = photo_library["indexed"]
    edited = photo(indexed[7], 640)  # type: ignore[index]
    w, h = edited.size
    edited = edited.crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize((500, int(500 * h / w)))
    buffer = io.BytesIO()
    edited.save(buffer, "JPEG", quality=60)
    (new / "edited.jpg").write_bytes(buffer.getvalue())
    shutil.copyfile(Path(str(photo_library["root"])) / "photo03.jpg", new / "exact.jpg")
    save_jpeg(photo(photo_library["left_out"][-1], 640), new / "unrelated.jpg")  # type: ignore[index]
    (new / "notes.jpg").write_bytes(b"not a picture")

    with Index.open(photo_library["db"], create=False) as index:  # type: ignore[arg-type]
        results = {Path(r.path).name: r for r in check(index, [new])}
    assert results["edited.jpg"].status == "near"
    assert Path(results["edited.jpg"].matches[0].record.path).name == "photo07.jpg"
    assert results["exact.jpg"].status == "exact"
    assert Path(results["exact.jpg"].matches[0].record.path).name == "photo03.jpg"
    assert results["unrelated.jpg"].status == "new" and not results["unrelated.jpg"].matches
    assert results["notes.jpg"].status == "unreadable"

    result = runner.invoke(app, ["check", str(new), "--db", str(photo_library["db"]), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["counts"] == {"exact": 1, "near": 1, "new": 1, "unreadable": 1}
    with Index.open(photo_library["db"], create=False) as index:  # type: ignore[arg-type]
        assert len(index) == len(indexed)  # checking adds nothing


def test_html_report_and_option_errors(collection: dict[str, object]) -> None:
    db, page = str(collection["db"]), Path(str(collection["tmp"])) / "audit.html"
    result = runner.invoke(app, ["audit", "--db", db, "--html", str(page), "--cutoff", "blurry=0.99"])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "Odd ones out" in text and "Dark (1)" in text and "planted-dark.jpg" in text
    assert "data:image/jpeg;base64," in text  # thumbnails embedded: the page works offline
    assert "<h2>Blurry</h2><p class='meta'>none</p>" in text  # the cut-off moved: nothing is blurry enough
    for args, message in (
        (["--cutoff", "sharpness=0.5"], "unknown cut-off sharpness"),
        (["--cutoff", "blurry"], "NAME=VALUE"),
        (["--only", "everything", "--export", str(page.with_suffix(".csv"))], "unknown finding everything"),
    ):
        result = runner.invoke(app, ["audit", "--db", db, *args])
        assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.slow
def test_odd_one_out_scores_do_not_depend_on_the_point_for_point_check(
    photo_library: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported near-duplicate groups use the check (quarter-turned copies join their photo), but
    the odd-one-out statistic reads its families from the similarity rule alone, the families its k,
    weight and cut-off were chosen with (on bench_audit's tuning part the check's families flagged
    twice the photos)."""
    root = tmp_path / "collection"
    shutil.copytree(Path(str(photo_library["root"])), root)
    for i in range(6):
        photo(root / f"photo{i:02d}.jpg").transpose(Image.Transpose.ROTATE_90).save(root / f"turned{i}.jpg", quality=90)
    save_jpeg(placeholder(), root / "coming-soon.jpg")

    def run() -> tuple[dict[str, dict[str, float]], set[frozenset[str]]]:
        with Index.open(tmp_path / "db") as index:
            index.add([root])
            report = audit(index)
        parts = {Path(a.record.path).name: a.outlier_parts for a in report.items}
        groups = {frozenset(Path(r.path).name for r in [g.keep, *g.duplicates]) for g in report.near_duplicates}
        return parts, groups

    checked_parts, checked_groups = run()
    monkeypatch.setattr("lookalike.dedup.groups.verify_by_default", lambda model, n: False)
    monkeypatch.setattr("lookalike.audit.core.verify_by_default", lambda model, n: False, raising=False)
    plain_parts, plain_groups = run()
    joined_by_check = {g for g in checked_groups if any(n.startswith("turned") for n in g)} - plain_groups
    assert joined_by_check, (checked_groups, plain_groups)  # the check did change the groups
    assert checked_parts == plain_parts
