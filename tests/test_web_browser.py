"""The search page in a real browser: Playwright drives Debian's headless Chromium against a live server.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``scripts/install.sh --test`` does it) and the
``playwright`` Python package (never ``playwright install``: we use the system browser). Uses the bundled
demo photos and the default model, so it runs offline. Saves ``docs/screenshot.png`` for the README.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from lookalike.demo import demo_images_dir, demo_queries_dir
from lookalike.index import Index
from lookalike.web import create_app
from webserver import served, wait_for_images

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:

    db = tmp_path_factory.mktemp("browser") / "db"
    with Index.open(db) as index:  # the default model, as a user would run it
        report = index.add([demo_images_dir()])
    assert report.added >= 10, report.skipped
    with served(create_app(db)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail("the browser test needs Debian's chromium: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


def query(name: str) -> str:
    path = demo_queries_dir() / name
    assert path.exists(), path
    return str(path)


def test_upload_results_item_page_and_no_match(server: str, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    external: list[str] = []
    page.on(
        "request", lambda r: None if r.url.startswith(server) or r.url.startswith("blob:") else external.append(r.url)
    )
    page.goto(server + "/")

    # A real photo: an edited copy of an indexed windmill. Cards appear, best first, with captions.
    page.set_input_files("#file", query("edited-copy-windmill-chesterton.jpg"))
    cards = page.locator("#results .card")
    cards.first.wait_for(state="visible", timeout=30_000)
    assert cards.count() == 4
    captions = cards.locator(".caption").all_inner_texts()
    caption = re.compile(r"^similarity: \d{1,3}%( · (duplicate|very similar|similar|weak))?$")
    assert all(caption.match(c.strip()) for c in captions), captions
    assert captions[0].strip().endswith("duplicate")  # the demo collection is calibrated: labels show
    assert "windmill" in (cards.first.locator("img").get_attribute("alt") or "")
    assert page.locator("#no-match").is_hidden()
    assert page.locator("#query-image").is_visible()
    # Every thumbnail actually loaded (naturalWidth > 0), none broken.
    wait_for_images(page, "#results")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Click the best result: its page shows the image, metadata and "more like this".
    cards.first.click()
    page.wait_for_url("**/items/*")
    assert page.locator("h2", has_text="More like this").is_visible()
    assert page.locator(".item .preview").is_visible()
    assert "windmill-chesterton.jpg" in page.locator(".meta").inner_text()
    assert page.locator("#more-like-this .card").count() >= 4

    # An out-of-domain picture: the no-match message and a "show me anyway" control that reveals results.
    page.goto(server + "/")
    page.set_input_files("#file", query("out-of-domain-flat-graphic.jpg"))
    warning = page.locator("#no-match")
    warning.wait_for(state="visible", timeout=30_000)
    assert "no similar images" in warning.inner_text().lower()
    assert page.locator("#results").is_hidden()
    page.get_by_role("button", name="Show me anyway").click()
    assert page.locator("#results").is_visible()
    assert page.locator("#results .card").count() == 4

    # A file that is not a picture: the server's message is shown on the page.
    page.set_input_files("#file", files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"just text"}])
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=30_000)
    assert "not an image" in error.inner_text()
    assert not external, f"the page fetched external resources: {external}"
    page.close()


def test_copies_first_marks_the_copy_checked_point_for_point(server: str, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(server + "/")
    page.set_input_files("#file", query("edited-copy-windmill-chesterton.jpg"))
    cards = page.locator("#results .card")
    cards.first.wait_for(state="visible", timeout=30_000)
    assert "copy (point for point)" not in cards.first.inner_text()  # off unless asked
    with page.expect_response("**/api/search") as answer:
        page.check("#verify")  # re-runs the search for the same picture
    assert answer.value.ok
    page.locator("#results .card .label-copy").first.wait_for(state="visible", timeout=30_000)
    first = cards.first
    assert "windmill" in (first.locator("img").get_attribute("alt") or "")
    assert first.inner_text().strip().endswith("copy (point for point)")
    assert page.locator("#results .label-copy").count() == 1  # the other demo photos are no copies
    page.close()


def test_phone_width_and_browse(server: str, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True)
    page.goto(server + "/")
    page.set_input_files("#file", query("edited-copy-windmill-chesterton.jpg"))
    page.locator("#results .card").first.wait_for(state="visible", timeout=30_000)
    # Nothing wider than the screen: no sideways scrolling on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    boxes = [c.bounding_box() for c in page.locator("#results .card").all()]
    assert all(b is not None and b["x"] >= 0 and b["x"] + b["width"] <= 375 for b in boxes)
    page.goto(server + "/browse")
    assert page.locator(".card").count() >= 10
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.close()
