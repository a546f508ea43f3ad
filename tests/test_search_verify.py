"""`search --verify`: the query checked point for point against its most similar results, copies first.

The collection is the hard case for the model: screenshots of one application, each showing another
real photo, plus one photo on its own. A screenshot of that photo, as a query, is most like the other
screenshots (they share the window chrome); the check puts the photo itself first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from imagegen import screenshot
from lookalike.cli.app import app
from lookalike.dedup.copies import copies_first, search_verified
from lookalike.dedup.verify import GeometricCheck
from lookalike.index import Index
from lookalike.web import create_app


@dataclass(frozen=True)
class Scored:
    name: str
    score: float


def test_copies_first_moves_the_confirmed_up_and_keeps_both_orders() -> None:
    results = [Scored(n, s) for n, s in (("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.45), ("e", 0.4))]
    ordered, confirmed = copies_first(results, lambda r: r.name in {"c", "b", "d", "e"}, verify_k=4)
    # b and c are confirmed (in their order); d scores under the floor, e lies past the first four
    assert [r.name for r in ordered] == ["b", "c", "a", "d", "e"]
    assert confirmed == {1, 2}
    ordered, confirmed = copies_first(results, lambda r: False)
    assert ordered == results and not confirmed


@pytest.fixture(scope="module")
def screenshots(real_photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("search-verify")
    root = base / "photos"
    root.mkdir()
    for i, src in enumerate(real_photos[:16]):
        image = Image.open(src).convert("RGB")
        image.thumbnail((512, 512))
        if i == 0:
            image.save(root / "photo.jpg", quality=92)
            screenshot(image, 0).save(base / "query.png")  # not in the index
        else:
            screenshot(image, i).save(root / f"screenshot{i:02d}.png")
    db = base / "db"
    with Index.open(db) as index:
        index.add([root], calibrate=False)
    return {"db": db, "query": base / "query.png"}


def test_a_screenshot_query_finds_its_photo_first(screenshots: dict[str, Path]) -> None:
    with Index.open(screenshots["db"], create=False) as index:
        (plain,) = index.search_many([screenshots["query"]], k=4)
        # the model's own order: other screenshots first (shared chrome), the photo not among them
        assert all(Path(m.path).name.startswith("screenshot") for m in plain.results), plain.results
        check = GeometricCheck()
        (found,) = search_verified(index, [screenshots["query"]], k=4, check=check)
    first = found.results[0]
    assert Path(first.path).name == "photo.jpg" and first.verified, found.results
    assert not any(m.verified for m in found.results[1:])  # a shared window is no copy
    assert found.extra["verify"] == {"checked": 16, "confirmed": 1}
    assert len(found.results) == 4 and check.decoded == 17  # the query and every result


def test_cli_search_checks_by_default_and_no_verify_is_the_model_order(screenshots: dict[str, Path]) -> None:
    runner = CliRunner()
    args = ["search", str(screenshots["query"]), "--db", str(screenshots["db"]), "--json"]
    on = runner.invoke(app, args)
    assert on.exit_code == 0, on.output
    (result,) = json.loads(on.output)["queries"]
    assert Path(result["results"][0]["path"]).name == "photo.jpg" and result["results"][0]["verified"] is True
    assert result["verify"]["confirmed"] == 1
    off = runner.invoke(app, [*args, "--no-verify"])
    (plain,) = json.loads(off.output)["queries"]
    assert "verify" not in plain and not any(r.get("verified") for r in plain["results"])
    assert Path(plain["results"][0]["path"]).name != "photo.jpg"
    text = runner.invoke(app, args[:-1], env={"COLUMNS": "200"})
    assert "point for point" in text.output and "1 of the 16 most similar results" in text.output


def test_http_search_checks_only_when_asked(screenshots: dict[str, Path]) -> None:
    data = screenshots["query"].read_bytes()
    with TestClient(create_app(screenshots["db"])) as client:
        files = {"image": ("query.png", data, "image/png")}
        asked = client.post("/api/search", files=files, data={"k": "3", "verify": "true"}).json()["queries"][0]
        plain = client.post("/api/search", files=files, data={"k": "3"}).json()["queries"][0]
        photo_id = asked["results"][0]["id"]
        similar = client.get(f"/api/items/{photo_id}/similar", params={"verify": "true", "k": 2}).json()
    assert Path(asked["results"][0]["path"]).name == "photo.jpg" and asked["results"][0]["verified"] is True
    assert asked["query"] == "query.png" and len(asked["results"]) == 3
    assert "verify" not in plain and Path(plain["results"][0]["path"]).name != "photo.jpg"
    # "more like this" for the photo: no screenshot in the index shows it
    assert similar["queries"][0]["verify"]["confirmed"] == 0


def test_http_verified_searches_run_two_at_a_time(
    screenshots: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of verified searches queues instead of decoding as many pictures at once as requests
    arrive: each reads up to 17 images on 2 threads. All of them are answered."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    running, peak, lock = 0, 0, threading.Lock()
    prepare = GeometricCheck.prepare

    def slow_prepare(self, records):  # type: ignore[no-untyped-def]
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.3)
        try:
            return prepare(self, records)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(GeometricCheck, "prepare", slow_prepare)
    data = screenshots["query"].read_bytes()
    with TestClient(create_app(screenshots["db"])) as client:
        photo_id = client.post("/api/search", files={"image": ("q.png", data, "image/png")}, data={"k": "1"}).json()[
            "queries"
        ][0]["results"][0]["id"]

        def similar(_: int) -> int:
            return client.get(f"/api/items/{photo_id}/similar", params={"verify": "true", "k": 2}).status_code

        def upload(_: int) -> int:
            files = {"image": ("q.png", data, "image/png")}
            return client.post("/api/search", files=files, data={"k": "2", "verify": "true"}).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(similar, range(4))) + list(pool.map(upload, range(4)))
            burst = [pool.submit(similar if i % 2 else upload, i) for i in range(8)]
            codes += [f.result() for f in burst]
    assert codes == [200] * 16
    assert peak == 2, peak
