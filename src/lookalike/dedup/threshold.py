"""``--precision P``: a threshold read from the collection's own calibration (search/calibration.py).

The calibration measures how edited copies of the collection's images score against their originals
and how the nearest *different* images score; :func:`lookalike.search.calibration.threshold_for_precision`
turns the two into the lowest threshold reaching a precision. Without a usable calibration, asking
for a precision is an error that says how to get one, never a silent guess.
"""

from __future__ import annotations

from lookalike.search import calibration as calib
from lookalike.store.base import Store, StoreError


class CalibrationUnavailable(StoreError):
    """A target precision was asked for but this index holds no usable calibration (a plain threshold works)."""

    def __init__(self, *args: object, parameters: tuple[str, ...] = ("threshold",)) -> None:
        super().__init__(*args, parameters=parameters)


def precision_threshold(store: Store, precision: float) -> float:
    """The lowest cosine threshold at which copies are told from non-copies with ``precision``."""
    if not 0.0 < precision < 1.0:
        raise ValueError("precision must be between 0 and 1 (exclusive), e.g. 0.99")
    cal = calib.load_calibration(store)
    model = str((store.model_identity or {}).get("name", ""))
    hint = "calibrate the index first (`lookalike calibrate`: at least 20 images still on disk), or give a threshold"
    if cal is None:
        raise CalibrationUnavailable(
            f"this index has no calibration, so a target precision has nothing to go by; {hint}"
        )
    if not cal.ok:
        raise CalibrationUnavailable(f"this index's calibration is unusable ({cal.reason}); {hint}")
    if cal.model and model and cal.model != model:
        raise CalibrationUnavailable(
            f"the calibration was measured with model {cal.model!r} but this index uses {model!r}; {hint}"
        )
    return calib.threshold_for_precision(cal, precision)
