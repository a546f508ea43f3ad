"""Offline keyword tags: each image's top ImageNet classes, and matching words against them.

This is *keyword* search, not semantic search: an image is found by ``pickup`` only if the ImageNet
classifier put "pickup, pickup truck" among its top 5 classes. It knows the 1000 ImageNet classes
(many dog breeds, few everyday scenes), no colours and no relations; ``red pickup truck`` matches
the words ``pickup`` and ``truck`` and ignores ``red``. With a CLIP model, ``search --text`` uses
the text tower instead and understands phrases.

Tags are computed at index time from the logits of the same forward pass that makes the embedding
(no extra cost) and kept per item as ``ItemRecord.extra["imagenet"] = [[class_index, prob], ...]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources

import numpy as np

TAGS_KEY = "imagenet"
TOP_K = 5
#: Classes below this softmax probability are not stored: they are noise, not a description.
MIN_PROBABILITY = 0.02
_STOPWORDS = frozenset({"a", "an", "the", "of", "and", "or", "with", "in", "on", "at", "to", "for", "photo", "picture"})
_WORD = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names (comma-separated synonyms), in the classifier's order."""
    text = resources.files("lookalike.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    if len(names) != 1000:
        raise RuntimeError(f"imagenet_classes.txt has {len(names)} classes, expected 1000")
    return names


def top_tags(logits: np.ndarray, k: int = TOP_K, min_probability: float = MIN_PROBABILITY) -> list[dict[str, object]]:
    """Per row of ImageNet logits: ``{"imagenet": [[class, prob], ...]}`` for the top ``k`` classes."""
    from lookalike.models.cnn import top_k_softmax

    idx, probs = top_k_softmax(logits, k)
    out: list[dict[str, object]] = []
    for row_idx, row_p in zip(idx.tolist(), probs.tolist(), strict=True):
        tags = [[int(c), round(float(p), 4)] for c, p in zip(row_idx, row_p, strict=True) if p >= min_probability]
        out.append({TAGS_KEY: tags})
    return out


def _stem(word: str) -> str:
    """Crude plural folding so ``trucks`` finds ``truck`` (and ``buses`` finds ``bus``)."""
    if len(word) > 4 and word.endswith("es") and word[-3] in "sxz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


@lru_cache(maxsize=1)
def _class_words() -> tuple[frozenset[str], ...]:
    return tuple(frozenset(words(name)) for name in imagenet_class_names())


def describe(tags: Iterable[Iterable[float]]) -> list[dict[str, object]]:
    """Readable tags: ``[{"label": first synonym, "p": prob}, ...]``."""
    names = imagenet_class_names()
    return [{"label": names[int(c)].split(",")[0], "p": float(p)} for c, p in tags]


def keyword_score(query: str | set[str], tags: Iterable[Iterable[float]]) -> float:
    """How well an item's tags match the query words: ``sum over tags of prob * share of the query's
    words found in that class's names``. 0 when no word matches."""
    qwords = words(query) if isinstance(query, str) else query
    if not qwords:
        return 0.0
    class_words = _class_words()
    score = 0.0
    for c, p in tags:
        hit = len(qwords & class_words[int(c)])
        if hit:
            score += float(p) * hit / len(qwords)
    return score
