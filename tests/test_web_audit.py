"""The audit in the web app: the JSON API, "not a problem" with the token, the page and its map (Chromium).

The browser test drives Debian's headless Chromium (see test_web_browser.py) against a live server over
the bundled demo photos plus a planted dark copy and a "pictures coming soon" placeholder; it saves
``docs/audit.png`` for the documentation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lookalike.audit.map import umap_available
from lookalike.demo import demo_images_dir
from lookalike.index import Index
from lookalike.web import create_app
from test_audit import dark, photo, placeholder, save_jpeg
from test_web_browser import CHROMIUM
from webserver import served, wait_for_images

TOKEN = "audit-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "audit.png"


def build(root: Path, db: Path, model: str | None = None) -> None:
    root.mkdir()
    for src in sorted(demo_images_dir().iterdir()):
        save_jpeg(photo(src, 640), root / src.name)
    save_jpeg(dark(photo(demo_images_dir() / "windmill-chesterton.jpg", 640)), root / "planted-dark.jpg")
    save_jpeg(placeholder(), root / "coming-soon.jpg")
    with Index.open(db, model=model) as index:
        index.add([root])


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    build(tmp_path / "photos", tmp_path / "db", model="dhash")
    with TestClient(create_app(tmp_path / "db", token=TOKEN, quarantine_dir=tmp_path / "q")) as test_client:
        yield test_client


def test_api_lists_findings_with_links_and_honours_not_a_problem(client: TestClient) -> None:
    doc = client.get("/api/audit").json()
    assert {"outliers", "quality", "clusters", "exact_duplicates", "near_duplicates", "counts"} <= set(doc)
    dark_entry = next(e for e in doc["quality"] if e["name"] == "planted-dark.jpg")
    assert "dark" in dark_entry["issues"] and dark_entry["page_url"] == f"/items/{dark_entry['id']}"
    assert client.get(dark_entry["page_url"]).status_code == 200
    assert sum(c["size"] for c in doc["clusters"]) == doc["counts"]["items"]

    body = {"ids": [dark_entry["id"]], "kind": "dark"}
    assert client.post("/api/audit/not-a-problem", json=body).status_code in (401, 403)
    marked = client.post("/api/audit/not-a-problem", json=body, headers=AUTH)
    assert marked.status_code == 200 and marked.json()["marked"] == 1
    again = client.get("/api/audit").json()  # the index changed: audited again, the mark honoured
    assert "planted-dark.jpg" not in {e["name"] for e in again["quality"]}

    found = client.get("/api/audit/map").json()
    points = found["points"]
    assert points and all(0.0 <= p["x"] <= 1.0 and 0.0 <= p["y"] <= 1.0 for p in points)
    assert found["method"] == ("umap" if umap_available() and len(points) >= 17 else "pca")
    named = "UMAP" if found["method"] == "umap" else "PCA"
    assert f'id="map-method">{named}</span> of its vector' in client.get("/audit").text


# -- in a browser --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:

    tmp = tmp_path_factory.mktemp("audit-browser")
    build(tmp / "photos", tmp / "db")  # the default model, as a user would run it
    with served(create_app(tmp / "db", token=TOKEN, quarantine_dir=tmp / "quarantine")) as url:
        yield url


@pytest.mark.browser
@pytest.mark.slow
def test_audit_page_and_map_render_and_link_to_items(server: str) -> None:
    if not CHROMIUM.exists():
        pytest.fail("the browser test needs Debian's chromium: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("response", lambda r: problems.append(r.url) if r.status >= 400 and "favicon" not in r.url else None)
        page.on("request", lambda r: None if r.url.startswith(server) else problems.append(r.url))
        page.goto(server + "/")
        page.get_by_role("link", name="Audit").click()
        page.wait_for_url("**/audit")
        assert page.locator("h1").inner_text().startswith("Audit of the collection")

        # the placeholder is the odd one out; the dark copy is under "dark"; both link to their item pages
        odd = page.locator("#outliers .card")
        assert odd.count() >= 1 and "coming-soon.jpg" in (odd.first.locator("img").get_attribute("alt") or "")
        dark_card = page.locator("#issue-dark + .grid .card", has_text="planted-dark.jpg")
        assert dark_card.count() == 1
        odd.first.scroll_into_view_if_needed()  # thumbnails load lazily, as they come into view
        wait_for_images(page, "#outliers")
        points = page.locator("#map a.point")
        assert points.count() >= 20
        assert page.locator("#map circle.flagged").count() >= 2
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(SCREENSHOT), full_page=True, clip={"x": 0, "y": 0, "width": 1100, "height": 1700})

        dark_card.click()
        page.wait_for_url("**/items/*")
        assert "planted-dark.jpg" in page.locator(".meta").inner_text()
        page.go_back()
        page.locator("#map a.point").first.click()
        page.wait_for_url("**/items/*")
        assert page.locator("h2", has_text="More like this").is_visible()

        # "sweep this cluster" opens the review page with the cluster's examples swept
        page.go_back()
        page.locator("#clusters a", has_text="Sweep this cluster").first.click()
        page.wait_for_url("**/review?like=*")
        page.locator("#review-list .card").first.wait_for(state="visible", timeout=30_000)
        browser.close()
    assert not problems, problems


def test_the_map_is_laid_out_once_per_audit(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """UMAP takes seconds: the page and the API share one layout until the index changes."""
    from lookalike.audit import map as audit_map
    from lookalike.web.routes import audit as audit_routes

    calls: list[int] = []

    def counting(*args: object, **kwargs: object) -> audit_map.CollectionMap:
        calls.append(1)
        return audit_map.collection_map(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(audit_routes, "collection_map", counting)
    first = client.get("/api/audit/map").json()
    assert client.get("/audit").status_code == 200
    assert client.get("/api/audit/map").json()["points"] == first["points"]
    assert len(calls) == 1
    client.post(
        "/api/audit/not-a-problem",
        json={"ids": [first["points"][0]["id"]]},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    client.get("/api/audit/map")
    assert len(calls) == 2  # a new audit, a new map
