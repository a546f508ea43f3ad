"""Audit a collection: what is wrong with it, in one pass over the index, and which new files it already holds.

* :func:`audit`: quality problems (:mod:`.quality`), odd ones out (:mod:`.outliers`), visual clusters
  (:mod:`.clusters`), exact and near-duplicate groups, minus what a reviewer marked "not a problem"
  (:mod:`.decisions`) or "not a duplicate".
* :func:`check`: which new files already exist in an index, exactly or as near copies (:mod:`.check`);
  :func:`check_against`: the same for every item of another index.
* :mod:`.report`: the findings as CSV, HTML, or the files to quarantine.
"""

from lookalike.audit.check import CheckResult, check, check_against
from lookalike.audit.core import AuditReport, ItemAudit, audit
from lookalike.audit.decisions import mark_not_a_problem, not_a_problem
from lookalike.audit.outliers import DEFAULT_OUTLIER_CUTOFF
from lookalike.audit.quality import DEFAULT_CUTOFFS, ISSUES, QualityCutoffs, assess

__all__ = [
    "DEFAULT_CUTOFFS",
    "DEFAULT_OUTLIER_CUTOFF",
    "ISSUES",
    "AuditReport",
    "CheckResult",
    "ItemAudit",
    "QualityCutoffs",
    "assess",
    "audit",
    "check",
    "check_against",
    "mark_not_a_problem",
    "not_a_problem",
]
