"""Thresholds: the measured defaults, and ``--precision P`` from a collection's calibration.

Calibration (issue 5) stores, in the index metadata under ``duplicate_calibration``, measured points
``{"model": NAME, "points": [[threshold, precision], ...]}``. Until a collection has been calibrated,
asking for a precision is an error that says how to get one, never a silent guess.
"""

from __future__ import annotations

from lookalike.dedup.groups import default_threshold
from lookalike.store.base import Store, StoreError

CALIBRATION_KEY = "duplicate_calibration"


class CalibrationUnavailable(StoreError):
    """``--precision`` was asked for but this index holds no usable duplicate calibration."""


def threshold_for_precision(store: Store, precision: float) -> float:
    """The lowest threshold whose calibrated precision is at least ``precision``."""
    if not 0.0 < precision <= 1.0:
        raise ValueError("precision must be in (0, 1]")
    calibration = store.get_meta(CALIBRATION_KEY)
    model = (store.model_identity or {}).get("name")
    if not isinstance(calibration, dict) or not calibration.get("points"):
        raise CalibrationUnavailable(
            "this index has no duplicate calibration, so --precision cannot be turned into a threshold; "
            f"use --threshold T (the default for {model} is {default_threshold(str(model)):.3f})"
        )
    if calibration.get("model") != model:
        raise CalibrationUnavailable(
            f"the calibration was made for model {calibration.get('model')!r}, this index uses {model!r}; recalibrate"
        )
    ok = [float(t) for t, p in calibration["points"] if float(p) >= precision]  # type: ignore[union-attr]
    if not ok:
        raise CalibrationUnavailable(f"no calibrated threshold reaches precision {precision}")
    return min(ok)
