"""Decompression bombs inside container formats are refused before anything big is decoded.

Each case runs in a child process that reports how far its peak RSS rose while decoding: an
exception raised after a 1 GB decode would look the same from the outside, so the reason alone
proves nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import bombs
from lookalike.imaging.load import ImageLoadError, decode_image

ROOT = Path(__file__).resolve().parents[1]
#: Growth of the child's peak RSS allowed while refusing a bomb. Each bomb decodes to >= 500 MB.
FLAT_MB = 150

_CHILD = """
import json, resource, sys
from lookalike.imaging.load import ImageLoadError, decode_image
data = open(sys.argv[1], "rb").read()
max_pixels = int(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    loaded = decode_image(data, max_pixels=max_pixels)
    outcome = {"reason": None, "size": list(loaded.image.size)}
except ImageLoadError as exc:
    outcome = {"reason": exc.reason, "detail": exc.detail}
outcome["grew_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(outcome))
"""


def decode_in_child(path: Path, max_pixels: int = 130_000_000) -> dict[str, object]:
    """Decode a file in a fresh interpreter; its outcome and how much its peak RSS grew (MB)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(max_pixels)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def huge_png() -> bytes:
    """16000 x 16000 black RGB: 0.75 MB on disk, ~1 GB decoded."""
    data = bombs.png(16_000, 16_000)
    assert len(data) < 1_000_000
    return data


REFUSED: dict[str, Callable[[bytes], bytes]] = {
    "ico wrapping a huge png": lambda big: bombs.ico(big, declared=256),
    "icns wrapping a huge png": lambda big: bombs.icns(big),
    "gif first frame beyond the screen": lambda big: bombs.gif_frame_beyond_screen(30_000, 30_000),
    "webp canvas": lambda big: bombs.webp_canvas(16_384, 16_384),
    "tiff first page": lambda big: bombs.tiff([(16_000, 16_000), (8, 8)]),
    "mpo first frame": lambda big: bombs.mpo(0, 16_000, 16_000),
    "apng": lambda big: bombs.apng(16_000, 16_000),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_container_bomb_is_refused_with_flat_memory(case: str, huge_png: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bomb"
    path.write_bytes(REFUSED[case](huge_png))
    assert path.stat().st_size < 1_000_000
    outcome = decode_in_child(path)
    assert outcome["reason"] == "too many pixels", outcome
    assert "decompression bomb" in str(outcome["detail"])
    assert outcome["grew_mb"] < FLAT_MB, outcome


def test_server_limit_applies_to_the_embedded_frame(tmp_path: Path) -> None:
    # 9000 x 9000 = 81 MP: under the index default (130 MP), over the server's (64 MP). Still ~320 MB decoded.
    path = tmp_path / "medium.ico"
    path.write_bytes(bombs.ico(bombs.png(9_000, 9_000)))
    outcome = decode_in_child(path, max_pixels=64_000_000)
    assert outcome["reason"] == "too many pixels", outcome
    assert "9000 x 9000" in str(outcome["detail"])
    assert outcome["grew_mb"] < FLAT_MB, outcome


LATER_FRAME_HUGE: dict[str, Callable[[], bytes]] = {
    "tiff second page": lambda: bombs.tiff([(8, 8), (16_000, 16_000)]),
    "gif second frame": lambda: bombs.gif_later_frame_huge(30_000, 30_000),
    "mpo second frame": lambda: bombs.mpo(1, 16_000, 16_000),
}


@pytest.mark.parametrize("case", list(LATER_FRAME_HUGE))
def test_only_the_first_frame_is_decoded(case: str, tmp_path: Path) -> None:
    path = tmp_path / "frames"
    path.write_bytes(LATER_FRAME_HUGE[case]())
    outcome = decode_in_child(path)
    assert outcome["reason"] is None, outcome
    assert max(outcome["size"]) <= 64  # type: ignore[arg-type]
    assert outcome["grew_mb"] < FLAT_MB, outcome


def test_small_icons_still_decode() -> None:
    loaded = decode_image(bombs.ico(bombs.png(48, 32), declared=48))
    assert loaded.image.size == (48, 32) and loaded.format == "ICO"
    loaded = decode_image(bombs.icns(bombs.png(1024, 1024)))
    assert loaded.image.size == (1024, 1024) and loaded.format == "ICNS"


def test_the_limit_is_per_call() -> None:
    """One process, different limits (the server's 64 MP, the indexer's 130 MP, a caller's own)."""
    icon = bombs.ico(bombs.png(1200, 1000))
    with pytest.raises(ImageLoadError) as exc:
        decode_image(icon, max_pixels=1_000_000)
    assert exc.value.reason == "too many pixels"
    assert decode_image(icon, max_pixels=1_200_000).image.size == (1200, 1000)


def _index_peak_mb(folder: Path, db: Path, tmp_path: Path) -> tuple[dict[str, object], float]:
    """Run `lookalike index` in its own process; its JSON report and its own peak RSS in MB (from wait4)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "lookalike", "index", str(folder), "--db", str(db), "--model", "dhash", "--json", "-q"]
    out_path, err_path = tmp_path / f"{folder.name}.out", tmp_path / f"{folder.name}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not every child's so far
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err_path.read_text()[-2000:]
    return json.loads(out_path.read_text()), usage.ru_maxrss / 1024


def test_index_skips_an_icon_bomb_with_flat_memory(huge_png: bytes, tmp_path: Path) -> None:
    plain, bombed = tmp_path / "plain", tmp_path / "bombed"
    for folder in (plain, bombed):
        folder.mkdir()
        (folder / "small.png").write_bytes(bombs.png(64, 48))
    (bombed / "favicon.ico").write_bytes(bombs.ico(huge_png))
    _, baseline_mb = _index_peak_mb(plain, tmp_path / "db-plain", tmp_path)
    report, peak_mb = _index_peak_mb(bombed, tmp_path / "db-bombed", tmp_path)
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}  # type: ignore[attr-defined]
    assert skipped == {"favicon.ico": "too many pixels"}, report
    assert report["added"] == 1
    assert peak_mb - baseline_mb < FLAT_MB, (peak_mb, baseline_mb)
