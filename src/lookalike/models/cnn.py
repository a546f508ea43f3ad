"""Shared embedder for ImageNet CNNs: PIL preprocessing in workers, ONNX Runtime for the network.

The ONNX graph has two outputs, ``embedding`` (pooled penultimate features, not yet normalised) and
``logits`` (1000 ImageNet classes), so tagging images with ImageNet labels costs no second pass.
Eager torch is kept available (``embed_arrays_torch``) for tests and benchmarks only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from lookalike.models.base import Embedder, ModelSpec, l2_normalize
from lookalike.models.onnx_backend import ExportRecipe, OnnxModel, load_or_export
from lookalike.models.preprocessing import ImagePreprocessor

if TYPE_CHECKING:
    import torch

CNN_OUTPUTS = ("embedding", "logits")
NUM_CLASSES = 1000  # ImageNet-1k


class OnnxCnnEmbedder(Embedder):
    """An ImageNet CNN run through a cached ONNX export. ``preprocess`` and all ``embed_*`` methods
    are thread-safe (one ORT session shared by all threads)."""

    def __init__(
        self,
        spec: ModelSpec,
        recipe: ExportRecipe,
        preprocessor: ImagePreprocessor,
        *,
        batch_size: int = 32,
        intra_op_num_threads: int | None = None,
        allow_spinning: bool = True,
        load: Callable[..., OnnxModel] | None = None,
    ) -> None:
        """``load(intra_op_num_threads=, allow_spinning=)`` opens the graph; default: the cached fp32
        export of ``recipe`` (the INT8 model passes its own loader; eager torch still uses ``recipe``)."""
        if recipe.output_names != CNN_OUTPUTS:
            raise ValueError(f"recipe must produce {CNN_OUTPUTS}, got {recipe.output_names}")
        self.spec = spec
        self.recipe = recipe
        self.preprocessor = preprocessor
        self.batch_size = batch_size
        opener = load or (lambda **kw: load_or_export(recipe, **kw))
        self.onnx: OnnxModel = opener(intra_op_num_threads=intra_op_num_threads, allow_spinning=allow_spinning)
        self._torch_module: torch.nn.Module | None = None
        self._torch_lock = threading.Lock()

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.preprocessor(image)

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        return self.embed_arrays_with_logits(batch)[0]

    def embed_arrays_with_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit-norm embeddings ``(n, dim)`` and raw ImageNet logits ``(n, 1000)`` from one pass."""
        if len(batch) == 0:
            return np.zeros((0, self.spec.dim), np.float32), np.zeros((0, NUM_CLASSES), np.float32)
        features, logits = self.onnx.run(batch)
        return l2_normalize(features), np.asarray(logits, dtype=np.float32)

    def embed_arrays_with_extra(self, batch: np.ndarray) -> tuple[np.ndarray, list[dict[str, object]]]:
        """The ingest hook: embeddings plus each image's top ImageNet classes (keyword tags), one pass."""
        from lookalike.models.tags import top_tags

        vectors, logits = self.embed_arrays_with_logits(batch)
        return vectors, top_tags(logits)

    def classify(self, batch: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ImageNet class indices ``(n, k)`` and their softmax probabilities, best first."""
        _, logits = self.embed_arrays_with_logits(batch)
        return top_k_softmax(logits, k)

    # -- eager torch, for verification and benchmarks -------------------------------------------

    def torch_module(self) -> torch.nn.Module:
        with self._torch_lock:
            if self._torch_module is None:
                self._torch_module = self.recipe.build().eval()
            return self._torch_module

    def embed_arrays_torch(self, batch: np.ndarray) -> np.ndarray:
        import torch

        module = self.torch_module()
        with torch.inference_mode():
            features, _ = module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        return l2_normalize(features.numpy())


def top_k_softmax(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(probs, idx, axis=1).astype(np.float32)
