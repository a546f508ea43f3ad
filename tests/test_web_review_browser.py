"""The review page in a real browser: list groups, untick one copy, quarantine the rest (needs chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lookalike.index import Index
from lookalike.web import create_app
from test_web_browser import CHROMIUM
from test_web_review import TOKEN, blocky
from webserver import served as serving

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, object]]:

    root = tmp_path / "photos"
    root.mkdir()
    for seed in range(4):
        blocky(seed).save(root / f"img{seed}.png")
    blocky(0).resize((128, 96)).save(root / "img0_small.png")
    blocky(0).save(root / "img0_copy.jpg", quality=90)
    db = tmp_path / "db"
    with Index.open(db, model="dhash") as index:
        index.add([root])
    qdir = tmp_path / "quarantine"
    with serving(create_app(db, token=TOKEN, quarantine_dir=qdir)) as url:
        yield {"url": url, "root": root, "quarantine": qdir}


def test_untick_a_false_positive_and_quarantine_the_rest(served: dict[str, object]) -> None:
    if not CHROMIUM.exists():
        pytest.fail("the browser test needs Debian's chromium: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    root, qdir = Path(str(served["root"])), Path(str(served["quarantine"]))
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("response", lambda r: errors.append(r.url) if r.status >= 400 and "favicon" not in r.url else None)
        page.goto(str(served["url"]) + "/review")
        page.get_by_role("button", name="Find duplicate groups").click()
        boxes = page.locator("#review-list input[type=checkbox]")
        boxes.first.wait_for(state="visible", timeout=30_000)
        assert boxes.count() == 3  # keep (unticked) + two copies (ticked)
        assert [boxes.nth(i).is_checked() for i in range(3)] == [False, True, True]
        page.locator(".review-card", has_text="img0_copy.jpg").locator("input").uncheck()
        page.fill("#token", TOKEN)
        page.get_by_role("button", name="Quarantine ticked").click()
        page.locator("#status", has_text="Moved 1, skipped 0").wait_for(timeout=30_000)
        assert "lookalike restore" in page.locator("#status").inner_text()
        browser.close()
    assert not errors, errors
    assert not (root / "img0_small.png").exists() and (qdir / "img0_small.png").exists()
    assert (root / "img0_copy.jpg").exists() and (root / "img0.png").exists()
