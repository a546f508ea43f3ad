"""A few real photographs for tests that run the real model.

Prefers ``lookalike.evaluation.datasets.photos`` (Debian-package photos, cached); until that module is
available it takes scikit-image's sample photos from the ``python3-skimage`` Debian package, fetched
once with ``apt-get download`` into the same cache (``$LOOKALIKE_DATA_DIR``).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import platformdirs

SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg")


def _cache() -> Path:
    env = os.environ.get("LOOKALIKE_DATA_DIR")
    root = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("lookalike")) / "data"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _skimage_photos() -> list[Path]:
    dest = _cache() / "debian" / "python3-skimage"
    data = dest / "usr/lib/python3/dist-packages/skimage/data"
    if not (dest / ".complete").exists():
        with tempfile.TemporaryDirectory(dir=dest.parent if dest.parent.exists() else None) as tmp:
            os.chmod(tmp, 0o777)
            subprocess.run(["apt-get", "download", "-q", "python3-skimage"], cwd=tmp, check=True, capture_output=True)
            deb = next(Path(tmp).glob("*.deb"))
            tree = Path(tmp) / "tree"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, capture_output=True)
            (tree / ".complete").write_text(deb.name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                os.replace(tree, dest)
    return [data / name for name in SKIMAGE_PHOTOS if (data / name).exists()]


def real_photos(n: int) -> list[Path]:
    try:
        from lookalike.evaluation.datasets import photos  # type: ignore[attr-defined]
    except ImportError:
        found = _skimage_photos()
    else:
        found = photos(n)
    if len(found) < n:
        raise RuntimeError(f"needed {n} real photos, found {len(found)}")
    return found[:n]
