"""CLIP models through OpenCLIP (optional extra: ``pip install lookalike[clip]``): images *and* words.

Model names: ``clip:ARCH@WEIGHTS`` loads an OpenCLIP checkpoint from a local file (e.g.
``clip:ViT-B-32@/models/open_clip_pytorch_model.bin``); ``clip:ARCH/TAG`` uses OpenCLIP's pretrained
tag (``clip:ViT-B-32/laion2b_s34b_b79k``), which comes from the user's Hugging Face cache (or the hub
when online); ``clip:ARCH`` alone takes the file from ``$LOOKALIKE_CLIP_WEIGHTS``. ``ARCH`` may be
a path to an OpenCLIP model-config ``.json`` for a custom architecture. No CLIP weights ship in any
package lookalike can install offline, so there is no default: without weights the error says how
to give them.

Image preprocessing is done here with PIL + numpy (resize the shorter side with bicubic, centre
crop, CLIP mean/std), the same recipe as OpenCLIP's default eval transform, so decoding threads never
touch torch. The full model name (including the weights path or tag) is the index's model identity,
so ``Index.open(db)`` finds the same weights again; the version records the weights' sha256.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from lookalike.models.base import Embedder, ModelSpec, l2_normalize
from lookalike.models.registry import register_model
from lookalike.models.weights import WeightsNotInstalledError

if TYPE_CHECKING:
    import torch

WEIGHTS_ENV = "LOOKALIKE_CLIP_WEIGHTS"
PIP_INSTALL = "pip install 'lookalike[clip]'   (or: pip install open-clip-torch==3.3.0)"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_CONFIG_LOCK = threading.Lock()


class ClipUnavailableError(WeightsNotInstalledError):
    """open_clip is missing or no weights were given; the message says what to do."""


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as exc:
        raise ClipUnavailableError(f"CLIP models need OpenCLIP ({exc}). Install it with:\n  {PIP_INSTALL}") from exc
    return open_clip


def parse_variant(variant: str) -> tuple[str, str | None, str | None]:
    """``ARCH@FILE`` -> (arch, file, None); ``ARCH/TAG`` -> (arch, None, tag); ``ARCH`` -> (arch, $env, None)."""
    if "@" in variant:
        arch, _, path = variant.partition("@")
        return arch, path, None
    if "/" in variant and not variant.endswith(".json") and not os.path.exists(variant):
        arch, _, tag = variant.partition("/")
        return arch, None, tag
    return variant, os.environ.get(WEIGHTS_ENV) or None, None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class ClipEmbedder(Embedder):
    """An OpenCLIP model: ``embed``/``embed_arrays`` for images, ``embed_text`` for words, in one space."""

    batch_size = 16

    def __init__(self, variant: str, *, batch_size: int | None = None) -> None:
        open_clip = _open_clip()
        import torch

        arch, weights, tag = parse_variant(variant)
        if not arch:
            raise ClipUnavailableError("give an architecture: clip:ViT-B-32@/path/to/weights.bin")
        if arch.endswith(".json"):
            if not os.path.isfile(arch):
                raise ClipUnavailableError(f"OpenCLIP model config {arch} does not exist")
            with _CONFIG_LOCK:
                open_clip.add_model_config(arch)
            arch_name = Path(arch).stem
        else:
            arch_name = arch
        if open_clip.get_model_config(arch_name) is None:
            known = ", ".join(open_clip.list_models()[:12])
            raise ClipUnavailableError(f"unknown OpenCLIP architecture {arch_name!r} (e.g. {known}, ...)")
        if weights is None and tag is None:
            raise ClipUnavailableError(
                f"no weights for clip:{arch}. No CLIP weights ship with lookalike; give a local OpenCLIP "
                f"checkpoint as clip:{arch}@/path/to/open_clip_pytorch_model.bin, set ${WEIGHTS_ENV}, or name a "
                f"pretrained tag you have in your Hugging Face cache, e.g. clip:{arch}/laion2b_s34b_b79k"
            )
        if weights is not None and not os.path.isfile(weights):
            raise ClipUnavailableError(f"CLIP weights file {weights} does not exist")
        try:
            model = open_clip.create_model(arch_name, pretrained=weights or tag, device="cpu", require_pretrained=True)
        except Exception as exc:  # open_clip raises RuntimeError/ValueError/hub errors
            raise ClipUnavailableError(f"cannot load clip:{variant}: {type(exc).__name__}: {exc}") from exc
        model.eval()
        self.model: torch.nn.Module = model
        self.tokenizer = open_clip.get_tokenizer(arch_name)
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        mean = tuple(cfg.get("mean") or CLIP_MEAN)
        std = tuple(cfg.get("std") or CLIP_STD)
        self._scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32))).reshape(3, 1, 1)
        self._offset = (np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)).reshape(3, 1, 1)
        with torch.inference_mode():
            dim = int(model.encode_text(self.tokenizer(["a"])).shape[-1])
        version = f"open_clip-{open_clip.__version__};" + (
            f"sha256-{_sha256(weights)[:16]}" if weights else f"tag-{tag}"
        )
        preprocessing = (
            f"rgb;resize-shorter={self.image_size};center-crop={self.image_size}x{self.image_size};bicubic;"
            f"mean={','.join(f'{m:.4f}' for m in mean)};std={','.join(f'{s:.4f}' for s in std)}"
        )
        self.spec = ModelSpec(f"clip:{variant}", version, dim, preprocessing, self.image_size)
        if batch_size:
            self.batch_size = batch_size
        self._lock = threading.Lock()  # torch modules are not documented thread-safe for concurrent calls

    def preprocess(self, image: Image.Image) -> np.ndarray:
        if image.mode != "RGB":
            image = image.convert("RGB")
        s = self.image_size
        w, h = image.size
        scale = s / min(w, h)
        nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
        image = image.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (nw - s) // 2, (nh - s) // 2
        image = image.crop((left, top, left + s, top + s))
        out = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
        out *= self._scale
        out -= self._offset
        return out

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode():
            features = self.model.encode_image(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        return l2_normalize(features.float().numpy())

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Unit-norm text vectors in the image space: cosine with an image vector scores the match."""
        import torch

        if not texts:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        with self._lock, torch.inference_mode():
            features = self.model.encode_text(self.tokenizer(list(texts)))
        return l2_normalize(features.float().numpy())


def _clip_weights() -> str:
    """For ``lookalike models``: is OpenCLIP installed and a weights file configured?"""
    import importlib.util

    if importlib.util.find_spec("open_clip") is None:
        raise ClipUnavailableError(f"OpenCLIP is not installed ({PIP_INSTALL})")
    path = os.environ.get(WEIGHTS_ENV)
    if not path:
        raise ClipUnavailableError(f"no CLIP weights configured (give clip:ARCH@FILE or set ${WEIGHTS_ENV})")
    return path


@register_model(
    "clip",
    description="OpenCLIP image+text model, optional extra; name it clip:ARCH@WEIGHTS_FILE or clip:ARCH/TAG. "
    "Enables `search --text` by meaning.",
    dim=None,
    offline=False,
    weights=_clip_weights,
)
def clip(*, variant: str | None = None, batch_size: int | None = None) -> Embedder:
    if not variant:
        raise ClipUnavailableError("name a CLIP model as clip:ARCH@/path/to/weights.bin (e.g. clip:ViT-B-32@...)")
    return ClipEmbedder(variant, batch_size=batch_size)
