"""The HTTP API: every endpoint, and every bad input the issue lists, against a small dHash index."""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.index import Index
from lookalike.web import create_app

TOKEN = "s3cret-token-for-tests-0123456789"


def blocky(seed: int, size: tuple[int, int] = (256, 192)) -> Image.Image:
    """A picture of random coloured blocks: distinct dHashes per seed, cheap to make."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)


def encode(image: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge picture: a decompression bomb, refused before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("web")
    root = base / "photos"
    root.mkdir()
    for seed in range(10):
        blocky(seed).save(root / f"img{seed:02d}.png")
    outside = base / "outside"
    outside.mkdir()
    secret = outside / "secret.png"
    blocky(99).save(secret)
    os.symlink(secret, root / "link-to-outside.png")
    db = base / "db"
    with Index.open(db, model="dhash") as index:
        report = index.add([root])
    assert report.added == 11, report.skipped
    return {"base": base, "root": root, "db": db, "secret": secret}


def make_client(collection: dict[str, Path], **kwargs: object) -> TestClient:
    return TestClient(create_app(collection["db"], **kwargs))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def client(collection: dict[str, Path]) -> TestClient:
    with make_client(collection) as c:
        yield c


def id_of(client: TestClient, name: str) -> int:
    items = client.get("/api/items", params={"limit": 500}).json()["items"]
    return next(it["id"] for it in items if it["name"] == name)


def search(client: TestClient, data: bytes, k: object = 4, name: str = "q.png"):  # type: ignore[no-untyped-def]
    return client.post("/api/search", files={"image": (name, data, "image/png")}, data={"k": str(k)})


# ------------------------------------------------------------------------------------------ reading
def test_health(client: TestClient) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok"
    assert body["items"] == 11
    assert body["model"] == "dhash"
    assert body["writable"] is False


def test_search_finds_the_resized_copy_first_with_the_cli_schema(client: TestClient, collection) -> None:
    query = encode(blocky(3).resize((512, 384)), "JPEG", quality=90)
    response = search(client, query, k=3, name="copy.jpg")
    assert response.status_code == 200
    doc = response.json()
    assert list(doc) == ["queries"]
    (result,) = doc["queries"]
    assert result["query"] == "copy.jpg"
    assert result["no_match"] is False
    assert len(result["results"]) == 3
    top = result["results"][0]
    assert Path(top["path"]).name == "img03.png"
    assert top["score"] > 0.8
    scores = [r["score"] for r in result["results"]]
    assert scores == sorted(scores, reverse=True)
    # Same fields as `lookalike search --json` (QueryResult.to_dict), plus URLs for the page.
    with Index.open(collection["db"], create=False) as index:
        expected = index.search(query, k=3).to_dict()
    assert {r["id"]: r["score"] for r in expected["results"]} == {r["id"]: r["score"] for r in result["results"]}
    assert set(expected["results"][0]) <= set(top)
    assert top["thumbnail_url"].startswith(f"/api/items/{top['id']}/thumbnail?v=")


def test_search_of_an_unrelated_picture_is_no_match(client: TestClient) -> None:
    noise = np.random.default_rng(7).integers(0, 256, size=(200, 200, 3), dtype=np.uint8)
    result = search(client, encode(Image.fromarray(noise)), k=4).json()["queries"][0]
    assert result["no_match"] is True
    assert len(result["results"]) == 4  # shown anyway on request
    assert max(r["score"] for r in result["results"]) < 0.5


@pytest.mark.parametrize("k", [0, -1, 201, 10_000, "abc"])
def test_k_outside_1_to_200_is_422(client: TestClient, k: object) -> None:
    assert search(client, encode(blocky(1)), k=k).status_code == 422
    assert client.get("/api/items/1/similar", params={"k": k}).status_code == 422


def test_k_bounds_are_accepted(client: TestClient) -> None:
    assert len(search(client, encode(blocky(1)), k=1).json()["queries"][0]["results"]) == 1
    assert len(search(client, encode(blocky(1)), k=200).json()["queries"][0]["results"]) == 11
    assert len(client.get("/api/items/1/similar", params={"k": 200}).json()["queries"][0]["results"]) == 10


def test_missing_image_field_is_422(client: TestClient) -> None:
    assert client.post("/api/search", data={"k": "4"}).status_code == 422


def test_non_image_is_415_with_a_message(client: TestClient) -> None:
    response = client.post("/api/search", files={"image": ("notes.png", b"hello, I am text" * 50, "image/png")})
    assert response.status_code == 415
    assert "not an image" in response.json()["detail"]


def test_corrupt_image_is_422_with_a_message(client: TestClient) -> None:
    jpeg = encode(blocky(2, (640, 480)), "JPEG", quality=95)
    response = search(client, jpeg[: len(jpeg) // 3])
    assert response.status_code == 422
    assert response.json()["reason"] == "corrupt"
    assert "cannot decode" in response.json()["detail"]


def test_empty_upload_is_422(client: TestClient) -> None:
    response = search(client, b"")
    assert response.status_code == 422
    assert "empty" in response.json()["detail"]


def test_decompression_bomb_is_413(client: TestClient) -> None:
    response = search(client, png_header_only(100_000, 100_000))
    assert response.status_code == 413
    assert "decompression bomb" in response.json()["detail"]


def test_pixel_limit_is_configurable(collection) -> None:
    with make_client(collection, max_pixels=1_000_000) as small:
        assert search(small, encode(blocky(1, (1200, 1000)))).status_code == 413
        assert search(small, encode(blocky(1, (1000, 1000)))).status_code == 200


def test_upload_over_the_byte_limit_is_413(collection) -> None:
    big = np.random.default_rng(0).integers(0, 256, size=(300, 300, 3), dtype=np.uint8)
    data = encode(Image.fromarray(big))  # ~270 KB of incompressible PNG
    assert len(data) > 200_000
    with make_client(collection, max_upload_bytes=100_000) as small:
        response = search(small, data)  # declared Content-Length far over the limit
        assert response.status_code == 413
        assert "too large" in response.json()["detail"]
        # Over the file limit but inside the multipart slack: caught when the file is read.
        response = search(small, data[:120_000])
        assert response.status_code == 413
        # A chunked body with no Content-Length is counted as it streams in.
        body, ctype = _multipart(data)
        response = small.post(
            "/api/search",
            content=iter([body[i : i + 8192] for i in range(0, len(body), 8192)]),
            headers={"content-type": ctype},
        )
        assert response.status_code == 413
        assert search(small, encode(blocky(4))).status_code == 200


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "lookalike-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_item_metadata_and_404(client: TestClient) -> None:
    item_id = id_of(client, "img05.png")
    item = client.get(f"/api/items/{item_id}").json()
    assert item["id"] == item_id
    assert (item["width"], item["height"]) == (256, 192)
    assert item["path"].endswith("img05.png")
    assert client.get("/api/items/999999").status_code == 404
    assert client.get("/api/items/not-a-number").status_code == 422


@pytest.mark.parametrize("item_id", [2**63, 99999999999999999999999, -(2**63) - 1, -1])
def test_ids_outside_the_64_bit_range_are_404(client: TestClient, item_id: int) -> None:
    for path in ("", "/similar", "/thumbnail", "/image"):
        assert client.get(f"/api/items/{item_id}{path}").status_code == 404, path
    assert client.get(f"/items/{item_id}").status_code == 404
    assert client.post("/api/review/sweep", data={"like": str(item_id)}).status_code == 404


def test_deleting_an_id_outside_the_64_bit_range_is_404(tmp_path: Path, collection) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(create_app(collection["db"], token=TOKEN, upload_dir=tmp_path)) as c:
        assert c.delete(f"/api/items/{2**63}", headers=auth).status_code == 404
        assert c.delete("/api/items/-3", headers=auth).status_code == 404
        assert c.get("/api/health").json()["items"] == 11


def test_items_paging(client: TestClient) -> None:
    first = client.get("/api/items", params={"offset": 0, "limit": 4}).json()
    rest = client.get("/api/items", params={"offset": 4, "limit": 100}).json()
    assert first["total"] == 11
    ids = [it["id"] for it in first["items"] + rest["items"]]
    assert len(ids) == 11 == len(set(ids))
    assert client.get("/api/items", params={"limit": 0}).status_code == 422


def test_similar_excludes_the_item_itself(client: TestClient) -> None:
    item_id = id_of(client, "img07.png")
    result = client.get(f"/api/items/{item_id}/similar", params={"k": 5}).json()["queries"][0]
    assert result["query"] == f"id:{item_id}"
    assert len(result["results"]) == 5
    assert item_id not in [r["id"] for r in result["results"]]
    assert client.get("/api/items/999999/similar").status_code == 404


def test_thumbnail_is_cached_on_disk_with_cache_headers(client: TestClient, collection) -> None:
    item_id = id_of(client, "img02.png")
    item = client.get(f"/api/items/{item_id}").json()
    first = client.get(f"/api/items/{item_id}/thumbnail")
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/jpeg"
    assert first.headers["cache-control"] == "no-cache"
    etag = first.headers["etag"]
    assert Image.open(io.BytesIO(first.content)).size == (256, 192)  # never upscaled
    cached = collection["db"] / "thumbnails" / item["sha256"][:2] / f"{item['sha256']}-320.jpg"
    assert cached.read_bytes() == first.content
    again = client.get(f"/api/items/{item_id}/thumbnail", headers={"If-None-Match": etag})
    assert again.status_code == 304
    versioned = client.get(item["thumbnail_url"])
    assert "immutable" in versioned.headers["cache-control"]
    large = client.get(f"/api/items/{item_id}/thumbnail", params={"size": "large"})
    assert large.status_code == 200
    assert client.get(f"/api/items/{item_id}/thumbnail", params={"size": "../x"}).status_code == 422


def test_image_serves_the_indexed_file(client: TestClient, collection) -> None:
    item_id = id_of(client, "img04.png")
    response = client.get(f"/api/items/{item_id}/image", params={"path": "/etc/passwd"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == (collection["root"] / "img04.png").read_bytes()
    assert client.get("/api/items/999999/image").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/api/items/..%2F..%2F..%2Fetc%2Fpasswd/image",
        "/api/items/%2Fetc%2Fpasswd/image",
        "/api/items/..%252F..%252Fetc%252Fpasswd/thumbnail",
        "/api/items/1/../../../../etc/passwd",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/static//etc/passwd",
        "/api/items/-1/image",
    ],
)
def test_no_path_traversal(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code in (404, 422), (url, response.status_code)
    assert b"root:" not in response.content


def test_symlink_outside_the_indexed_folders_is_not_served(client: TestClient, collection) -> None:
    item_id = id_of(client, "link-to-outside.png")  # indexed: the walker follows the link
    for what in ("image", "thumbnail"):
        response = client.get(f"/api/items/{item_id}/{what}")
        assert response.status_code == 403, what
        assert response.content != collection["secret"].read_bytes()
    # Its metadata and recommendations are still fine: only the file is withheld.
    assert client.get(f"/api/items/{item_id}").status_code == 200


def test_missing_file_is_404(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    blocky(1).save(root / "a.png")
    blocky(2).save(root / "b.png")
    with Index.open(tmp_path / "db", model="dhash") as index:
        index.add([root])
    (root / "a.png").unlink()
    with TestClient(create_app(tmp_path / "db")) as c:
        item_id = id_of(c, "a.png")
        assert c.get(f"/api/items/{item_id}/image").status_code == 404
        assert c.get(f"/api/items/{item_id}/thumbnail").status_code == 404


# ------------------------------------------------------------------------------------------ writing
def test_write_endpoints_are_disabled_without_a_token(client: TestClient) -> None:
    files = {"image": ("n.png", encode(blocky(50)), "image/png")}
    assert client.post("/api/items", files=files).status_code == 403
    assert client.post("/api/items", files=files, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 403
    assert client.delete("/api/items/1", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 403
    assert client.get("/api/items/1").status_code == 200


def test_add_and_delete_with_the_token(tmp_path: Path, collection) -> None:
    uploads = tmp_path / "uploads"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    files = {"image": ("new.png", encode(blocky(60)), "image/png")}
    db = tmp_path / "db"
    with Index.open(db, model="dhash") as index:
        index.add([collection["root"]])
    with TestClient(create_app(db, token=TOKEN, upload_dir=uploads)) as c:
        assert c.post("/api/items", files=files).status_code == 401
        assert c.post("/api/items", files=files, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/api/items", files=files, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        assert c.delete("/api/items/1").status_code == 401
        assert c.post("/api/items", files={"image": ("x.png", b"text", "image/png")}, headers=auth).status_code == 415

        added = c.post("/api/items", files=files, headers=auth)
        assert added.status_code == 201, added.text
        item = added.json()["item"]
        stored = Path(item["path"])
        assert stored.parent == uploads.resolve()
        assert stored.read_bytes() == files["image"][1]
        again = c.post("/api/items", files=files, headers=auth)
        assert again.status_code == 200
        assert again.json()["item"]["id"] == item["id"]
        top = search(c, encode(blocky(60).resize((300, 225)))).json()["queries"][0]["results"][0]
        assert top["id"] == item["id"]
        assert c.get(f"/api/items/{item['id']}/image").content == files["image"][1]

        assert c.delete(f"/api/items/{item['id']}", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.delete(f"/api/items/{item['id']}", headers=auth).json() == {"removed": item["id"]}
        assert c.get(f"/api/items/{item['id']}").status_code == 404
        assert c.delete(f"/api/items/{item['id']}", headers=auth).status_code == 404
        assert stored.exists()  # the index forgets it; the file stays
        other = id_of(c, "img01.png")
        assert c.delete(f"/api/items/{other}", headers=auth).status_code == 200
        assert (collection["root"] / "img01.png").exists()


def test_adding_needs_an_upload_folder(collection) -> None:
    with make_client(collection, token=TOKEN) as c:
        files = {"image": ("n.png", encode(blocky(50)), "image/png")}
        response = c.post("/api/items", files=files, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 403
        assert "upload folder" in response.json()["detail"]


def test_empty_token_is_refused(collection) -> None:
    with pytest.raises(ValueError):
        create_app(collection["db"], token="  ")


# -------------------------------------------------------------------------------- CORS and headers
def test_no_cors_unless_configured(client: TestClient, collection) -> None:
    origin = {"Origin": "https://shop.example"}
    assert "access-control-allow-origin" not in client.get("/api/health", headers=origin).headers
    preflight = client.options("/api/search", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    with make_client(collection, cors_origins=["https://shop.example"]) as c:
        assert c.get("/api/health", headers=origin).headers["access-control-allow-origin"] == "https://shop.example"
        other = c.get("/api/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_security_headers(client: TestClient) -> None:
    headers = client.get("/").headers
    assert headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in headers["content-security-policy"]


def test_hide_paths(collection) -> None:
    with make_client(collection, expose_paths=False) as c:
        top = search(c, encode(blocky(3))).json()["queries"][0]["results"][0]
        assert top["path"] == "img03.png"


# ----------------------------------------------------------------------------------------- pages
def test_pages_render_without_external_resources(client: TestClient) -> None:
    home = client.get("/")
    assert home.status_code == 200
    assert 'id="search-form"' in home.text
    assert "http://" not in home.text and "https://" not in home.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    item_id = id_of(client, "img06.png")
    item = client.get(f"/items/{item_id}")
    assert item.status_code == 200
    assert "More like this" in item.text
    assert item.text.count('class="card"') == 8
    assert client.get(f"/items/{item_id}", params={"k": 2}).text.count('class="card"') == 2
    assert client.get("/items/999999").status_code == 404
    browse = client.get("/browse")
    assert browse.text.count('class="card"') == 11
    assert "page 1 of 1" in browse.text
    assert client.get("/browse", params={"page": 0}).status_code == 422


def test_api_docs_offline(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    for path in ("/api/search", "/api/items/{item_id}/similar", "/api/items/{item_id}/thumbnail", "/api/health"):
        assert path in docs.text
    assert "cdn" not in docs.text.lower()
    spec = client.get("/openapi.json").json()
    assert {"/api/search", "/api/items", "/api/items/{item_id}", "/api/items/{item_id}/image"} <= set(spec["paths"])


# ----------------------------------------------------------------------------------- concurrency
def test_concurrent_searches_are_batched_and_correct(client: TestClient) -> None:
    names = {seed: f"img{seed:02d}.png" for seed in range(10)}
    queries = {seed: encode(blocky(seed).resize((320, 240)), "JPEG", quality=92) for seed in names}
    answers: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for _ in range(3):
                response = search(client, queries[seed], k=2)
                assert response.status_code == 200
                answers[seed] = Path(response.json()["queries"][0]["results"][0]["path"]).name
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert answers == names
    batches = client.get("/api/health").json()["batches"]
    assert sum(int(size) * n for size, n in batches.items()) >= 30
