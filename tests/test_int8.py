"""The opt-in INT8 model: unit float32 vectors, copies of real photos found like fp32, its own identity
(an index refuses to mix it with fp32), a deterministic cached build, and a self-check that rejects a
damaged graph (the fp32 atol check cannot: INT8 never matches fp32 to 1e-3)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image, ImageEnhance

from lookalike import Index, ModelMismatchError
from lookalike.models import int8 as int8_mod
from lookalike.models import onnx_backend
from lookalike.models.builtin import mobilenet_v2_ml_int8_recipe
from lookalike.models.cnn import OnnxCnnEmbedder
from lookalike.models.registry import create_model

INT8 = "mobilenet_v2_ml_int8"
FP32 = "mobilenet_v2_ml"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("int8-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(onnx_backend.CACHE_ENV, str(root))
        yield root


@pytest.fixture(scope="module")
def pair(cache_dir: Path) -> tuple[OnnxCnnEmbedder, OnnxCnnEmbedder]:
    kwargs = {"intra_op_num_threads": 2, "allow_spinning": False}
    fp32 = create_model(FP32, **kwargs)
    int8 = create_model(INT8, **kwargs)
    assert isinstance(fp32, OnnxCnnEmbedder) and isinstance(int8, OnnxCnnEmbedder)
    return fp32, int8


def _photos() -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in int8_mod.demo_photos()]


def _edited(image: Image.Image, seed: int) -> Image.Image:
    """A typical re-shared copy: cropped a little, downscaled, brighter, re-encoded as JPEG."""
    w, h = image.size
    d = 6 + seed % 5
    copy = image.crop((w // d, h // (d + 2), w - w // (d + 3), h - h // d)).resize((w * 3 // 5, h * 3 // 5))
    copy = ImageEnhance.Brightness(copy).enhance(1.15)
    buf = io.BytesIO()
    copy.save(buf, "JPEG", quality=70)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_vectors_are_unit_float32_rows_close_to_fp32(pair):
    fp32, int8 = pair
    photos = _photos()
    a, b = fp32.embed(photos), int8.embed(photos)
    assert b.dtype == np.float32 and b.shape == (len(photos), 1376)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(a * b, axis=1)
    assert cosine.min() > 0.8 and cosine.mean() > 0.93, cosine
    assert not np.allclose(a, b, atol=1e-3)  # it really is another graph


def test_edited_copies_of_real_photos_are_found_first_like_fp32(pair):
    photos = _photos()
    copies = [_edited(im, i) for i, im in enumerate(photos)]
    for model in pair:
        originals, queries = model.embed(photos), model.embed(copies)
        best = np.argmax(queries @ originals.T, axis=1)
        assert best.tolist() == list(range(len(photos))), model.spec.name


def test_shipped_edited_copy_query_finds_its_original(pair, tmp_path: Path):
    _, int8 = pair
    demo = int8_mod.demo_photos()[0].parent
    query = demo.parent / "queries" / "edited-copy-windmill-chesterton.jpg"
    vectors = int8.embed(_photos())
    q = int8.embed([Image.open(query).convert("RGB")])[0]
    assert int8_mod.demo_photos()[int(np.argmax(vectors @ q))].name == "windmill-chesterton.jpg"


def test_identity_differs_and_an_index_refuses_to_mix(pair, tmp_path: Path):
    fp32, int8 = pair
    assert fp32.spec.identity() != int8.spec.identity()
    assert int8.spec.name == INT8 and "int8" in int8.spec.version
    assert int8.spec.no_match_view == fp32.spec.no_match_view  # no-match reads the same part
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in int8_mod.demo_photos()[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    db = tmp_path / "db"
    with Index.open(db, model=FP32) as index:
        index.add([folder])
    with pytest.raises(ModelMismatchError, match=FP32):
        Index.open(db, model=INT8)


def test_cached_graph_is_reused_and_the_build_is_deterministic(pair, cache_dir: Path, monkeypatch):
    [cached] = list((cache_dir / "models").glob("*-int8-*.onnx"))
    before = hashlib.sha256(cached.read_bytes()).hexdigest()
    calls: list[Path] = []
    real = int8_mod.quantize_int8

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(int8_mod, "quantize_int8", counting)
    create_model(INT8, intra_op_num_threads=1)
    assert calls == []  # a cache hit quantises nothing
    cached.unlink()
    create_model(INT8, intra_op_num_threads=1)
    assert calls == [cached]
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == before  # same bytes from the same inputs


def test_self_check_rejects_a_damaged_graph_and_it_is_rebuilt(pair, cache_dir: Path, monkeypatch):
    [cached] = list((cache_dir / "models").glob("*-int8-*.onnx"))
    graph = onnx.load(str(cached))
    # Damage the weights of the largest quantised conv: the protobuf still loads and the metadata
    # still matches, only the numbers are wrong (what a flipped block on disk does).
    weights = max(
        (t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT8), key=lambda t: t.ByteSize()
    )
    array = numpy_helper.to_array(weights).copy()
    array.flat[::3] = -array.flat[::3]
    weights.CopyFrom(numpy_helper.from_array(array, weights.name))
    onnx.save(graph, str(cached))

    damaged = onnx_backend.OnnxModel(cached, intra_op_num_threads=1)
    recipe = mobilenet_v2_ml_int8_recipe()
    assert not int8_mod.int8_self_check(damaged, recipe)
    calls: list[Path] = []
    real = int8_mod.quantize_int8
    monkeypatch.setattr(int8_mod, "quantize_int8", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    rebuilt = create_model(INT8, intra_op_num_threads=1)
    assert calls == [cached]
    assert int8_mod.int8_self_check(rebuilt.onnx, recipe)  # type: ignore[attr-defined]


def test_the_fp32_atol_check_would_reject_an_intact_int8_graph(pair):
    """Why INT8 needs its own check: against fp32 reference outputs, an intact INT8 graph fails atol 1e-3."""
    fp32, int8 = pair
    batch = np.stack([fp32.preprocess(im) for im in _photos()[:2]])
    want, have = fp32.onnx.run(batch)[0], int8.onnx.run(batch)[0]
    assert not onnx_backend._close(want, have, 1e-3)
