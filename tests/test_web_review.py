"""The review page's API: dups and sweep listings, token-protected quarantine and "not a duplicate"."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.dedup.quarantine import restore
from lookalike.index import Index
from lookalike.web import create_app

TOKEN = "review-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def blocky(seed: int, size: tuple[int, int] = (256, 192)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)).resize(size, Image.Resampling.BILINEAR)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    """Six distinct pictures; picture 0 has a resized copy and a JPEG copy; picture 1 a resized copy."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for seed in range(6):
        blocky(seed).save(root / f"img{seed}.png")
    blocky(0).resize((128, 96)).save(root / "sub" / "img0_small.png")
    blocky(0).save(root / "img0_copy.jpg", quality=90)
    blocky(1).resize((200, 150)).save(root / "img1_small.png")
    db = tmp_path / "db"
    with Index.open(db, model="dhash") as index:
        assert index.add([root]).added == 9
    return {"root": root, "db": db, "quarantine": tmp_path / "quarantine"}


def client_for(setup: dict[str, Path], **kw: object) -> TestClient:
    return TestClient(create_app(setup["db"], **kw))  # type: ignore[arg-type]


def _ids(client: TestClient) -> dict[str, int]:
    return {it["name"]: it["id"] for it in client.get("/api/items", params={"limit": 500}).json()["items"]}


def test_review_page_is_served_with_its_script_and_no_inline_code(setup: dict[str, Path]) -> None:
    with client_for(setup) as client:
        page = client.get("/review")
        assert page.status_code == 200
        assert '<script src="/static/review.js"></script>' in page.text
        assert "<script>" not in page.text and "onclick" not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "Review only" in page.text  # no token, no quarantine folder
        assert client.get("/static/review.js").status_code == 200


def test_dups_listing_names_the_keep_and_the_copies(setup: dict[str, Path]) -> None:
    with client_for(setup) as client:
        doc = client.get("/api/review/dups").json()
        groups = {g["keep"]["name"]: sorted(d["name"] for d in g["duplicates"]) for g in doc["groups"]}
        assert groups == {"img0.png": ["img0_copy.jpg", "img0_small.png"], "img1.png": ["img1_small.png"]}
        assert all(0 < d["score"] <= 1 for g in doc["groups"] for d in g["duplicates"])
        assert doc["total_groups"] == 2
        assert client.get("/api/review/dups", params={"keep": "prettiest"}).status_code == 422


def test_sweep_by_indexed_id_and_by_upload(setup: dict[str, Path]) -> None:
    with client_for(setup) as client:
        ids = _ids(client)
        doc = client.post("/api/review/sweep", data={"like": [str(ids["img1.png"])], "threshold": "0.8"}).json()
        assert {m["name"] for m in doc["matches"]} == {"img1.png", "img1_small.png"}
        buf = io.BytesIO()
        blocky(0).resize((300, 225)).save(buf, "JPEG", quality=80)
        doc = client.post(
            "/api/review/sweep", files={"image": ("q.jpg", buf.getvalue(), "image/jpeg")}, data={"threshold": "0.8"}
        ).json()
        assert {m["name"] for m in doc["matches"]} == {"img0.png", "img0_small.png", "img0_copy.jpg"}
        assert client.post("/api/review/sweep", data={"threshold": "0.8"}).status_code == 422
        assert client.post("/api/review/sweep", data={"like": ["99999"]}).status_code == 404


def test_quarantine_needs_token_and_folder(setup: dict[str, Path]) -> None:
    body = {"ids": [1]}
    with client_for(setup) as client:  # no token at all: disabled
        assert client.post("/api/review/quarantine", json=body).status_code == 403
    with client_for(setup, token=TOKEN) as client:  # token but no quarantine folder
        assert client.post("/api/review/quarantine", json=body, headers=AUTH).status_code == 403
    with client_for(setup, token=TOKEN, quarantine_dir=setup["quarantine"]) as client:
        assert client.post("/api/review/quarantine", json=body).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.post("/api/review/quarantine", json=body, headers=wrong).status_code == 401
        assert client.post("/api/review/not-duplicates", json={"pairs": [[1, 2]]}).status_code == 401
        assert client.post("/api/review/quarantine", json={"ids": []}, headers=AUTH).status_code == 422
        assert client.post("/api/review/quarantine", json={"ids": [99999]}, headers=AUTH).status_code == 404
    assert not setup["quarantine"].exists() or not any(setup["quarantine"].rglob("*.png"))


def test_ticked_files_are_moved_unticked_left_and_the_manifest_restores(setup: dict[str, Path]) -> None:
    root, qdir = setup["root"], setup["quarantine"]
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with client_for(setup, token=TOKEN, quarantine_dir=qdir) as client:
        ids = _ids(client)
        groups = client.get("/api/review/dups").json()["groups"]
        group0 = next(g for g in groups if g["keep"]["name"] == "img0.png")
        # the user unticks img0_copy.jpg: only the small copy goes
        ticked = [d["id"] for d in group0["duplicates"] if d["name"] != "img0_copy.jpg"]
        assert ticked == [ids["img0_small.png"]]
        response = client.post("/api/review/quarantine", json={"ids": ticked, "reason": "test review"}, headers=AUTH)
        assert response.status_code == 200, response.text
        report = response.json()
        assert [Path(m["path"]).name for m in report["moved"]] == ["img0_small.png"] and not report["skipped"]
        assert report["removed_from_index"] == 1 and report["restore"].endswith(report["manifest"])
        assert not (root / "sub" / "img0_small.png").exists()
        assert (qdir / "sub" / "img0_small.png").read_bytes() == before[root / "sub" / "img0_small.png"]
        assert (root / "img0_copy.jpg").read_bytes() == before[root / "img0_copy.jpg"]  # unticked: untouched
        assert "img0_small.png" not in _ids(client)
        regroup = client.get("/api/review/dups").json()["groups"]
        assert {d["name"] for g in regroup for d in g["duplicates"]} == {"img0_copy.jpg", "img1_small.png"}
    manifest = Path(report["manifest"])
    assert manifest.parent == qdir.absolute()
    restored = restore(manifest)
    assert len(restored.restored) == 1 and restored.reindexed == 1
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_not_duplicate_marks_from_the_page_are_respected(setup: dict[str, Path]) -> None:
    with client_for(setup, token=TOKEN) as client:  # marking needs only the token
        ids = _ids(client)
        pair = [ids["img1.png"], ids["img1_small.png"]]
        response = client.post("/api/review/not-duplicates", json={"pairs": [pair]}, headers=AUTH)
        assert response.json() == {"marked": 1, "pairs": 1}
        names = {g["keep"]["name"] for g in client.get("/api/review/dups").json()["groups"]}
        assert names == {"img0.png"}
        same = client.post(
            "/api/review/not-duplicates", json={"pairs": [[ids["img0.png"], ids["img0.png"]]]}, headers=AUTH
        )
        assert same.status_code == 422


def test_quarantine_folder_inside_the_collection_is_refused(setup: dict[str, Path]) -> None:
    with client_for(setup, token=TOKEN, quarantine_dir=setup["root"] / "q") as client:
        ids = _ids(client)
        response = client.post("/api/review/quarantine", json={"ids": [ids["img2.png"]]}, headers=AUTH)
        assert response.status_code == 409 and "inside the indexed folder" in response.json()["detail"]
    assert (setup["root"] / "img2.png").exists()
