"""Small helpers shared by the benchmark scripts: timing, percentiles, peak memory, tables."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def time_each(fn: Callable[[T], object], inputs: Sequence[T], warmup: int = 2) -> np.ndarray:
    """Wall-clock milliseconds of ``fn(x)`` for each input, after ``warmup`` untimed calls."""
    for x in inputs[:warmup]:
        fn(x)
    out = np.empty(len(inputs))
    for i, x in enumerate(inputs):
        start = time.perf_counter()
        fn(x)
        out[i] = (time.perf_counter() - start) * 1000
    return out


def pct(ms: np.ndarray, q: float) -> float:
    return float(np.percentile(ms, q))


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A GitHub-markdown table, so results paste straight into the README."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        cells = [f"{c:,.1f}" if isinstance(c, float) else str(c) for c in row]
        print("| " + " | ".join(cells) + " |")


def stub_torchvision() -> None:
    """imagededup imports torchvision for its own CNN models, and PyPI's torchvision does not load
    beside the CPU torch here; the hashing methods the benchmarks compare never touch it."""
    import sys
    import types

    class _Stub(types.ModuleType):
        def __getattr__(self, name: str) -> _Stub:
            if name.startswith("__"):
                raise AttributeError(name)
            return _Stub(f"{self.__name__}.{name}")

        def __call__(self, *a: object, **k: object) -> _Stub:
            return _Stub(f"{self.__name__}()")

    for name in (
        "torchvision",
        "torchvision.models",
        "torchvision.transforms",
        "torchvision.models.vision_transformer",
    ):
        sys.modules.setdefault(name, _Stub(name))
