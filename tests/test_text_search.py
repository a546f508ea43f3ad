"""Search by words: keyword tags (offline, ImageNet classes) and CLIP (a tiny random OpenCLIP model)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike.cli.app import app
from lookalike.index import Index
from lookalike.models.tags import imagenet_class_names, keyword_score, top_tags, words

runner = CliRunner()
PICKUP, TRAILER_TRUCK, TABBY = 717, 867, 281


def test_class_names_are_the_imagenet_order() -> None:
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[0].startswith("tench") and names[PICKUP] == "pickup, pickup truck"
    assert names[TABBY].startswith("tabby") and names[999].startswith("toilet tissue")


def test_keyword_score_by_hand() -> None:
    tags = [[PICKUP, 0.5], [TRAILER_TRUCK, 0.3], [TABBY, 0.1]]
    # "red pickup trucks" -> words {red, pickup, truck}; pickup class has pickup+truck: 0.5 * 2/3;
    # trailer truck has truck: 0.3 * 1/3; tabby nothing -> 1/3 + 0.1 = 0.4333
    assert words("red pickup trucks") == {"red", "pickup", "truck"}
    assert keyword_score("red pickup trucks", tags) == pytest.approx(0.5 * 2 / 3 + 0.3 / 3)
    assert keyword_score("tabby", tags) == pytest.approx(0.1)
    assert keyword_score("spaceship", tags) == 0.0
    assert keyword_score("the a of", tags) == 0.0  # only stop words


def test_top_tags_keeps_the_five_most_probable() -> None:
    logits = np.full((1, 1000), -10.0, dtype=np.float32)
    logits[0, [PICKUP, TABBY, 3, 4, 5, 6]] = [5.0, 4.5, 4.0, 3.5, 3.0, 2.9]
    tags = top_tags(logits)[0]["imagenet"]
    assert [c for c, _ in tags] == [PICKUP, TABBY, 3, 4, 5]  # class 6 is 6th
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(tags))
    # softmax: e^5 / (e^5 + e^4.5 + e^4 + e^3.5 + e^3 + e^2.9 + 994 e^-10) = 148.41 / 364.45 = 0.4072
    assert tags[0][1] == pytest.approx(0.4072, abs=2e-4)
    # a class below 2% probability is noise, not a description: dropped even within the top 5
    logits[0, 5] = -1.0
    assert [c for c, _ in top_tags(logits)[0]["imagenet"]] == [PICKUP, TABBY, 3, 4, 6]
    logits[0, 6] = -1.0
    assert [c for c, _ in top_tags(logits)[0]["imagenet"]] == [PICKUP, TABBY, 3, 4]


@pytest.mark.slow
def test_keyword_search_on_demo_photos(tmp_path: Path) -> None:
    from lookalike.demo import demo_images_dir

    photos = tmp_path / "photos"
    shutil.copytree(demo_images_dir(), photos)
    shutil.copy(photos / "coffee-cup.jpg", photos / "copy-of-cup.jpg")  # a copy reuses vector and tags
    index = Index.open(tmp_path / "db", model="mobilenet_v2")
    index.add([photos])
    result = index.search_text("espresso", k=3)
    assert result.extra["mode"] == "keyword-tags" and not result.no_match
    assert {Path(m.path).name for m in result.results[:2]} == {"coffee-cup.jpg", "copy-of-cup.jpg"}
    assert all(a.score >= b.score for a, b in zip(result.results, result.results[1:], strict=False))
    cat = index.search_text("cat", k=3)
    assert Path(cat.results[0].path).name == "cat-chelsea.jpg"
    nothing = index.search_text("spaceship")
    assert nothing.results == [] and nothing.no_match
    index.close()
    out = runner.invoke(app, ["search", "--db", str(tmp_path / "db"), "--text", "espresso", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)["queries"][0]
    assert doc["mode"] == "keyword-tags" and Path(doc["results"][0]["path"]).name.endswith(".jpg")


def test_text_search_without_tags_says_why(tmp_path: Path, picture_dir: Path) -> None:
    index = Index.open(tmp_path / "db", model="phash")
    index.add([picture_dir])
    result = index.search_text("cat")
    assert result.error and "keyword tags" in result.error and result.no_match


# -- CLIP ---------------------------------------------------------------------------------------------
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def _import_open_clip():  # type: ignore[no-untyped-def]
    """Import OpenCLIP. On a machine whose torchvision wheel cannot load (a CPU-only torch next to a
    CUDA torchvision), OpenCLIP's module-level ``import torchvision`` fails although lookalike never
    calls torchvision (it preprocesses with PIL); only then stand in empty placeholders for the names
    OpenCLIP imports, so the model, tokenizer and loading code under test are OpenCLIP's own."""
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open-clip-torch is not installed (pip install 'lookalike[clip]')")
    try:
        import torchvision  # noqa: F401
    except Exception:
        _placeholder_torchvision()
    import open_clip

    return open_clip


