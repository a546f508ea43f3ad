"""Shared fixtures: synthetic pictures with structure (not noise), and real photos when cached."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helper modules
sys.path.insert(0, str(ROOT / "tools"))  # lookalike_data: the Debian-package data sets


def make_picture(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A distinct picture per seed: gradient background plus coloured shapes (CNN features differ)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 256, 3)
    direction = rng.normal(size=2)
    grad = (x * direction[0] + y * direction[1]) / (abs(direction).sum() * max(w, h)) * 120
    arr = np.clip(base[None, None, :] + grad[..., None] * rng.choice([-1, 1], 3), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(15, w // 2)), y0 + int(rng.integers(15, h // 2))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse([x0, y0, x1, y1], fill=color)
        elif shape == 1:
            draw.rectangle([x0, y0, x1, y1], fill=color)
        else:
            draw.line([x0, y0, x1, y1], fill=color, width=int(rng.integers(3, 12)))
    return img


@pytest.fixture
def picture_dir(tmp_path: Path) -> Path:
    """Eight distinct JPEG pictures in a folder."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(8):
        make_picture(i).save(folder / f"pic{i}.jpg", quality=90)
    return folder


@pytest.fixture(scope="session")
def real_photos() -> list[Path]:
    """Real photographs from Debian packages (cached by scripts/fetch_data.py)."""
    import lookalike_data as datasets

    try:
        photos = datasets.photos(limit=int(os.environ.get("LOOKALIKE_TEST_PHOTOS", "40")))
    except datasets.DatasetUnavailable as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"real photos are needed for this test and could not be fetched: {exc}")
    assert len(photos) >= 20, "expected at least 20 real photos"
    return photos


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With LOOKALIKE_STRICT_TESTS=1 (CI), a skipped test fails the run: CI installs every optional
    dependency, so a skip there means a missing install step, not an optional feature."""
    if os.environ.get("LOOKALIKE_STRICT_TESTS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and exitstatus == 0:
        session.exitstatus = 1
        reporter.write_line(
            f"LOOKALIKE_STRICT_TESTS: {len(skipped)} test(s) were skipped; CI must run them all", red=True
        )
        for rep in skipped:
            reporter.write_line(f"  skipped: {rep.nodeid} {rep.longrepr}")
