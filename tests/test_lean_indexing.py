"""Indexing stays lean: no torch once the ONNX graph is cached, small model calls, no spin-waiting.

None of these time anything (speed is measured by bench/bench_e2e.py); they pin the behaviour the
speed and memory figures rest on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike import Index
from lookalike.imaging.discover import Skip
from lookalike.models.base import Embedder, ModelSpec
from lookalike.models.registry import DEFAULT_MODEL
from lookalike.pipeline import runner
from lookalike.pipeline.runner import Pipeline, Work
from lookalike.search import measure

SRC = Path(__file__).resolve().parents[1] / "src"

# Runs the real `lookalike` command in this process, then reports which heavy modules it imported.
_CLI_THEN_REPORT = r"""
import json, runpy, sys
sys.argv = ["lookalike", *sys.argv[1:]]
try:
    runpy.run_module("lookalike", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
with open(REPORT, "w") as fh:
    json.dump({"code": code, "torch": "torch" in sys.modules, "onnxruntime": "onnxruntime" in sys.modules}, fh)
"""


@pytest.mark.slow
def test_index_of_real_photos_never_imports_torch_when_the_onnx_graph_is_cached(
    real_photos: list[Path], tmp_path: Path
) -> None:
    """torch costs seconds and ~300 MB to import; it is only for exporting the graph and training."""
    from lookalike.models.registry import create_model

    create_model(DEFAULT_MODEL)  # warms the ONNX cache (exports with torch here, if it was cold)
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in real_photos[:24]:
        (folder / photo.name).symlink_to(photo)
    report = tmp_path / "report.json"
    script = _CLI_THEN_REPORT.replace("REPORT", repr(str(report)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    db = str(tmp_path / "db")
    commands = (
        ["index", str(folder), "--db", db, "-q"],
        ["dups", "--db", db],
        ["search", str(real_photos[30]), "--db", db],
    )
    for args in commands:
        done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        seen = json.loads(report.read_text())
        assert seen["code"] == 0, (args, done.stderr)
        assert not seen["torch"], f"`lookalike {args[0]}` imported torch"
    assert seen["onnxruntime"]  # the search did run the model: the check above is not vacuous
    with Index.open(db, create=False) as index:
        assert len(index) == 24


class _RecordingEmbedder(Embedder):
    """A model that remembers the size of every call; vector i is a function of input i only."""

    def __init__(self, batch_size: int) -> None:
        self.spec = ModelSpec("recording", "1", 4, "none", 8)
        self.batch_size = batch_size
        self.calls: list[int] = []

    def preprocess(self, image: object) -> np.ndarray:  # not used: the test hands over arrays
        raise NotImplementedError

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        out = np.stack([batch[:, 0, 0, 0], np.ones(len(batch)), batch[:, 0, 0, 1], np.zeros(len(batch))], axis=1)
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


class _Collect:
    def __init__(self) -> None:
        self.vectors: dict[int, np.ndarray] = {}
        self.batches: list[int] = []

    def finished(self, done: list[tuple[Work[int], np.ndarray]], extras: list[dict[str, object]]) -> None:
        self.batches.append(len(done))
        for work, vecs in done:
            self.vectors[work.item] = vecs

    def skipped(self, item: int, skip: Skip) -> None:
        raise AssertionError(skip)


def test_a_batch_reaches_the_model_in_calls_of_at_most_model_call_inputs() -> None:
    """ONNX Runtime's arena keeps the activations of its largest call: the pipeline keeps calls small,
    while the sink still hears of whole batches (one store transaction per batch)."""
    model = _RecordingEmbedder(batch_size=32)

    def prepare(i: int) -> Work[int]:
        x = np.full((3, 2, 2), float(i), np.float32)
        x[0, 0, 1] = i % 7
        return Work(i, [x])

    sink = _Collect()
    Pipeline(prepare, sink, model, workers=2).run(range(70))
    assert model.calls and max(model.calls) <= runner.MODEL_CALL
    assert sum(model.calls) == 70
    assert sink.batches[:2] == [32, 32]  # the sink's unit is unchanged
    expected = model.embed_arrays(np.stack([prepare(i).inputs[0] for i in range(70)]))
    for i in range(70):
        np.testing.assert_array_equal(sink.vectors[i][0], expected[i])


@pytest.mark.slow
def test_small_model_calls_give_the_same_vectors_and_calibration(
    real_photos: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real model: vectors of a 32-photo index and its calibration do not depend on the call size."""
    photos = real_photos[:32]
    results = {}
    for call in (32, runner.MODEL_CALL):
        monkeypatch.setattr(runner, "MODEL_CALL", call)
        with Index.open(tmp_path / f"db{call}") as index:
            index.add(photos, calibrate=False)
            ids, _ = index.store.vector_rows()
            by_path = {index.store.get(int(i)).path: index.store.vectors([int(i)])[0] for i in ids}  # type: ignore[union-attr]
            cal = measure.compute_calibration(index.store, index.model, copies=24, seed=3)
        results[call] = (by_path, cal)
    (vec_a, cal_a), (vec_b, cal_b) = results[32], results[runner.MODEL_CALL]
    assert vec_a.keys() == vec_b.keys() and len(vec_a) == 32
    for path in vec_a:
        np.testing.assert_allclose(vec_a[path], vec_b[path], atol=1e-6)
    assert cal_a.ok and cal_b.ok
    np.testing.assert_allclose(cal_a.copy_scores, cal_b.copy_scores, atol=1e-5)
    np.testing.assert_allclose(cal_a.nn_scores, cal_b.nn_scores, atol=1e-5)
    assert cal_a.cutoffs.keys() == cal_b.cutoffs.keys()
    for label in cal_a.cutoffs:
        assert abs(cal_a.cutoffs[label] - cal_b.cutoffs[label]) < 1e-4


def test_the_index_model_does_not_spin_wait(tmp_path: Path) -> None:
    """Idle ONNX Runtime threads would spin on the cores the decode threads need."""
    with Index.open(tmp_path / "db") as index:
        options = index.model.onnx.session.get_session_options()  # type: ignore[attr-defined]
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with Index.open(tmp_path / "hashes", model="dhash") as index:  # a factory without the option
        assert index.model.spec.name == "dhash"
