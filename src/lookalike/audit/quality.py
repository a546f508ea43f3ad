"""Quality problems of one picture, from the pixel statistics stored when it was indexed.

Each issue has a **score** in 0..1 (higher = worse) and a **cut-off** on that score (flagged at or
above it). The cut-offs in :data:`DEFAULT_CUTOFFS` were chosen on the tuning part of
``bench/bench_audit.py`` (GCompris photos with planted problems) and are reported on its held-out part
(other Debian packages' photos); see docs/audit.md. Every one can be changed per audit
(:class:`QualityCutoffs`, ``lookalike audit --cutoff blurry=0.8``).

=================  ==============================================================================
issue              score
=================  ==============================================================================
``dark``           1 - mean grey: an under-exposed picture is dim all over
``bright``         share of pixels with a clipped (burnt-out) channel, unless one flat colour covers
                   most of the picture (a product shot on a white studio background is not
                   over-exposed; an all-white picture is ``low_information``)
``low_information`` no coarse structure (a solid colour or a gradient: the Laplacian of a 32 px copy
                   is ~0, as noise and JPEG grain average away), ``1 / (1 + structure / 0.001)``; or
                   (``low_information_tone``, its own cut-off) a near-single-tone histogram, as in
                   text-only placeholders: 1 - grey entropy / 8 bits
``blurry``         missing fine detail for the picture's contrast: variance of the Laplacian over
                   the contrast squared, mapped to 0..1 (``1 / (1 + detail / 0.05)``)
``grayscale``      no colour: 1 - the 95th percentile of the spread between RGB channels / 0.1
``odd_aspect``     1 - short side / long side (a 10:1 strip scores 0.9, 16:9 0.44)
``tiny``           1 - longest side / 256 (a 32 px picture scores 0.875, 128 px 0.5; a 10:1 strip
                   800 px long is not tiny, it is ``odd_aspect``)
=================  ==============================================================================

Some findings explain others, and only the explanation is reported: a dark, over-exposed or
low-information picture is not also called blurry or greyscale (its missing detail and colour
follow from the exposure or from there being nothing in it). Size findings are independent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace

from lookalike.imaging.stats import STATS_VERSION

ISSUES = ("blurry", "dark", "bright", "low_information", "odd_aspect", "tiny", "grayscale")
#: Findings that explain away others (the keys suppress the values).
EXPLAINS = {
    "dark": ("blurry", "grayscale"),
    "bright": ("blurry", "grayscale"),
    "low_information": ("blurry", "grayscale"),
}
#: ``bright`` is not reported when one colour covers at least this share of the picture: a studio
#: background (see the module docstring). Not tuned: the share of the white backgrounds of GCompris'
#: tool photos starts at 0.78.
STUDIO_BACKGROUND = 0.75
#: Scales of the score mappings (chosen so the scores spread over 0..1 on real photos).
DETAIL_SCALE = 0.05
STRUCTURE_SCALE = 1e-3
COLOUR_SCALE = 0.1
TINY_SIDE = 256


@dataclass(frozen=True)
class QualityCutoffs:
    """Scores at or above these are flagged (one per issue; ``low_information`` has two sub-scores)."""

    blurry: float = 0.613
    dark: float = 0.865
    bright: float = 0.395
    #: on the structure sub-score (solid colours, gradients)
    low_information: float = 0.891
    #: on the entropy sub-score, 1 - entropy / 8 (text-only placeholders)
    low_information_tone: float = 0.847
    odd_aspect: float = 0.76
    tiny: float = 0.511
    grayscale: float = 0.666

    def with_overrides(self, overrides: Mapping[str, float]) -> QualityCutoffs:
        """A copy with some cut-offs changed; unknown names are an error that lists the known ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown cut-off {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
        for name, value in overrides.items():
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"cut-off {name} must be between 0 and 1, not {value}")
        return replace(self, **{k: float(v) for k, v in overrides.items()})

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_CUTOFFS = QualityCutoffs()


@dataclass
class Quality:
    """One picture's scores and the issues flagged (after the explained ones are dropped)."""

    scores: dict[str, float]
    issues: list[str] = field(default_factory=list)
    #: False when the picture had no (current) statistics and could not be measured
    measured: bool = True

    def severity(self, issue: str) -> float:
        """The issue's score as shown: for ``low_information`` the larger of its two sub-scores."""
        if issue == "low_information":
            return max(self.scores.get("low_information", 0.0), self.scores.get("low_information_tone", 0.0))
        return self.scores.get(issue, 0.0)


#: The statistics the rules read.
NEEDED = ("brightness", "contrast", "sharpness", "structure", "entropy", "dominant", "clipped", "colour_p95")


def has_current_stats(extra: Mapping[str, object]) -> bool:
    """Whether an item's stored statistics are of the version (and have the values) the rules read."""
    stats = extra.get("stats")
    return isinstance(stats, Mapping) and stats.get("version") == STATS_VERSION and all(k in stats for k in NEEDED)


def scores(stats: Mapping[str, float], width: int, height: int) -> dict[str, float]:
    """Every issue's score (and ``low_information``'s tone sub-score) from the statistics and size."""
    detail = float(stats["sharpness"]) / max(float(stats["contrast"]), 0.05) ** 2
    structure = float(stats["structure"])
    bright = float(stats["clipped"]) if float(stats["dominant"]) < STUDIO_BACKGROUND else 0.0
    short, long = sorted((max(1, int(width)), max(1, int(height))))
    out = {
        "blurry": 1.0 / (1.0 + detail / DETAIL_SCALE),
        "dark": 1.0 - float(stats["brightness"]),
        "bright": bright,
        "low_information": 1.0 / (1.0 + structure / STRUCTURE_SCALE),
        "low_information_tone": max(0.0, 1.0 - float(stats["entropy"]) / 8.0),
        "odd_aspect": 1.0 - short / long,
        "tiny": max(0.0, 1.0 - long / TINY_SIDE),
        "grayscale": max(0.0, 1.0 - float(stats["colour_p95"]) / COLOUR_SCALE),
    }
    return {k: round(v, 4) for k, v in out.items()}


def assess(stats: Mapping[str, float], width: int, height: int, cutoffs: QualityCutoffs = DEFAULT_CUTOFFS) -> Quality:
    """The scores and the flagged issues of one picture."""
    s = scores(stats, width, height)
    flagged = {issue for issue in ISSUES if issue != "low_information" and s[issue] >= getattr(cutoffs, issue)}
    if s["low_information"] >= cutoffs.low_information or s["low_information_tone"] >= cutoffs.low_information_tone:
        flagged.add("low_information")
    for cause, effects in EXPLAINS.items():
        if cause in flagged:
            flagged.difference_update(effects)
    return Quality(s, [issue for issue in ISSUES if issue in flagged])