def _placeholder_torchvision() -> None:
    def placeholder(name: str) -> type:
        def fail(*_a: object, **_k: object) -> None:
            raise RuntimeError(f"torchvision.{name} is unavailable here; lookalike does not use it")

        return type(name, (), {"__init__": fail})

    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    for name in ("Normalize", "Compose", "RandomResizedCrop", "ToTensor", "Resize", "CenterCrop", "ColorJitter"):
        setattr(transforms, name, placeholder(name))
    transforms.Grayscale = placeholder("Grayscale")  # type: ignore[attr-defined]
    transforms.InterpolationMode = types.SimpleNamespace(BICUBIC="bicubic", BILINEAR="bilinear", NEAREST="nearest")  # type: ignore[attr-defined]
    functional = types.ModuleType("torchvision.transforms.functional")
    ops = types.ModuleType("torchvision.ops")
    misc = types.ModuleType("torchvision.ops.misc")
    misc.FrozenBatchNorm2d = placeholder("FrozenBatchNorm2d")  # type: ignore[attr-defined]
    tv.transforms, tv.ops, transforms.functional, ops.misc = transforms, ops, functional, misc  # type: ignore[attr-defined]
    for mod in (tv, transforms, functional, ops, misc):
        sys.modules[mod.__name__] = mod


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, object]:
    """A randomly initialised tiny OpenCLIP model saved to disk: (lookalike model name, torch model)."""
    open_clip = _import_open_clip()
    import torch

    folder = tmp_path_factory.mktemp("clip")
    config = folder / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(str(config))
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip").eval()
    weights = folder / "tiny-clip.bin"
    torch.save(model.state_dict(), weights)
    return f"clip:{config}@{weights}", model


def test_clip_loads_saved_weights_and_embeds_images_and_text(tiny_clip, picture_dir: Path) -> None:  # type: ignore[no-untyped-def]
    import torch
    from PIL import Image

    from lookalike.models.registry import create_model

    name, reference = tiny_clip
    model = create_model(name)
    assert model.spec.dim == 32 and model.spec.name == name and "sha256-" in model.spec.version
    images = [Image.open(p).convert("RGB") for p in sorted(picture_dir.iterdir())]
    vectors = model.embed(images)
    assert vectors.shape == (len(images), 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the registry loaded the saved weights, not a fresh random model: same outputs as the original
    batch = torch.from_numpy(np.stack([model.preprocess(im) for im in images]))
    with torch.inference_mode():
        want = reference.encode_image(batch).numpy()
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, want, atol=1e-5)
    text = model.embed_text(["a red pickup truck", "a cat"])  # type: ignore[attr-defined]
    assert text.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(text[0], text[1])


def test_clip_search_text_orders_by_text_image_score(tiny_clip, picture_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name, _ = tiny_clip
    index = Index.open(tmp_path / "db", model=name)
    index.add([picture_dir])
    ids, vectors = index.store.all_vectors()
    query = "red pickup truck"
    result = index.search_text(query, k=5)
    assert result.extra["mode"] == "clip" and len(result.results) == 5
    tvec = index.model.embed_text([query])[0]  # type: ignore[attr-defined]
    expected = sorted(zip((vectors @ tvec).tolist(), ids.tolist(), strict=True), reverse=True)[:5]
    assert [m.id for m in result.results] == [i for _, i in expected]
    np.testing.assert_allclose([m.score for m in result.results], [s for s, _ in expected], atol=1e-5)
    index.close()
    # the index remembers the model (name includes the weights path), so the CLI needs no --model
    out = runner.invoke(app, ["search", "--db", str(tmp_path / "db"), "--text", query, "-k", "3", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)["queries"][0]
    assert doc["mode"] == "clip" and [r["id"] for r in doc["results"]] == [i for _, i in expected[:3]]


def test_clip_without_weights_is_a_clear_error(tiny_clip) -> None:  # type: ignore[no-untyped-def]
    from lookalike.models.clip import ClipUnavailableError
    from lookalike.models.registry import create_model

    with pytest.raises(ClipUnavailableError, match="@"):
        create_model("clip:ViT-B-32")
    with pytest.raises(ClipUnavailableError, match="does not exist"):
        create_model("clip:ViT-B-32@/nonexistent/weights.bin")
    with pytest.raises(ClipUnavailableError, match="unknown OpenCLIP architecture"):
        create_model("clip:NoSuchArch@/nonexistent/weights.bin")


def test_web_api_search_by_text(tiny_clip, picture_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from lookalike.web import create_app

    name, _ = tiny_clip
    index = Index.open(tmp_path / "db", model=name)
    index.add([picture_dir])
    want = [m.id for m in index.search_text("red pickup truck", k=3).results]
    index.close()
    client = TestClient(create_app(tmp_path / "db"))
    response = client.post("/api/search", data={"text": "red pickup truck", "k": "3"})
    assert response.status_code == 200, response.text
    doc = response.json()["queries"][0]
    assert doc["mode"] == "clip" and [r["id"] for r in doc["results"]] == want
    assert client.post("/api/search", data={"k": "3"}).status_code == 422  # neither image nor text
