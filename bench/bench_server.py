"""Load test of ``lookalike serve`` over loopback: concurrent photo uploads plus "more like this" calls.

What it does: indexes real photos (Debian-package photos, see ``tools/lookalike_data.py``)
with the default model, starts ``lookalike serve`` as a separate process on a free 127.0.0.1 port,
then runs C client threads; each uploads U real photos of 1-3 MB (``POST /api/search``, k=4) and
after each upload asks ``GET /api/items/{id}/similar`` for its best hit. Prints latency
percentiles, throughput, errors (must be 0), the server's memory and how many cores it kept busy.

Usage: python bench/bench_server.py [--clients 8] [--uploads 100] [--collection 289]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tools"))  # lookalike_data

from _util import pct, print_table  # noqa: E402
from lookalike.models.registry import DEFAULT_MODEL  # noqa: E402
from lookalike_data import photos  # noqa: E402

MB = 1_000_000


def upload_set(sources: list[Path], n: int, folder: Path) -> list[bytes]:
    """n JPEGs of 1-3 MB made from real photos: as-is when already that size, else re-encoded.

    Smaller photos are upscaled (bicubic) to a 12 MP-class frame so the server decodes and embeds
    what a phone would send.
    """
    out: list[bytes] = []
    for path in sources:
        if len(out) == n:
            break
        size = path.stat().st_size
        if path.suffix.lower() in (".jpg", ".jpeg") and MB <= size <= 3 * MB:
            out.append(path.read_bytes())
            continue
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        for side, quality in ((4000, 90), (3200, 88), (2400, 85), (4600, 92)):
            scale = side / max(rgb.size)
            frame = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            frame.save(buf, "JPEG", quality=quality)
            if MB <= buf.tell() <= 3 * MB:
                out.append(buf.getvalue())
                break
    for i, data in enumerate(out):
        (folder / f"upload-{i:02d}.jpg").write_bytes(data)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in KiB from /proc."""
    out = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--uploads", type=int, default=100, help="uploads per client")
    parser.add_argument("--collection", type=int, default=None, help="how many photos to index (default: all)")
    parser.add_argument("--distinct", type=int, default=24, help="distinct upload files to cycle through")
    parser.add_argument("--k", type=int, default=4)
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-server-") as tmp:
        tmpdir = Path(tmp)
        collection = photos(args.collection)
        db = tmpdir / "db"
        started = time.perf_counter()
        listing = tmpdir / "collection"
        listing.mkdir()
        for i, path in enumerate(collection):  # one folder of links to the photos, indexed as a user would
            os.symlink(path, listing / f"{i:04d}{path.suffix}")
        subprocess.run(
            [sys.executable, "-m", "lookalike", "index", str(listing), "--db", str(db), "-q"], check=True, env=env
        )
        print(f"indexed {len(collection)} photos in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        uploads_dir = tmpdir / "uploads"
        uploads_dir.mkdir()
        # Upload photos that are *not* all in the collection: take them from the whole photo list, largest first.
        pool = sorted(photos(), key=lambda p: -p.stat().st_size)
        bodies = upload_set(pool, args.distinct, uploads_dir)
        sizes = np.array([len(b) for b in bodies]) / MB
        print(
            f"{len(bodies)} distinct uploads, {sizes.min():.1f}-{sizes.max():.1f} MB (mean {sizes.mean():.1f})",
            file=sys.stderr,
        )

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "lookalike", "serve", "--db", str(db), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: {server.stderr.read().decode() if server.stderr else ''}")
                time.sleep(0.2)
            with httpx.Client(base_url=base, timeout=120) as warm:  # first requests pay one-off costs
                for body in bodies[:4]:
                    warm.post("/api/search", files={"image": ("w.jpg", body, "image/jpeg")}, data={"k": "4"})
            idle = proc_status(server.pid)

            lat: dict[str, list[float]] = {"search (upload)": [], "similar": []}
            errors: dict[str, list[str]] = {"search (upload)": [], "similar": []}
            lock = threading.Lock()
            rss_samples: list[int] = []
            done = threading.Event()

            def sample_rss() -> None:
                while not done.is_set():
                    rss_samples.append(proc_status(server.pid)["VmRSS"])
                    time.sleep(0.1)

            def client(c: int) -> None:
                with httpx.Client(base_url=base, timeout=120) as http:
                    for i in range(args.uploads):
                        body = bodies[(c * 7 + i) % len(bodies)]
                        t0 = time.perf_counter()
                        r = http.post(
                            "/api/search",
                            files={"image": (f"c{c}-{i}.jpg", body, "image/jpeg")},
                            data={"k": str(args.k)},
                        )
                        t1 = time.perf_counter()
                        ok = r.status_code == 200 and len(r.json()["queries"][0]["results"]) == args.k
                        with lock:
                            lat["search (upload)"].append((t1 - t0) * 1000)
                            if not ok:
                                errors["search (upload)"].append(f"{r.status_code} {r.text[:200]}")
                        if not ok:
                            continue
                        top = r.json()["queries"][0]["results"][0]["id"]
                        t0 = time.perf_counter()
                        s = http.get(f"/api/items/{top}/similar", params={"k": args.k})
                        t1 = time.perf_counter()
                        with lock:
                            lat["similar"].append((t1 - t0) * 1000)
                            if s.status_code != 200 or len(s.json()["queries"][0]["results"]) != args.k:
                                errors["similar"].append(f"{s.status_code} {s.text[:200]}")

            sampler = threading.Thread(target=sample_rss, daemon=True)
            sampler.start()
            load0 = os.getloadavg()[0]
            cpu0 = cpu_seconds(server.pid)
            t_start = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool_exec:
                list(pool_exec.map(client, range(args.clients)))
            wall = time.perf_counter() - t_start
            cpu1 = cpu_seconds(server.pid)
            load1 = os.getloadavg()[0]
            done.set()
            sampler.join()
            final = proc_status(server.pid)
            health = httpx.get(base + "/api/health").json()
        finally:
            server.terminate()
            server.wait(timeout=30)

    rows = []
    for name, ms in lat.items():
        arr = np.array(ms)
        rows.append([name, len(arr), len(errors[name]), len(arr) / wall, pct(arr, 50), pct(arr, 99), float(arr.max())])
    total = np.array(lat["search (upload)"] + lat["similar"])
    n_err = sum(len(e) for e in errors.values())
    rows.append(["all", len(total), n_err, len(total) / wall, pct(total, 50), pct(total, 99), float(total.max())])
    print_table(
        f"lookalike serve under load: {args.clients} clients x {args.uploads} uploads (+1 similar each), "
        f"{len(collection)} indexed photos, {DEFAULT_MODEL}, {os.cpu_count()} CPUs, loopback",
        ["endpoint", "requests", "errors", "req/s", "p50 ms", "p99 ms", "max ms"],
        rows,
    )
    batches = {int(k): v for k, v in health["batches"].items()}
    n_batched = sum(k * v for k, v in batches.items())
    mean_batch = n_batched / max(1, sum(batches.values()))
    print_table(
        "server process",
        [
            "RSS idle (MB)",
            "RSS during load, max sampled (MB)",
            "peak RSS, VmHWM (MB)",
            "server CPU (cores busy)",
            "server CPU ms per upload+similar",
            "mean batch",
            "machine load avg (start/end)",
        ],
        [
            [
                idle["VmRSS"] / 1024,
                max(rss_samples) / 1024,
                final["VmHWM"] / 1024,
                (cpu1 - cpu0) / wall,
                (cpu1 - cpu0) / max(1, len(lat["search (upload)"])) * 1000,
                round(mean_batch, 2),
                f"{load0:.1f} / {load1:.1f}",
            ]
        ],
    )
    print(f"\nupload files: {len(bodies)} JPEGs of {sizes.min():.1f}-{sizes.max():.1f} MB; wall {wall:.1f} s")
    if n_err:
        for name, errs in errors.items():
            for e in errs[:5]:
                print(f"error ({name}): {e}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
