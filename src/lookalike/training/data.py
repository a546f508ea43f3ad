"""A labelled image folder (``ROOT/<class>/<images>``) as a file list with integer labels.

Training data is the user's own, so every problem is reported in words: fewer than two classes, a
class with fewer than two images (retrieval needs at least one other same-class image to find),
images outside any class folder, and files that cannot be decoded (skipped and listed, never fatal
on their own). The validation split is stratified so every class is represented on both sides.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from lookalike.errors import LookalikeError
from lookalike.imaging.discover import Skip, walk_images
from lookalike.imaging.load import ImageLoadError, load_image
from lookalike.pipeline.runner import Pipeline, Work

T = TypeVar("T")


class TrainingDataError(LookalikeError, ValueError):
    """The labelled folder cannot be trained on; the message says why and what to do."""


@dataclass
class LabeledImages:
    """Image files with a class index each; ``classes[label]`` is the class (folder) name."""

    root: Path
    paths: list[Path]
    labels: np.ndarray  # int64, one per path
    classes: list[str]
    skipped: list[Skip] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        found = Counter(self.labels.tolist())
        return {name: found.get(i, 0) for i, name in enumerate(self.classes)}

    def subset(self, keep: Sequence[int] | np.ndarray, extra_skips: Sequence[Skip] = ()) -> LabeledImages:
        keep = np.asarray(keep, dtype=np.int64)
        return LabeledImages(
            self.root,
            [self.paths[i] for i in keep.tolist()],
            self.labels[keep],
            self.classes,
            [*self.skipped, *extra_skips],
        )

    def check(self) -> None:
        """Raise :class:`TrainingDataError` unless there are >= 2 classes with >= 2 images each."""
        check_classes(self.counts(), self.root, self.skipped)


def check_classes(counts: dict[str, int], root: Path, skipped: Sequence[Skip] = ()) -> None:
    note = f" ({len(skipped)} files were skipped as unreadable or not images)" if skipped else ""
    usable = {name: n for name, n in counts.items() if n > 0}
    if len(usable) < 2:
        raise TrainingDataError(
            f"{root}: found {len(usable)} class folder(s) with images{note}; training needs at least 2. "
            "Put each class's images in its own sub-folder: ROOT/<class name>/<image files>."
        )
    small = sorted(name for name, n in counts.items() if n < 2)
    if small:
        shown = ", ".join(f"{name!r} ({counts[name]})" for name in small[:10])
        raise TrainingDataError(
            f"{root}: every class needs at least 2 readable images, and {len(small)} do not: {shown}{note}. "
            "Add images or remove those folders."
        )


def scan_labeled_folder(root: str | os.PathLike[str]) -> LabeledImages:
    """List image files under each immediate sub-folder of ``root`` (one class per folder).

    Files are recognised by content (like ``lookalike index``); hidden folders are ignored; images
    directly in ``root`` are reported as skipped since they have no class. Nothing is decoded here.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TrainingDataError(f"{root} is not a folder; give a folder with one sub-folder per class")
    skipped: list[Skip] = []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for loose in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
        skipped.append(Skip(str(loose), "no class", "file is directly in the root folder, not in a class folder"))
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(class_dirs):
        found = sorted(f.path for f in walk_images([folder], skipped.append))
        paths.extend(Path(p) for p in found)
        labels.extend([label] * len(found))
    data = LabeledImages(root, paths, np.asarray(labels, dtype=np.int64), [d.name for d in class_dirs], skipped)
    data.check()
    return data


def split_validation(labels: np.ndarray, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: about ``val_split`` of each class to validation, at least one image per class
    (and at least one kept for training) when ``val_split > 0``. Returns sorted index arrays."""
    if not 0.0 <= val_split < 1.0:
        raise TrainingDataError(f"the validation split must be in [0, 1), got {val_split}", parameters=("val_split",))
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        rng.shuffle(idx)
        n_val = 0 if val_split == 0 else min(len(idx) - 1, max(1, round(len(idx) * val_split)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def load_all(
    data: LabeledImages,
    convert: Callable[[Image.Image, int], T],
    *,
    draft_size: int | None = None,
    workers: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> tuple[LabeledImages, list[T]]:
    """Decode every image and ``convert(image, index)`` it in worker threads.

    Unreadable files become :class:`Skip` entries (reason from :class:`ImageLoadError`) on the
    returned data set, which is re-checked so that skips cannot leave a class with < 2 images.
    """

    keep: list[int] = []
    results: list[T] = []
    skips: list[Skip] = []

    def read(i: int) -> Work[int] | Skip:
        path = data.paths[i]
        try:
            picture = load_image(path, draft_size=draft_size).image
        except ImageLoadError as exc:
            return Skip(str(path), exc.reason, exc.detail)
        return Work(i, info={"converted": convert(picture, i)})

    class Collect:
        def finished(self, done: list[tuple[Work[int], np.ndarray]], extras: list[dict[str, object]]) -> None:
            for work, _ in done:
                keep.append(work.item)
                results.append(work.info["converted"])

        def skipped(self, item: int, skip: Skip) -> None:
            skips.append(Skip(str(data.paths[item]), skip.reason, skip.detail))

    Pipeline(read, Collect(), None, workers=workers, progress=on_done).run(range(len(data)))
    out = data.subset(keep, skips)
    out.check()
    return out, results
