"""kill -9 in the middle of indexing leaves an index that opens; a re-run finishes the job once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conftest import ROOT, make_picture
from lookalike import Index
from lookalike.imaging.load import load_image


def _count(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db / 'items.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_kill_9_mid_index_then_resume(tmp_path: Path) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    n_files = 160
    for i in range(n_files):
        make_picture(1000 + i, (256, 192)).save(folder / f"p{i:03d}.jpg", quality=85)
    db = tmp_path / "db"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "lookalike", "index", str(folder), "--db", str(db), "-q"]

    killed_at = []
    for wait_for in (1, 64):  # kill right after the first commit, then again deeper into the run
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while _count(db) < wait_for and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"indexing finished before it could be killed: {proc.stderr.read()!r}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at.append(_count(db))
        with Index.open(db) as index:  # opens cleanly after the kill
            assert len(index) == killed_at[-1]
    assert 0 < killed_at[0] <= killed_at[1] < n_files

    with Index.open(db) as index:
        report = index.add([folder])
        assert report.embedded == n_files - killed_at[-1]  # finished work is not redone
        assert len(index) == n_files
        paths = [r.path for r in index.store.items()]
        assert len(paths) == len(set(paths)) == n_files
        # Every stored vector really belongs to its file (no row written for one item read by another).
        records = list(index.store.items())[:: n_files // 10]
        fresh = index.model.embed([load_image(r.path).image for r in records])
        stored = index.store.vectors([r.id for r in records])
        assert np.allclose(np.sum(fresh * stored, axis=1), 1.0, atol=1e-4)
