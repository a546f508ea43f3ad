"""Issue #13, a hostile test run: a real `lookalike serve` process on 127.0.0.1, and the real CLI.

Bombs uploaded to the server must not raise its peak memory; item ids beyond SQLite's 64-bit range
are "not found", never a 500 or a traceback; idle and slow connections are dropped after a bounded
time while other clients are still served.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import bombs
from lookalike.index import Index

ROOT = Path(__file__).resolve().parents[1]
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
#: How much later than its timeout a connection may still be open (a loaded CI machine).
SLACK = 6.0
FLAT_MB = 150
HUGE_IDS = ["99999999999999999999999", str(2**63), str(2**64 + 5), "-1", "-99999999999999999999999"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def blocky(seed: int, size: tuple[int, int] = (256, 192)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)).resize(size)


def png_bytes(image: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    photos = base / "photos"
    photos.mkdir()
    for seed in range(4):
        blocky(seed).save(photos / f"img{seed}.png")
    with Index.open(base / "db", model="dhash") as index:
        assert index.add([photos]).added == 4
    return base / "db"


@pytest.fixture(scope="module")
def server(db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """`lookalike serve` in its own process, with short client timeouts; yields (base URL, pid)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    cmd = [sys.executable, "-m", "lookalike", "serve", "--db", str(db), "--port", str(port)]
    cmd += ["--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT), "--timeout-keep-alive", "1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"the server exited: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "the server did not start within 60 s"
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    try:
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung shutdown is itself a failure
            proc.kill()
            proc.wait()
            pytest.fail("the server did not shut down within 15 s of SIGTERM")


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    """16000 x 16000 black RGB: 0.75 MB on disk, ~1 GB decoded."""
    return bombs.png(16_000, 16_000)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def upload(url: str, data: bytes, name: str) -> httpx.Response:
    return httpx.post(f"{url}/api/search", files={"image": (name, data, "application/octet-stream")}, timeout=60)


# --------------------------------------------------------------------------------- 1: bombs
def test_container_bomb_uploads_are_413_and_server_memory_stays_flat(server: tuple[str, int], huge_png: bytes) -> None:
    url, pid = server
    assert upload(url, png_bytes(blocky(1)), "warm-up.png").status_code == 200  # first-request allocations
    before = peak_rss_mb(pid)
    for name, data in [
        ("favicon.ico", bombs.ico(huge_png)),
        ("icon.icns", bombs.icns(huge_png)),
        ("medium.ico", bombs.ico(bombs.png(9_000, 9_000))),  # 81 MP: over the server's 64 MP only
        ("anim.gif", bombs.gif_frame_beyond_screen(30_000, 30_000)),
    ]:
        response = upload(url, data, name)
        assert response.status_code == 413, (name, response.text)
        assert response.json()["reason"] == "too many pixels", name
        assert peak_rss_mb(pid) - before < FLAT_MB, (name, before, peak_rss_mb(pid))
    assert upload(url, png_bytes(blocky(2)), "after.png").status_code == 200


def test_an_indexed_file_swapped_for_a_bomb_is_not_decoded_whole(
    server: tuple[str, int], db: Path, huge_png: bytes
) -> None:
    url, pid = server
    items = httpx.get(f"{url}/api/items", timeout=10).json()["items"]
    item = next(it for it in items if it["name"] == "img3.png")
    assert httpx.get(f"{url}/api/items/{item['id']}/image", timeout=10).status_code == 200
    before = peak_rss_mb(pid)
    (db.parent / "photos" / "img3.png").write_bytes(bombs.ico(huge_png))
    for what in ("image", "thumbnail"):
        response = httpx.get(f"{url}/api/items/{item['id']}/{what}", timeout=60)
        assert response.status_code in (413, 415), (what, response.status_code)
        assert peak_rss_mb(pid) - before < FLAT_MB, (what, before, peak_rss_mb(pid))


# ------------------------------------------------------------------------------ 2: item ids
@pytest.mark.parametrize("item_id", HUGE_IDS)
def test_ids_outside_the_64_bit_range_are_404_over_http(server: tuple[str, int], item_id: str) -> None:
    url, _ = server
    for path in ("", "/similar", "/thumbnail", "/image"):
        response = httpx.get(f"{url}/api/items/{item_id}{path}", timeout=10)
        assert response.status_code == 404, (path, response.status_code, response.text)
    assert httpx.get(f"{url}/items/{item_id}", timeout=10).status_code == 404


@pytest.mark.parametrize("item_id", ["99999999999999999999999", str(2**63), "-5"])
def test_search_by_an_impossible_id_is_a_one_line_cli_error(db: Path, item_id: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike", "search", "--db", str(db), f"--id={item_id}"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and item_id in lines[0] and "error" in lines[0], proc.stderr


# ------------------------------------------------------------------- 3: idle and slow clients
def _wait_until_closed(socks: list[socket.socket], within: float) -> tuple[list[socket.socket], float]:
    """Read from every socket until the server closes it or ``within`` seconds pass; the ones left open."""
    start = time.monotonic()
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    open_ = set(socks)
    while open_ and time.monotonic() - start < within:
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            try:
                chunk = sock.recv(65536)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            except ConnectionError:
                chunk = b""
            if not chunk:
                selector.unregister(sock)
                open_.discard(sock)  # type: ignore[arg-type]
    selector.close()
    return list(open_), time.monotonic() - start


def _connect(url: str) -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_slowloris_sockets_are_dropped_while_others_are_served(server: tuple[str, int]) -> None:
    url, _ = server
    socks = []
    try:
        for i in range(200):
            sock = _connect(url)
            if i % 4:  # most send a request line and a header, never the blank line; some send nothing at all
                sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + str(i).encode())
            socks.append(sock)
        started = time.monotonic()
        for _ in range(3):  # the server still answers others meanwhile, promptly
            response = httpx.get(f"{url}/api/health", timeout=5)
            assert response.status_code == 200
        assert time.monotonic() - started < HEADER_TIMEOUT
        left, waited = _wait_until_closed(socks, HEADER_TIMEOUT + SLACK)
        assert not left, f"{len(left)} of {len(socks)} idle sockets still open after {waited:.1f} s"
        assert httpx.get(f"{url}/api/health", timeout=5).status_code == 200
    finally:
        for sock in socks:
            sock.close()


def test_partial_headers_on_a_kept_alive_connection_are_dropped(server: tuple[str, int]) -> None:
    url, _ = server
    with _connect(url) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = b""
        while b'"status"' not in reply:
            chunk = sock.recv(65536)
            assert chunk, "closed before answering"
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")
        # Trickle a second request's headers, one byte at a time, each well inside any idle timer.
        deadline = time.monotonic() + HEADER_TIMEOUT + SLACK
        closed = False
        for byte in b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 200:
            if time.monotonic() > deadline:
                break
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            left, _ = _wait_until_closed([sock], 0.25)
            if not left:
                closed = True
                break
            sock.setblocking(True)
        assert closed, "a connection trickling its headers was kept open past the header timeout"


def test_a_stalled_upload_is_dropped(server: tuple[str, int]) -> None:
    url, _ = server
    with _connect(url) as sock:
        sock.sendall(
            b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=xx\r\n\r\n--xx\r\n"
        )
        assert httpx.get(f"{url}/api/health", timeout=5).status_code == 200
        left, waited = _wait_until_closed([sock], BODY_TIMEOUT + SLACK)
        assert not left, f"a stalled upload was still open after {waited:.1f} s"


def _multipart(data: bytes) -> tuple[bytes, bytes]:
    head = b'--xx\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\nContent-Type: image/png\r\n\r\n'
    body = head + data + b"\r\n--xx--\r\n"
    headers = (
        b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=xx\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    )
    return headers, body


def test_slow_but_steady_and_large_uploads_are_served(server: tuple[str, int]) -> None:
    url, _ = server
    noise = np.random.default_rng(3).integers(0, 256, size=(1000, 1000, 3), dtype=np.uint8)
    big = png_bytes(Image.fromarray(noise))  # ~3 MB: the server pauses reading while the app catches up
    assert upload(url, big, "big.png").status_code == 200
    headers, body = _multipart(png_bytes(blocky(2)))
    with _connect(url) as sock:
        sock.sendall(headers)
        pieces = 8
        step = -(-len(body) // pieces)
        for i in range(pieces):  # ~4 s in all, twice the body timeout, but never 2 s without a byte
            time.sleep(BODY_TIMEOUT / 4)
            sock.sendall(body[i * step : (i + 1) * step])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
