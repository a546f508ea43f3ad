"""Distributed embedding on a real two-node Ray cluster on 127.0.0.1: same vectors as a local run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")

import contextlib

from lookalike.imaging.checkpicture import PICTURE_KIND
from lookalike.index import Index

pytestmark = pytest.mark.slow  # starts two Ray node processes and loads MobileNetV2 in each actor


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_cluster(temp_dir: str) -> None:
    """Stop only this cluster's processes (``ray stop`` would stop every Ray on the machine)."""
    for _ in range(3):
        found = False
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if temp_dir in cmdline:
                found = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        if not found:
            return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def ray_cluster():
    ray_bin = str(Path(sys.executable).with_name("ray"))
    temp_dir = tempfile.mkdtemp(prefix="lkray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
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
            timeout=120,
        )
        subprocess.run(
            [ray_bin, "start", f"--address=127.0.0.1:{port}", *common],
            check=True,
            capture_output=True,
            env=env,
            timeout=120,
        )
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        kill_cluster(temp_dir)


def make_images(folder: Path, n: int) -> None:
    from PIL import Image, ImageDraw

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        im = Image.new("RGB", (120 + 7 * i, 90 + 5 * i), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(5):
            x0, y0 = (int(v) for v in rng.integers(0, 60, 2))
            draw.ellipse([x0, y0, x0 + 50, y0 + 40], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        im.save(folder / f"{i:02d}.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"not an image at all")


def by_path(index: Index) -> dict[str, np.ndarray]:
    ids, vecs = index.store.all_vectors()
    return {index.store.get(int(i)).path: v for i, v in zip(ids, vecs, strict=False)}


def test_ray_cluster_embeds_like_a_local_run(tmp_path: Path, ray_cluster: str) -> None:
    import ray

    folder = tmp_path / "photos"
    make_images(folder, 14)
    with Index.open(tmp_path / "ray-db") as distributed:
        report = distributed.add(folder, ray=ray_cluster, workers=2)
        assert report.added == 14 and report.embedded == 14
        assert [s.path for s in report.skipped] == [str(folder / "broken.jpg")]
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2  # really a two-node cluster
        vec_ray = by_path(distributed)
        kept_ray = distributed.store.pictures(PICTURE_KIND, [r.sha256 for r in distributed.store.items()])
        # Re-running resumes: nothing is embedded again; a new file is the only work.
        (folder / "00.jpg").rename(folder / "moved.jpg")
        again = distributed.add(folder, ray=ray_cluster, workers=2)
        assert (again.embedded, again.moved, again.unchanged) == (0, 1, 13)
    with Index.open(tmp_path / "local-db") as local:
        local.add(folder)
        vec_local = by_path(local)
        kept_local = local.store.pictures(PICTURE_KIND, [r.sha256 for r in local.store.items()])
    # the geometric check's copies travel back from the actors: the same bytes as a local run keeps
    assert len(kept_local) == 14 and kept_ray == kept_local
    assert set(vec_local) == set(vec_ray) - {str(folder / "00.jpg")} | {str(folder / "moved.jpg")}
    for path, vec in vec_local.items():
        ray_vec = vec_ray[str(folder / "00.jpg")] if path.endswith("moved.jpg") else vec_ray[path]
        np.testing.assert_allclose(ray_vec, vec, atol=1e-5)
