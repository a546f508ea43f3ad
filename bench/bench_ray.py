"""Distributed embedding throughput: a local Ray cluster of two 1-CPU nodes, 1 vs 2 actors.

Starts ``ray start --head`` + one worker node on 127.0.0.1 (1 CPU each), indexes the same folder
with ``--ray`` using 1 and then 2 actors (fresh index each time), and compares with the in-process
pipeline. Prints images/s; cluster start-up is reported separately, actor start-up (model load) is
inside each run.

    python bench/bench_ray.py --n 400
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))

from lookalike.index import Index  # noqa: E402


def make_photos(folder: Path, n: int) -> None:
    """Photo-sized JPEGs (640x480, smooth gradients + shapes) so decoding costs what it does for photos."""
    from PIL import Image, ImageDraw, ImageFilter

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    for i in range(n):
        base = np.stack([(xx * rng.uniform(0.1, 0.4) + yy * rng.uniform(0.1, 0.4) + rng.uniform(0, 255)) % 255] * 3, -1)
        im = Image.fromarray((base * rng.uniform(0.5, 1.0, 3)).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(8):
            x0, y0 = (int(v) for v in rng.integers(0, 560, 2))
            draw.ellipse([x0, y0 % 400, x0 + 80, y0 % 400 + 80], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        im.filter(ImageFilter.GaussianBlur(1)).save(folder / f"{i:05d}.jpg", quality=88)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--model", default="mobilenet_v2")
    args = ap.parse_args()
    from test_ray_ingest import kill_cluster

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    photos = work / "photos"
    make_photos(photos, args.n)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    temp_dir = tempfile.mkdtemp(prefix="lkray", dir="/tmp")
    port = free_port()
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    rows = []
    try:
        t = time.perf_counter()
        subprocess.run(
            [
                ray_bin,
                "start",
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--temp-dir={temp_dir}",
                *common,
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        subprocess.run(
            [ray_bin, "start", f"--address=127.0.0.1:{port}", *common], check=True, capture_output=True, env=env
        )
        start_s = time.perf_counter() - t
        with Index.open(work / "local", model=args.model) as index:
            index.model  # noqa: B018 - load the model outside the timing, as a long-running indexer would
            t = time.perf_counter()
            rep = index.add(photos)
            rows.append(("in-process (threads)", rep.embedded, time.perf_counter() - t))
        for workers in (1, 2, 1, 2):
            with Index.open(work / f"ray{workers}-{len(rows)}", model=args.model) as index:
                index.model  # noqa: B018
                t = time.perf_counter()
                rep = index.add(photos, ray=f"127.0.0.1:{port}", workers=workers)
                rows.append((f"ray, {workers} actor(s)", rep.embedded, time.perf_counter() - t))
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        kill_cluster(temp_dir)
    print(
        f"\n{args.n} JPEGs 640x480, model {args.model}, 2-node Ray cluster on 127.0.0.1 (1 CPU each; "
        f"cluster start {start_s:.0f} s); machine cores={os.cpu_count()}\n"
    )
    print(f"{'run':<24}{'images':>8}{'seconds':>9}{'img/s':>8}")
    for name, n, s in rows:
        print(f"{name:<24}{n:>8}{s:>9.1f}{n / s:>8.1f}")
    print("\nRay runs include actor start-up and model load in each actor (one-off per run).")


if __name__ == "__main__":
    main()
