"""The audit: the collection's odd ones out, quality problems, duplicates, clusters and a 2-D map.

Reading (``GET /api/audit``, ``GET /audit``) is open like search; the report is computed once per
state of the index and kept until the index changes. Marking a finding "not a problem" (``POST
/api/audit/not-a-problem``) needs the bearer token; quarantining goes through the review page's
``POST /api/review/quarantine`` (token and quarantine folder), whose manifest ``lookalike restore``
undoes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from lookalike.audit.core import AuditReport, ItemAudit, audit
from lookalike.audit.decisions import KINDS, mark_not_a_problem
from lookalike.audit.map import CollectionMap, collection_map
from lookalike.dedup.sweep import KIND_SWEEP_THRESHOLD
from lookalike.web.deps import NEEDS_TOKEN, TOKEN_ERRORS, PageDep, StateDep
from lookalike.web.state import WebState

#: Items listed per section of the page (the CLI's --html and --export have them all).
PAGE_LIMIT = 120
MAX_IDS = 10_000
#: Colours of the map's clusters (cycled).
PALETTE = ("#2463eb", "#0a7a32", "#b36b00", "#7a3db8", "#c2185b", "#00838f", "#5d6b00", "#8d4b2a")

router = APIRouter(tags=["audit"])


class NotAProblemRequest(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=MAX_IDS, description="Items whose findings are not problems.")
    kind: str = Field("all", description=f"Which findings: {', '.join(KINDS)}.")


async def current_report(state: WebState, refresh: bool = False) -> AuditReport:
    """The audit of the index as it is now: computed in a worker thread, kept until the index changes."""
    store = state.index.store
    key = (len(store), store.get_meta("updated_at"), store.get_meta("audit_not_a_problem"))
    cached = state.audit_cache
    if not refresh and cached is not None and cached[0] == key:
        return cached[1]  # type: ignore[return-value]
    async with state.audit_lock:  # one audit at a time; a second request waits for the first
        cached = state.audit_cache
        if not refresh and cached is not None and cached[0] == key:
            return cached[1]  # type: ignore[return-value]
        report = await run_in_threadpool(audit, state.index)
        state.audit_cache = (key, report)
        return report


async def current_map(state: WebState, report: AuditReport) -> CollectionMap:
    """The map of this report: laid out once (UMAP takes seconds), then kept as long as the report is."""
    cached = state.map_cache
    if cached is not None and cached[0] is report:
        return cached[1]  # type: ignore[return-value]
    found = await run_in_threadpool(collection_map, state.index.store, report)
    state.map_cache = (report, found)
    return found


def _entry(state: WebState, a: ItemAudit) -> dict[str, Any]:
    out = state.item_dict(a.record)
    out.update(
        issues=list(a.issues),
        scores=dict(a.quality.scores),
        severity={issue: round(a.quality.severity(issue), 4) for issue in a.issues},
        outlier_score=None if a.outlier_score is None else round(a.outlier_score, 2),
        outlier=a.outlier,
        cluster=a.cluster,
    )
    return out


def report_dict(state: WebState, report: AuditReport, limit: int | None = None) -> dict[str, Any]:
    """The CLI's JSON contract, each entry also carrying the item's id and page/thumbnail URLs."""
    doc = report.to_dict()
    by_id = {a.record.id: a for a in report.items}
    doc["outliers"] = [_entry(state, a) | {"score": round(a.outlier_score or 0.0, 3)} for a in report.outliers()]
    doc["quality"] = [_entry(state, a) for a in report.quality()]
    doc["clusters"] = [
        {"id": c.id, "size": c.size, "examples": [_entry(state, by_id[r.id]) for r in c.examples]}
        for c in report.clusters
    ]
    for key, groups in (("exact_duplicates", report.exact_duplicates), ("near_duplicates", report.near_duplicates)):
        doc[key] = [
            {
                "keep": state.item_dict(g.keep),
                "duplicates": [
                    state.item_dict(d) | {"score": round(float(s), 4)}
                    for d, s in zip(g.duplicates, g.scores, strict=True)
                ],
            }
            for g in groups
        ]
    if limit is not None:
        for key in ("outliers", "quality", "exact_duplicates", "near_duplicates"):
            doc[key] = doc[key][:limit]
    doc["counts"] = report.counts()
    doc["settings"] = report.settings
    return doc


@router.get("/api/audit")
async def get_audit(
    state: StateDep, refresh: Annotated[bool, Query(description="Audit again even if the index is unchanged.")] = False
) -> dict[str, Any]:
    """Odd ones out, quality problems, clusters, exact and near-duplicates (as `lookalike audit --json`)."""
    return report_dict(state, await current_report(state, refresh))


@router.get("/api/audit/map")
async def get_map(state: StateDep) -> dict[str, Any]:
    """One point per distinct picture (UMAP of the vectors, or PCA without umap-learn: ``method``; 0..1),
    its cluster, and whether it is flagged."""
    report = await current_report(state)
    found = await current_map(state, report)
    return {**found.to_dict(), "clusters": len(report.clusters)}


@router.post("/api/audit/not-a-problem", responses=TOKEN_ERRORS, dependencies=[NEEDS_TOKEN])
def not_a_problem(state: StateDep, body: NotAProblemRequest) -> dict[str, object]:
    """Remember that these items' findings (of ``kind``) are not problems; later audits leave them out."""
    if body.kind not in KINDS:
        raise HTTPException(422, f"unknown kind {body.kind!r}; choose one of {', '.join(KINDS)}")
    shas = [state.record(item_id).sha256 for item_id in dict.fromkeys(body.ids)]
    return {"marked": mark_not_a_problem(state.index.store, shas, [body.kind]), "items": len(shas)}


@router.get("/audit", response_class=HTMLResponse, include_in_schema=False)
async def audit_page(state: StateDep, page: PageDep) -> HTMLResponse:
    report = await current_report(state)
    doc = report_dict(state, report, limit=PAGE_LIMIT)
    found = await current_map(state, report)
    by_issue = {
        issue: [_entry(state, a) for a in found[:PAGE_LIMIT]] for issue, found in report.by_issue().items() if found
    }
    return page(
        "audit.html",
        doc=doc,
        by_issue=by_issue,
        points=found.points,
        map_method=found.method,
        names={a.record.id: a.record.path.rsplit("/", 1)[-1] for a in report.items},
        palette=PALETTE,
        writable=state.token is not None,
        can_quarantine=state.token is not None and state.quarantine_dir is not None,
        limit=PAGE_LIMIT,
        kind_sweep_threshold=KIND_SWEEP_THRESHOLD,  # a cluster is one kind of picture, not one picture
    )
