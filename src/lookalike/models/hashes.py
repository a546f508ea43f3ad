"""Perceptual hashes (pHash, dHash) as 64-d vectors, so they go through the same index as CNNs.

Each hash bit becomes ``+1/8`` or ``-1/8``: the vector has unit norm and the cosine similarity of two
vectors is exactly ``1 - 2 * hamming / 64``, so a cosine threshold is a Hamming threshold.
They are cheap, need no weights, and are good at exact/near-exact duplicates only.

The hash is computed in ``preprocess`` (worker threads); ``embed_arrays`` just returns the rows.
"""

from __future__ import annotations

from collections.abc import Callable

import imagehash
import numpy as np
from PIL import Image

from lookalike.models.base import Embedder, ModelSpec, l2_normalize

HASH_SIZE = 8
HASH_DIM = HASH_SIZE * HASH_SIZE
_FUNCS: dict[str, Callable[..., imagehash.ImageHash]] = {"phash": imagehash.phash, "dhash": imagehash.dhash}


def hash_to_vector(image_hash: imagehash.ImageHash) -> np.ndarray:
    """``ImageHash`` -> float32 vector of ±1/sqrt(bits) (unit norm)."""
    bits = np.asarray(image_hash.hash, dtype=bool).ravel()
    scale = np.float32(1.0 / np.sqrt(bits.size))
    return np.where(bits, scale, -scale).astype(np.float32)


class HashEmbedder(Embedder):
    """``kind`` is ``"phash"`` or ``"dhash"``; thread-safe (imagehash is pure PIL/numpy/scipy)."""

    batch_size = 256

    def __init__(self, kind: str) -> None:
        if kind not in _FUNCS:
            raise ValueError(f"unknown hash {kind!r}; use one of {sorted(_FUNCS)}")
        self.kind = kind
        self._func = _FUNCS[kind]
        self.spec = ModelSpec(
            name=kind,
            version=f"imagehash-{imagehash.__version__}",
            dim=HASH_DIM,
            preprocessing=f"imagehash.{kind};hash_size={HASH_SIZE};bits=+-1/8",
            # The hashes shrink to <= 32 px; a JPEG decoded in draft mode to >= 256 px gives the same bits
            # almost always and decodes many times faster than a full 12 MP decode.
            input_size=256,
        )

    def image_hash(self, image: Image.Image) -> imagehash.ImageHash:
        return self._func(image, hash_size=HASH_SIZE)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return hash_to_vector(self.image_hash(image))

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        return l2_normalize(np.asarray(batch, dtype=np.float32).reshape(len(batch), HASH_DIM))
