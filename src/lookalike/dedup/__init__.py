"""Cleaning a collection: duplicate groups, sweep by example, quarantine with undo."""

from lookalike.dedup.groups import DupGroup, anchored_groups, default_threshold, find_duplicate_groups, knn_edges
from lookalike.dedup.keep import KEEP_RULES, choose_keep, keep_key
from lookalike.dedup.quarantine import QuarantineError, quarantine, restore, restore_files
from lookalike.dedup.sweep import KIND_SWEEP_THRESHOLD, NextTier, SweepResult, same_picture_threshold, sweep
from lookalike.dedup.threshold import CalibrationUnavailable, precision_threshold

__all__ = [
    "KEEP_RULES",
    "KIND_SWEEP_THRESHOLD",
    "CalibrationUnavailable",
    "DupGroup",
    "NextTier",
    "QuarantineError",
    "SweepResult",
    "anchored_groups",
    "choose_keep",
    "default_threshold",
    "find_duplicate_groups",
    "keep_key",
    "knn_edges",
    "precision_threshold",
    "quarantine",
    "restore",
    "restore_files",
    "same_picture_threshold",
    "sweep",
]
