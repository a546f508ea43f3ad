"""The one interface every embedder implements: images in, L2-normalised float32 vectors out.

Embedding is split in two halves so that the slow, GIL-releasing half (decode + preprocess) can run
in worker threads while the model runs on ready tensors:

* ``preprocess(image) -> np.ndarray`` turns one decoded RGB ``PIL.Image`` into the model's input
  array (for CNNs a CHW float32 array); pure and thread-safe.
* ``embed_arrays(batch) -> np.ndarray`` runs the model on a stacked batch of such arrays and returns
  ``(n, dim)`` float32 rows with unit L2 norm.

``embed(images)`` does both for callers that do not care about overlap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class NoMatchView:
    """The part of a model's vector that the "no similar images" rule scores on.

    A vector made of several parts (``mobilenet_v2_ml``: power-normalised top features, then
    mid-level shape features) ranks "same kind of thing" better with all of them, but the question
    "is anything in the collection about the same thing?" is best asked of the semantic part alone:
    mid-level features raise every unrelated image's score. The view keeps the leading ``dims``
    values, raises them to ``power`` (undoing a power normalisation) and re-normalises.
    """

    dims: int
    power: float = 1.0

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Rows (or one vector) of the model's vectors -> unit rows of the view."""
        part = np.asarray(vectors, dtype=np.float32)[..., : self.dims]
        if self.power != 1.0:
            # sign(x)·|x|^p as exp(p·log|x|): half the time of a float power (it runs once per search)
            with np.errstate(divide="ignore"):
                magnitude = np.exp(np.log(np.abs(part)) * np.float32(self.power))
            part = np.copysign(magnitude, part)
        norms = np.linalg.norm(part, axis=-1, keepdims=True)
        return part / np.maximum(norms, 1e-12)

    def to_json(self) -> dict[str, float]:
        return {"dims": self.dims, "power": self.power}

    @classmethod
    def from_json(cls, data: object) -> NoMatchView | None:
        if not isinstance(data, dict):
            return None
        return cls(int(data["dims"]), float(data.get("power", 1.0)))


@dataclass(frozen=True)
class ModelSpec:
    """Identity of the vectors a model produces. Two indexes can share vectors only if these match."""

    name: str
    version: str
    dim: int
    preprocessing: str
    input_size: int = 224  # longest side the loader needs; lets it decode JPEGs in draft mode
    #: how the no-match rule reads these vectors (None: the whole vector). Not part of the identity:
    #: it changes how scores are read, not the vectors.
    no_match_view: NoMatchView | None = None

    def identity(self) -> dict[str, object]:
        out = asdict(self)
        del out["no_match_view"]
        return out

    def describe(self) -> str:
        return f"{self.name} (version {self.version}, {self.dim}-d, preprocessing: {self.preprocessing})"


class Embedder(ABC):
    """Base class of all models. Subclasses set ``spec`` and implement the two halves."""

    spec: ModelSpec
    #: whether the model runs on in-memory pixels (CNNs) or needs nothing more than the image (hashes)
    batch_size: int = 32

    @abstractmethod
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Turn one decoded RGB image into the model's input array. Must be thread-safe."""

    @abstractmethod
    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Embed a stacked batch of preprocessed arrays into ``(n, dim)`` unit-norm float32 rows."""

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            out.append(self.embed_arrays(np.stack([self.preprocess(im) for im in chunk])))
        return np.concatenate(out)


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Return float32 rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, eps)
