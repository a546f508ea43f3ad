"""Geometric verification (``dups --verify``, issue #15): local features confirm copies the vectors miss.

The check is tested on real photos (Debian-package photos, ``real_photos``) and on drawn star
fields that share a watermark (the failure the overlay rule exists for); the merge pass on
hand-made groups. End-to-end grouping on real photos is in test_dups_hard_copies.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from imagegen import busy_screenshot, photo_collection, screenshot
from lookalike.dedup.groups import drop_denied, merge_verified
from lookalike.dedup.verify import (
    DEFAULT_FEATURES,
    FINE_FEATURES,
    RATIO,
    GeometricCheck,
    Keypoints,
    Match,
    ratio_matches,
)
from lookalike.models.builtin import DUP_MARGIN, VERIFIED_MARGIN
from lookalike.store.base import ItemRecord


def _record(path: Path, sha: str | None = None) -> ItemRecord:
    return ItemRecord(str(path), sha or path.stem, path.stat().st_size if path.exists() else 0, 0, 0, 0)


@pytest.fixture(scope="module")
def edited(real_photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, ItemRecord]:
    """One real photo, four hard copies of it, and three other photos of the same collection."""
    root = tmp_path_factory.mktemp("verify")
    photo = Image.open(real_photos[0]).convert("RGB")
    photo.thumbnail((640, 640))
    w, h = photo.size
    copies = {
        "original": photo,
        "rot90": photo.transpose(Image.Transpose.ROTATE_90),
        "crop60": photo.crop((int(w * 0.2), int(h * 0.2), int(w * 0.8), int(h * 0.8))),
        "border_grey": ImageOps.expand(ImageOps.grayscale(photo), border=w // 10, fill=255).convert("RGB"),
        "small": photo.resize((w // 3, h // 3), Image.Resampling.LANCZOS),
    }
    for i, other in enumerate(real_photos[1:4]):
        image = Image.open(other).convert("RGB")
        image.thumbnail((640, 640))
        copies[f"other{i}"] = image
    out = {}
    for name, image in copies.items():
        image.save(root / f"{name}.jpg", quality=88)
        out[name] = _record(root / f"{name}.jpg")
    return out


def test_hard_copies_of_a_real_photo_are_confirmed(edited: dict[str, ItemRecord]) -> None:
    check = GeometricCheck()
    for name in ("rot90", "crop60", "border_grey", "small"):
        match = check.check(edited["original"], edited[name])
        assert check.accepts(match), (name, match)
    # both orders agree (the pair is cached once, the cover swapped)
    forth, back = check.check(edited["crop60"], edited["original"]), check.check(edited["original"], edited["crop60"])
    assert forth.inliers == back.inliers and forth.cover == back.cover[::-1]
    assert check.decoded == 5 and check.checked == 4


def test_different_photos_of_one_collection_are_not_confirmed(edited: dict[str, ItemRecord]) -> None:
    check = GeometricCheck()
    names = ["original", "other0", "other1", "other2"]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not check.confirms(edited[a], edited[b]), (a, b, check.check(edited[a], edited[b]))


def test_different_photos_are_denied_and_copies_never_are(edited: dict[str, ItemRecord], tmp_path: Path) -> None:
    check = GeometricCheck()
    names = ["original", "other0", "other1", "other2"]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert check.denies(edited[a], edited[b]), (a, b, check.check(edited[a], edited[b]))
    for name in ("rot90", "crop60", "border_grey", "small"):
        assert not check.denies(edited["original"], edited[name]), name
    # a mirror image matches no keypoint as it is (SIFT is not mirror-invariant): it is checked mirrored
    source = Image.open(edited["original"].path)
    source.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "mirror.jpg", quality=90)
    mirror = _record(tmp_path / "mirror.jpg")
    assert not check.confirms(edited["original"], mirror)
    assert not check.denies(edited["original"], mirror)
    assert check.mirrored >= 1  # checked mirrored, only to be denied or not
    # a flat image holds too few keypoints to tell: no denial, the similarity rule's call stands
    Image.new("RGB", (300, 200), (120, 140, 160)).save(tmp_path / "flat.png")
    assert not check.denies(edited["original"], _record(tmp_path / "flat.png"))


def _star_field(seed: int) -> Image.Image:
    """Dots of light on black (keypoints that all look alike) with the same caption across the middle."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (480, 480), (5, 5, 12))
    draw = ImageDraw.Draw(image)
    for _ in range(400):
        x, y, r = int(rng.integers(0, 480)), int(rng.integers(0, 480)), float(rng.uniform(0.6, 2.5))
        v = int(rng.integers(120, 255))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(v, v, v))
    font = ImageFont.load_default(size=60)
    draw.text((24, 210), "© SAMPLE 2024", fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    return image


def test_a_shared_watermark_does_not_make_two_pictures_copies(tmp_path: Path) -> None:
    records = []
    for seed in (0, 1):
        _star_field(seed).save(tmp_path / f"stars{seed}.jpg", quality=92)
        records.append(_record(tmp_path / f"stars{seed}.jpg"))
    _star_field(0).transpose(Image.Transpose.ROTATE_270).save(tmp_path / "stars0_turned.jpg", quality=92)
    turned = _record(tmp_path / "stars0_turned.jpg")
    check = GeometricCheck()
    shared = check.check(records[0], records[1])
    # the caption matches point for point, over half of each image ...
    assert shared.inliers >= check.min_inliers and min(shared.cover) >= check.min_cover
    # ... but neither image is covered nearly all over, nor is one plainly a part of the other
    assert not check.accepts(shared)
    assert check.confirms(records[0], turned)  # the same star field turned is a copy


def test_the_rule_refuses_degenerate_and_unsupported_matches() -> None:
    check = GeometricCheck()
    assert check.accepts(Match(80, (0.95, 0.9), 100, 1.1))
    assert check.accepts(Match(40, (0.2, 0.8), 60, 0.5))  # a photo inside a screenshot
    assert not check.accepts(Match(68, (1.0, 0.07), 84, 1e-9))  # everything shrunk onto a few pixels
    assert not check.accepts(Match(68, (1.0, 0.07), 84, 40.0))
    assert not check.accepts(Match(11, (1.0, 1.0), 11, 1.0))  # too few inliers
    assert not check.accepts(Match(30, (1.0, 1.0), 200, 1.0))  # a chance agreement among look-alike keypoints
    assert not check.accepts(Match(50, (0.45, 0.2), 60, 1.0))  # too little of either image


def test_a_picture_lying_inside_the_other_confirms_on_its_own_cover() -> None:
    """A photo pasted into a busy screenshot: the inliers cover most of the photo, but only 0.3-0.5
    of the screenshot (its chrome and text are textured too), so neither the "whole" nor the "part"
    bound holds. What settles it is where the photo's frame lands: inside the screenshot."""
    check = GeometricCheck()
    assert not check.accepts(Match(40, (0.6, 0.4), 60, 0.55))  # where the frames land unknown
    assert check.accepts(Match(40, (0.6, 0.4), 60, 0.55, (0.3, None)))  # the photo lies inside
    assert check.accepts(Match(40, (0.4, 0.6), 60, 1.8, (None, 0.3)))  # either way round
    assert not check.accepts(Match(40, (0.35, 0.4), 60, 0.55, (0.3, None)))  # too little of the photo
    # a frame that fills most of the other is no "part": two screenshots sharing their chrome
    assert not check.accepts(Match(40, (0.6, 0.4), 60, 0.95, (0.9, None)))


def test_a_degenerate_transform_does_not_hide_the_true_one() -> None:
    """Many keypoints of one spot of image a (a tiny copy of a spread layout in b) outvote the true
    transform in RANSAC's first run; the check looks again without them and finds the copy."""
    rng = np.random.default_rng(0)
    true_a = rng.uniform(20, 300, (40, 2)).astype(np.float32)
    true_b = (true_a * 0.5 + np.float32([60, 40])).astype(np.float32)  # the photo at half size, shifted
    spread_b = rng.uniform(10, 310, (60, 2)).astype(np.float32)
    spot_a = (spread_b * 0.002 + np.float32([150, 150])).astype(np.float32)  # all within one pixel
    descriptors = rng.uniform(0, 255, (100, 128)).astype(np.float32)
    a = Keypoints(np.vstack([true_a, spot_a]), descriptors, (320, 320))
    b = Keypoints(np.vstack([true_b, spread_b]), descriptors.copy(), (320, 320))
    check = GeometricCheck()
    match = check._match(a, b)
    assert match.inliers >= 35 and abs(match.scale - 0.5) < 0.05, match
    assert check.accepts(match)


def test_an_unreadable_or_vanished_file_simply_does_not_match(edited: dict[str, ItemRecord], tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    gone = ItemRecord(str(tmp_path / "gone.jpg"), "gone", 0, 0, 0, 0)
    check = GeometricCheck()
    check.prepare([edited["original"], _record(broken), gone])
    assert check.unreadable == 2 and check.decoded == 1
    assert check.check(edited["original"], _record(broken)) == Match.none()
    assert not check.confirms(gone, edited["original"])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        GeometricCheck(min_cover=1.5)
    with pytest.raises(ValueError):
        GeometricCheck(side=8)


# -- the merge pass on hand-made groups ------------------------------------------------------------
def test_merge_checks_the_anchors_and_moves_the_smaller_group_into_the_larger() -> None:
    # group A: anchor 0 with 1, 2; group B: anchor 3 with 4; rows 5 and 6 alone
    clusters: list[tuple[int, list[tuple[int, float]]]] = [(0, [(1, 0.95), (2, 0.9)]), (3, [(4, 0.9)])]
    asked: list[tuple[int, int]] = []
    same_picture = {frozenset((0, 3)), frozenset((5, 6))}

    def confirms(i: int, j: int) -> bool:
        asked.append((i, j))
        return frozenset((i, j)) in same_picture

    candidates = [(2, 4, 0.7), (1, 3, 0.6), (6, 5, 0.55), (5, 2, 0.8)]
    moved = merge_verified(clusters, candidates, confirms, n=7)
    # (2, 4) and (1, 3) join the same two groups: their anchors are checked once
    assert sorted(tuple(sorted(p)) for p in asked) == [(0, 3), (0, 5), (5, 6)]
    groups = sorted((a, sorted(m for m, _ in ms)) for a, ms in clusters if ms)
    assert groups == [(0, [1, 2, 3, 4]), (5, [6])]
    assert moved == 3
    assert dict(clusters[0][1])[1] == 0.95  # known scores are kept


def test_denied_members_leave_their_group_only_below_the_score_asked() -> None:
    clusters: list[tuple[int, list[tuple[int, float]]]] = [
        (0, [(1, 0.8), (2, 0.97), (3, float("nan"))]),
        (4, [(5, 0.85)]),
    ]
    asked: list[tuple[int, int]] = []

    def denies(i: int, j: int) -> bool:
        asked.append((i, j))
        return j in (1, 2)

    assert drop_denied(clusters, denies, below=0.9) == 1
    assert asked == [(0, 1), (4, 5)]  # 2 scores above 0.9, 3's score is unknown: neither is asked
    assert clusters == [(0, [(2, 0.97), (3, clusters[0][1][1][1])]), (4, [(5, 0.85)])]


def test_merge_never_joins_pairs_marked_not_duplicate() -> None:
    clusters: list[tuple[int, list[tuple[int, float]]]] = [(0, [(1, 0.95)])]
    moved = merge_verified(clusters, [(1, 2, 0.9)], lambda i, j: True, n=3, forbidden={(1, 2)})
    assert moved == 0 and clusters == [(0, [(1, 0.95)])]


# -- end to end on real photos, the default model -------------------------------------------------
def _hard_edits(image: Image.Image) -> dict[str, Image.Image]:
    """Copies the similarity rule alone often misses: turned and cropped, turned and posterised..."""
    w, h = image.size
    crop = image.crop((int(w * 0.2), int(h * 0.2), int(w * 0.75), int(h * 0.75)))
    return {
        "crop_rot90": crop.transpose(Image.Transpose.ROTATE_90),
        "poster_rot180": ImageOps.posterize(ImageOps.autocontrast(image), 2).transpose(Image.Transpose.ROTATE_180),
        "rot270_border": ImageOps.expand(image.transpose(Image.Transpose.ROTATE_270), border=w // 6, fill=(20, 20, 20)),
        "sepia_rot90": ImageOps.colorize(ImageOps.grayscale(image), "#3a2200", "#ffe0a0").transpose(
            Image.Transpose.ROTATE_90
        ),
    }


@pytest.fixture(scope="module")
def hard_edits_db(real_photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 real photos of one collection (many of one kind), three of them with four hard copies each."""
    from lookalike.index import Index

    base = tmp_path_factory.mktemp("verify-e2e")
    root = base / "photos"
    photo_collection(real_photos, root, lambda i, image: _hard_edits(image) if i < 3 else {})
    with Index.open(base / "db") as index:  # the default model
        index.add([root], calibrate=False)
    return base / "db"


def _named(groups: list) -> list[set[str]]:  # type: ignore[type-arg]
    return [{Path(r.path).stem for r in [g.keep, *g.duplicates]} for g in groups]


@pytest.mark.slow
def test_verify_groups_hard_copies_without_merging_distinct_photos(hard_edits_db: Path) -> None:
    from lookalike.dedup.groups import find_duplicate_groups
    from lookalike.index import Index

    with Index.open(hard_edits_db, create=False) as index:
        plain = _named(find_duplicate_groups(index.store, verify=False))
        # the similarity rule as it runs beside the check (a stricter margin), without the check
        same_rule = _named(
            find_duplicate_groups(index.store, margin=VERIFIED_MARGIN, leftover_margin=DUP_MARGIN, verify=False)
        )
        check = GeometricCheck()
        verified = _named(find_duplicate_groups(index.store, verify=check))
        by_default = _named(find_duplicate_groups(index.store))
        n_items = len(index)
    families = [{f"p{i:02d}", *(f"p{i:02d}_{e}" for e in _hard_edits(Image.new("RGB", (8, 8))))} for i in range(3)]
    for family in families:
        assert family in verified
    missed = sum(len(f - next((g for g in plain if f & g and min(f) in g), set())) for f in families)
    assert missed >= 2  # the similarity rule alone leaves hard copies out (what verify is for)
    # verify only added rows of one picture: every group it changed or made is a family's
    # (or took look-alikes out of a group: what is left is part of a group the rule made)
    assert all(g in families or any(g < h for h in same_rule) for g in verified if g not in same_rule)
    # the cost: each content read once at most (the keypoints are cached), none failed
    assert 0 < check.decoded <= n_items and check.unreadable == 0
    # the default model verifies unless told not to, so the default finds the families too
    for family in families:
        assert family in by_default


@pytest.mark.slow
def test_cli_dups_verify_reports_its_cost(hard_edits_db: Path) -> None:
    import json

    from typer.testing import CliRunner

    from lookalike.cli.app import app

    result = CliRunner().invoke(app, ["dups", "--db", str(hard_edits_db), "--verify", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verify"]["images"] > 0 and doc["verify"]["pairs"] > 0 and doc["verify"]["unreadable"] == 0
    assert 0 <= doc["verify"]["second_looks"] <= doc["verify"]["pairs"]
    groups = [{Path(f).stem for f in [g["keep"], *g["duplicates"]]} for g in doc["groups"]]
    assert {"p01", "p01_crop_rot90", "p01_poster_rot180", "p01_rot270_border", "p01_sepia_rot90"} in groups


@pytest.mark.slow
def test_cli_dups_no_verify_reads_no_image(hard_edits_db: Path) -> None:
    import json

    from typer.testing import CliRunner

    from lookalike.cli.app import app

    result = CliRunner().invoke(app, ["dups", "--db", str(hard_edits_db), "--no-verify", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert "verify" not in doc
    # the plain rule at its own (looser) margin: the CLI shows the rule it ran
    assert doc["margin"] == pytest.approx(0.07)


# -- sweep --like: the same check adds the copies under the threshold --------------------------
@pytest.mark.slow
def test_sweep_adds_hard_copies_confirmed_point_for_point(hard_edits_db: Path) -> None:
    from lookalike.dedup.sweep import sweep
    from lookalike.index import Index

    root = hard_edits_db.parent / "photos"
    family = {f"p01_{e}" for e in _hard_edits(Image.new("RGB", (8, 8)))}
    with Index.open(hard_edits_db, create=False) as index:
        plain = sweep(index, [str(root / "p01.jpg")], verify=False)
        checked = sweep(index, [str(root / "p01.jpg")])  # on by default for the default model
        # an example from outside the index (an upload): its keypoints come from the picture itself
        outside = Image.open(root / "p01.jpg").convert("RGB")
        outside = outside.resize((outside.width * 3 // 4, outside.height * 3 // 4))
        uploaded = sweep(index, [outside])
    plain_names = {Path(m.record.path).stem for m in plain.matches}
    assert len(family - plain_names) >= 2  # what the check is for: the similarity rule misses them
    assert plain.verify is None and not any(m.verified for m in plain.matches)
    for result in (checked, uploaded):
        names = {Path(m.record.path).stem for m in result.matches}
        assert family <= names, family - names
        assert names <= family | {"p01"}  # no other photo of the collection joined
        added = {Path(m.record.path).stem for m in result.matches if m.verified}
        assert added and added <= family
        assert result.verify is not None and result.verify.confirmed == len(added)
        assert result.verify.checked >= len(added) and result.verify.unreadable == 0
        # verified copies come after the threshold's matches and never count toward the next tier
        verified_at = [i for i, m in enumerate(result.matches) if m.verified]
        assert verified_at == list(range(len(result.matches) - len(added), len(result.matches)))
        assert result.to_dict()["verify"]["confirmed"] == len(added)


@pytest.mark.slow
def test_cli_sweep_marks_the_copies_it_confirmed(hard_edits_db: Path) -> None:
    import json

    from typer.testing import CliRunner

    from lookalike.cli.app import app

    example = str(hard_edits_db.parent / "photos" / "p02.jpg")
    runner = CliRunner()
    doc = json.loads(runner.invoke(app, ["sweep", "--db", str(hard_edits_db), "--like", example, "--json"]).stdout)
    verified = [Path(m["path"]).stem for m in doc["matches"] if m.get("verified")]
    assert verified and all(name.startswith("p02_") for name in verified)
    assert doc["verify"]["confirmed"] == len(verified)
    text = runner.invoke(app, ["sweep", "--db", str(hard_edits_db), "--like", example])
    assert text.exit_code == 0, text.output
    assert f"point for point: {len(verified)} copies under it added" in text.output
    off = json.loads(
        runner.invoke(app, ["sweep", "--db", str(hard_edits_db), "--like", example, "--no-verify", "--json"]).stdout
    )
    assert off["verify"] is None and not any(m.get("verified") for m in off["matches"])


# -- check / dups --against: new files against a library ---------------------------------------
@pytest.fixture(scope="module")
def library_and_batch(real_photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A library of 35 real photos (the default model), and a new batch: four hard copies of each of
    three of them, and five photos the library does not hold."""
    from lookalike.index import Index

    base = tmp_path_factory.mktemp("verify-check")
    photo_collection(real_photos, base / "library", lambda i, image: {}, count=35)
    batch = base / "batch"
    batch.mkdir()
    for i in range(3):
        image = Image.open(base / "library" / f"p{i:02d}.jpg").convert("RGB")
        for name, copy in _hard_edits(image).items():
            copy.save(batch / f"p{i:02d}_{name}.jpg", quality=88)
    assert len(real_photos) >= 40
    for j, src in enumerate(real_photos[35:40]):
        image = Image.open(src).convert("RGB")
        image.thumbnail((512, 512))
        image.save(batch / f"other{j}.jpg", quality=90)
    with Index.open(base / "library.db") as index:
        index.add([base / "library"], calibrate=False)
    with Index.open(base / "batch.db") as index:
        index.add([batch], calibrate=False)
    return {"library": base / "library.db", "batch": batch, "batch_db": base / "batch.db"}


@pytest.mark.slow
def test_check_finds_hard_copies_point_for_point(library_and_batch: dict[str, Path]) -> None:
    from lookalike.audit import check, check_against
    from lookalike.index import Index

    with Index.open(library_and_batch["library"], create=False) as library:
        plain = check(library, [library_and_batch["batch"]], verify=False)
        checked = check(library, [library_and_batch["batch"]])  # on by default for the default model
        with Index.open(library_and_batch["batch_db"], create=False) as batch:
            against = check_against(batch, library)

    def answers(results: list) -> dict[str, str | None]:  # type: ignore[type-arg]
        return {
            Path(r.path).stem: Path(r.matches[0].record.path).stem if r.status in ("exact", "near") else None
            for r in results
        }

    copies = {f"p{i:02d}_{e}": f"p{i:02d}" for i in range(3) for e in _hard_edits(Image.new("RGB", (8, 8)))}
    found = answers(checked)
    assert {name: found[name] for name in copies} == copies  # every hard copy, naming its original
    assert all(found[f"other{j}"] is None for j in range(5))  # photos the library lacks stay new
    assert sum(answers(plain)[name] == original for name, original in copies.items()) <= len(copies) - 2
    verified = [r for r in checked if r.matches and r.matches[0].verified]
    assert verified and all(r.status == "near" for r in verified)
    assert verified[0].to_dict()["matches"][0]["verified"] is True
    assert answers(against) == found  # dups --against answers by the same rule, from stored vectors


@pytest.mark.slow
def test_cli_check_no_verify_is_the_similarity_rule_alone(library_and_batch: dict[str, Path]) -> None:
    import json

    from typer.testing import CliRunner

    from lookalike.cli.app import app

    runner = CliRunner()
    args = ["check", str(library_and_batch["batch"]), "--db", str(library_and_batch["library"]), "--json"]
    on = json.loads(runner.invoke(app, args).stdout)
    off = json.loads(runner.invoke(app, [*args, "--no-verify"]).stdout)
    assert on["counts"]["near"] >= off["counts"]["near"] + 2
    assert not any(m.get("verified") for f in off["files"] for m in f["matches"])
    text = runner.invoke(app, args[:-1])
    assert "point for point) of" in text.output


# -- a photo inside a screenshot, among many screenshots -----------------------------------------
@pytest.mark.slow
def test_a_photo_in_a_screenshot_is_grouped_with_its_original_among_many_screenshots(
    real_photos: list[Path], tmp_path: Path
) -> None:
    """Twenty screenshots of one application, each showing another photo; the first photo also has
    sixteen mild copies (a burst, re-saves). The screenshots share their chrome, so a screenshot's
    nearest images are the other screenshots, and the photo's are its own copies: each ranks the
    other past the first sixteen, in both directions and for every copy. The check still proposes
    the pair, confirms it and puts the screenshot in the photo's group."""
    from lookalike.dedup.groups import find_duplicate_groups
    from lookalike.index import Index

    root = tmp_path / "photos"
    root.mkdir()
    for i, src in enumerate(real_photos[:20]):
        image = Image.open(src).convert("RGB")
        image.thumbnail((512, 512))
        if i == 0:
            image.save(root / "original.jpg", quality=92)
            w, h = image.size
            for c in range(16):
                cut = 0.02 + 0.005 * c
                copy = image.crop((int(w * cut), int(h * cut), int(w * (1 - cut)), int(h * (1 - cut))))
                copy.resize((w * (8 + c % 4) // 12, h * (8 + c % 4) // 12)).save(
                    root / f"original_copy{c:02d}.jpg", quality=40 + 3 * c
                )
        screenshot(image, i).save(root / f"screenshot{i:02d}.png")
    with Index.open(tmp_path / "db") as index:
        index.add([root], calibrate=False)
        ids, vectors = index.store.vector_rows()
        names = {rec.id: Path(rec.path).stem for rec in index.store.items()}
        rows = {names[int(i)]: r for r, i in enumerate(ids.tolist())}
        family = {n for n in rows if n.startswith("original")}

        def rank(one: str, other: str) -> int:
            return [names[int(ids[r])] for r in np.argsort(-(vectors[:] @ vectors[rows[one]]))].index(other)

        assert all(rank("screenshot00", n) > 16 for n in family)  # other screenshots come first
        assert all(rank(n, "screenshot00") > 16 for n in family)  # the photo's own copies come first
        groups = _named(find_duplicate_groups(index.store))
    assert family | {"screenshot00"} in groups
    # screenshots of different photos stay apart: sharing the window chrome does not make a copy
    assert not any(len({n for n in g if n.startswith("screenshot")}) > 1 for g in groups), groups


def test_photos_pasted_into_busy_screenshots_are_confirmed(real_photos: list[Path], tmp_path: Path) -> None:
    """Shown at a third of the window's width, a photo keeps few of its fine keypoints: the inliers
    cover 0.4-0.9 of the photo and 0.2-0.4 of the screenshot, where the "whole" and "part" bounds
    alone confirm 8 of these 10. Where the photo's frame lands (inside the screenshot) confirms the
    rest, and two screenshots of the same window showing different photos still do not confirm."""
    check = GeometricCheck()
    pairs = []
    for i, src in enumerate(real_photos[:10]):
        image = Image.open(src).convert("RGB")
        image.thumbnail((800, 800))
        image.save(tmp_path / f"photo{i}.jpg", quality=90)
        busy_screenshot(image, i).save(tmp_path / f"shot{i}.png")
        pairs.append((_record(tmp_path / f"photo{i}.jpg"), _record(tmp_path / f"shot{i}.png")))
    matches = [check.check(photo, shot) for photo, shot in pairs]
    confirmed = [m for m in matches if check.accepts(m)]
    assert len(confirmed) >= 9, matches
    # the photo lies inside the screenshot, taking about a seventh of it
    assert all(m.inside[0] is not None and m.inside[0] < 0.2 for m in confirmed), matches
    shots = [shot for _, shot in pairs]
    for i, a in enumerate(shots):
        for b in shots[i + 1 :]:
            assert not check.confirms(a, b), (a.path, b.path, check.check(a, b))


def _collage(tiles: list[Image.Image], cell: int = 384) -> Image.Image:
    """A 2x2 collage (``bench/_dup_edits.py: collage``): each tile a square centre crop of a photo."""
    out = Image.new("RGB", (2 * cell, 2 * cell), (255, 255, 255))
    for i, tile in enumerate(tiles):
        out.paste(ImageOps.fit(tile, (cell, cell), Image.Resampling.LANCZOS), ((i % 2) * cell, (i // 2) * cell))
    return out


def test_photos_that_are_one_tile_of_a_collage_are_confirmed_on_a_second_look(
    real_photos: list[Path], tmp_path: Path
) -> None:
    """A photo that is a quarter of a collage keeps a quarter of the collage's keypoints: with the 300
    strongest over the whole collage, too few land on it to confirm. The second look (800 a side,
    taken where the first found a few inliers) confirms the rest (measured: 25 and 30 of these 30);
    collages that share one tile and show different photos in the other three still do not confirm
    (a shared part covers a quarter)."""
    photos = []
    for src in real_photos[:40]:
        image = Image.open(src).convert("RGB")
        image.thumbnail((800, 800))
        photos.append(image)
    spare = photos[30:40]  # each collage's other three tiles: spare i, i + 3 and i + 6 (mod 10)
    pairs, collages, tiles_of = [], [], []
    for i in range(30):
        photos[i].save(tmp_path / f"photo{i}.jpg", quality=90)
        tiles_of.append({(i + 3 * j) % 10 for j in range(3)})
        others = [spare[t] for t in sorted(tiles_of[-1])]
        _collage([*others[: i % 4], photos[i], *others[i % 4 :]], cell=320).save(
            tmp_path / f"collage{i}.jpg", quality=90
        )
        pairs.append((_record(tmp_path / f"photo{i}.jpg"), _record(tmp_path / f"collage{i}.jpg")))
        collages.append(pairs[-1][1])
    one_look, two_looks = GeometricCheck(fine_features=None), GeometricCheck()
    first = sum(one_look.confirms(photo, collage) for photo, collage in pairs)
    second = sum(two_looks.confirms(photo, collage) for photo, collage in pairs)
    assert second >= 28 and second >= first + 3, (first, second)
    assert two_looks.second_looks > 0
    shared_one = [(i, j) for i in range(30) for j in range(i + 1, 30) if len(tiles_of[i] & tiles_of[j]) == 1]
    assert len(shared_one) == 90
    for i, j in shared_one:
        a, b = collages[i], collages[j]
        assert not two_looks.confirms(a, b), (a.path, b.path, two_looks.check(a, b), two_looks.second_look(a, b))


def test_the_second_look_keeps_the_first_looks_keypoints(edited: dict[str, ItemRecord]) -> None:
    """The first look matches the 300 strongest keypoints, a prefix of the second look's (so one SIFT
    pass serves both): the same match as a check that never keeps more than 300."""
    both, first_only = GeometricCheck(), GeometricCheck(features=300, fine_features=None)
    for name in ("original", "rot90", "crop60", "small", "other0", "other1", "other2"):
        short, full = first_only.keypoints(edited[name]), both.keypoints(edited[name])
        assert short is not None and full is not None
        prefix = full.strongest(300).points
        assert len(prefix) == len(short.points), name
        assert {tuple(p) for p in prefix.tolist()} == {tuple(p) for p in short.points.tolist()}, name
    for name in ("rot90", "crop60", "small", "other0"):
        a, b = both.check(edited["original"], edited[name]), first_only.check(edited["original"], edited[name])
        assert (a.inliers, a.matches) == (b.inliers, b.matches), name
    with pytest.raises(ValueError):
        GeometricCheck(features=300, fine_features=200)


def test_the_ratio_test_keeps_the_matches_opencvs_brute_force_matcher_keeps(edited: dict[str, ItemRecord]) -> None:
    """``ratio_matches`` (one matrix product) replaced OpenCV's ``BFMatcher.knnMatch(k=2)`` for
    speed; on real keypoints (copies and distinct photos, first and second look) it must keep the
    same matches, in the same order, or every tuned figure of the check would move."""
    import cv2

    check = GeometricCheck()
    names = ("original", "rot90", "crop60", "border_grey", "small", "other0", "other1", "other2")
    kept = {name: check.keypoints(edited[name]) for name in names}
    compared = matched = 0
    for n in (DEFAULT_FEATURES, FINE_FEATURES):
        for a in names:
            for b in names:
                ka, kb = kept[a], kept[b]
                assert ka is not None and kb is not None
                da, db = ka.strongest(n).descriptors, kb.strongest(n).descriptors
                pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da.astype(np.float32), db.astype(np.float32), k=2)
                good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
                query, train = ratio_matches(da, db)
                assert query.tolist() == [g.queryIdx for g in good], (n, a, b)
                assert train.tolist() == [g.trainIdx for g in good], (n, a, b)
                compared += 1
                matched += len(good)
    assert compared == 2 * len(names) ** 2 and matched > 1000  # copies give many matches, not only empty lists


def test_mirrored_keypoints_are_what_sift_finds_in_the_mirror_image(edited: dict[str, ItemRecord]) -> None:
    """``Keypoints.mirrored`` (denies' mirror check, without a second read and SIFT pass) must
    describe the mirror image as SIFT itself does: where SIFT finds a keypoint at the same place in
    the mirror image, it has the same descriptor, and the two sets match point for point under the
    identity (descriptors merely moved to mirrored places, not permuted, match few)."""
    check = GeometricCheck()
    found = agreeing = 0
    for name in ("original", "other0", "other1", "other2"):
        grey = Image.open(edited[name].path).convert("L")
        grey.thumbnail((check.side, check.side))
        own = check._features(grey)
        derived = own.mirrored()
        sift = check._features(grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
        assert derived.size == sift.size
        for point, descriptor in zip(derived.points, derived.descriptors.astype(int), strict=True):
            here = np.flatnonzero(np.abs(sift.points - point).max(axis=1) < 0.01)
            if len(here):
                found += 1
                agreeing += int(np.abs(sift.descriptors[here].astype(int) - descriptor).max(axis=1).min() <= 2)
        match = check._match(derived.strongest(DEFAULT_FEATURES), sift.strongest(DEFAULT_FEATURES))
        n = min(len(derived.points), len(sift.points), DEFAULT_FEATURES)
        assert match.inliers >= 0.4 * n and abs(match.scale - 1.0) < 0.02 and min(match.cover) > 0.75, name
        unpermuted = Keypoints(derived.points, own.descriptors, own.size)
        assert check._match(unpermuted, sift).inliers < 0.5 * match.inliers, name
    assert agreeing >= 0.9 * found and found > 300


def test_pairs_checked_in_parallel_get_the_answers_of_one_by_one(edited: dict[str, ItemRecord]) -> None:
    """``confirms_all``/``denies_all`` (two threads, what ``dups`` uses) must answer as ``confirms``
    and ``denies`` do one pair at a time, and count a pair once even when it is asked twice at once."""
    names = ("original", "rot90", "crop60", "border_grey", "small", "other0", "other1", "other2")
    pairs = [(edited[a], edited[b]) for a in names for b in names if a != b]
    pairs += pairs[:10]  # asked again in the same batch, and from either side (a, b) / (b, a) above
    one, many = GeometricCheck(workers=1), GeometricCheck(workers=2)
    confirmed = [one.confirms(a, b) for a, b in pairs]
    denied = [one.denies(a, b) for a, b in pairs]
    assert many.confirms_all(pairs) == confirmed and many.denies_all(pairs) == denied
    assert any(confirmed) and any(denied) and not all(confirmed)
    assert (many.checked, many.second_looks, many.mirrored) == (one.checked, one.second_looks, one.mirrored)


def test_one_blas_thread_restores_blas_after_overlapping_blocks() -> None:
    """Blocks left in another order than they were entered (two threads checking pairs at once) put
    BLAS back as it was only when the last one leaves (a plain threadpoolctl limit per block would
    restore two threads while the other block still runs, or "one thread" for good)."""
    from threadpoolctl import threadpool_info

    from lookalike.dedup.verify import one_blas_thread

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    assert before and max(before) > 1  # this machine has 2 cores: a limit to 1 can be seen
    first, second = one_blas_thread(), one_blas_thread()
    first.__enter__()
    assert set(blas_threads()) == {1}
    second.__enter__()
    first.__exit__(None, None, None)  # the first to enter leaves first
    assert set(blas_threads()) == {1}
    second.__exit__(None, None, None)
    assert blas_threads() == before
