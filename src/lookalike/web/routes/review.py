"""Review before cleaning: duplicate groups or a sweep, ticked in the page, then quarantined.

Reading (``GET /api/review/dups``, ``POST /api/review/sweep``) is open like search. Changing
anything (``POST /api/review/quarantine``, ``POST /api/review/not-duplicates``) needs the bearer
token; quarantining also needs a quarantine folder (``lookalike serve --quarantine-dir D``). Files
are moved by :func:`lookalike.dedup.quarantine.quarantine`, with its manifest and all its safety
rules (sha256 re-checked, never outside the indexed folders, nothing deleted): ``lookalike restore
MANIFEST`` undoes it.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from lookalike.dedup.groups import default_threshold, find_duplicate_groups, resolve_rule
from lookalike.dedup.keep import DEFAULT_KEEP, KEEP_RULES
from lookalike.dedup.quarantine import QuarantineError, quarantine
from lookalike.dedup.sweep import same_picture_threshold, sweep
from lookalike.store.base import ItemRecord
from lookalike.web.deps import NEEDS_TOKEN, TOKEN_ERRORS, PageDep, StateDep, UploadsDep
from lookalike.web.state import WebState

#: Groups or sweep matches sent to the page at most (the rest: use the CLI with --html).
MAX_REVIEW_ITEMS = 2000
MAX_IDS = 10_000

_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **TOKEN_ERRORS,
    403: {"description": "Disabled: no token (or no quarantine folder) configured"},
    404: {"description": "An id is not in the index"},
}

router = APIRouter(tags=["review"])


class QuarantineRequest(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=MAX_IDS, description="Items to move (the ticked ones).")
    reason: str = Field("reviewed in the web page", max_length=2000, description="Written to the manifest.")


class NotDuplicatesRequest(BaseModel):
    pairs: list[tuple[int, int]] = Field(
        min_length=1, max_length=MAX_IDS, description="Item id pairs that are not duplicates of each other."
    )


def _with_score(state: WebState, rec: ItemRecord, score: float) -> dict[str, object]:
    return {**state.item_dict(rec), "score": round(float(score), 4)}


@router.get("/api/review/dups")
def review_dups(
    state: StateDep,
    threshold: Annotated[float | None, Query(ge=-1.0, le=1.0, description="Default: the model's.")] = None,
    keep: Annotated[str, Query(description=f"Keep rule: {', '.join(KEEP_RULES)}.")] = DEFAULT_KEEP,
    margin: Annotated[
        float | None, Query(ge=0.0, le=1.0, description="Density margin (default: the model's; 0: off).")
    ] = None,
) -> dict[str, object]:
    """Exact and near-duplicate groups (as `lookalike dups`), each with the copy to keep."""
    if keep not in KEEP_RULES:
        raise HTTPException(422, f"unknown keep rule {keep!r}; choose one of {', '.join(KEEP_RULES)}")
    index = state.index
    n_contents = len({rec.sha256 for rec in index.store.items()})
    used, used_margin, leftover_margin, verify = resolve_rule(
        index.model_name, n_contents, threshold=threshold, margin=margin
    )
    groups = find_duplicate_groups(
        index.store, used, keep=keep, margin=used_margin, leftover_margin=leftover_margin, verify=verify
    )
    shown, out = 0, []
    for g in groups:
        if shown >= MAX_REVIEW_ITEMS:
            break
        out.append(
            {
                "keep": state.item_dict(g.keep),
                "duplicates": [_with_score(state, d, s) for d, s in zip(g.duplicates, g.scores, strict=True)],
            }
        )
        shown += 1 + len(g.duplicates)
    return {"threshold": used, "margin": used_margin, "keep_rule": keep, "total_groups": len(groups), "groups": out}


@router.post("/api/review/sweep")
async def review_sweep(
    state: StateDep,
    decode: UploadsDep,
    like: Annotated[list[int] | None, Form(description="Indexed example item ids.")] = None,
    unlike: Annotated[list[int] | None, Form(description="Indexed counter-example item ids.")] = None,
    image: Annotated[UploadFile | None, File(description="An example picture from outside.")] = None,
    threshold: Annotated[
        float | None, Form(ge=-1.0, le=1.0, description="Default: what the calibration calls the same picture.")
    ] = None,
) -> dict[str, object]:
    """Every indexed image like the examples (as `lookalike sweep`, a dry run)."""
    examples: list[Any] = list(like or [])
    for item_id in [*examples, *(unlike or [])]:
        state.record(item_id)
    if image is not None and image.filename:
        examples.append((await decode(image)).image)
    if not examples:
        raise HTTPException(422, "give at least one example: an item id (like) or a picture (image)")
    result = await run_in_threadpool(sweep, state.index, examples, list(unlike or []), threshold)
    matches = [
        {**_with_score(state, m.record, m.score), **({"verified": True} if m.verified else {})}
        for m in result.matches[:MAX_REVIEW_ITEMS]
    ]
    tier = None if result.next_tier is None else result.next_tier.to_dict()
    return {
        "threshold": result.threshold,
        "rule": result.rule,
        "count": len(result.matches),
        "matches": matches,
        "next_tier": tier,
        "verify": None if result.verify is None else result.verify.to_dict(),
    }


@router.post("/api/review/quarantine", responses=_WRITE_ERRORS, dependencies=[NEEDS_TOKEN])
async def review_quarantine(state: StateDep, body: QuarantineRequest) -> dict[str, object]:
    """Move the ticked files into the quarantine folder, with a manifest for `lookalike restore`."""
    if state.quarantine_dir is None:
        raise HTTPException(403, "quarantine is disabled: the server was started without --quarantine-dir")
    records = []
    for item_id in dict.fromkeys(body.ids):
        rec = state.index.item(item_id)
        if rec is None:
            raise HTTPException(404, f"no item with id {item_id} (already quarantined or removed?)")
        records.append(rec)
    async with state.change_lock:  # one change to the collection at a time
        try:
            report = await run_in_threadpool(
                quarantine, state.index.store, records, state.quarantine_dir, reason=body.reason
            )
        except QuarantineError as exc:
            raise HTTPException(409, str(exc)) from exc
    doc = report.to_dict()
    if not state.expose_paths:
        doc["manifest"] = os.path.basename(report.manifest)
        for outcome in [*doc["moved"], *doc["skipped"]]:  # type: ignore[union-attr]
            outcome["path"] = os.path.basename(outcome["path"])
            outcome.pop("new_path", None)
    doc["restore"] = f"lookalike restore {doc['manifest']}"
    return doc


@router.post("/api/review/not-duplicates", responses=_WRITE_ERRORS, dependencies=[NEEDS_TOKEN])
def review_not_duplicates(state: StateDep, body: NotDuplicatesRequest) -> dict[str, object]:
    """Remember that these pairs are not duplicates; later `dups` runs never group them."""
    shas = []
    for a, b in body.pairs:
        ra, rb = state.index.item(a), state.index.item(b)
        if ra is None or rb is None:
            raise HTTPException(404, f"no item with id {a if ra is None else b}")
        if ra.sha256 == rb.sha256:
            raise HTTPException(422, f"items {a} and {b} have identical bytes: they are exact duplicates")
        shas.append((ra.sha256, rb.sha256))
    return {"marked": state.index.store.mark_not_duplicates(shas), "pairs": len(shas)}


@router.get("/review", response_class=HTMLResponse, include_in_schema=False)
def review_page(state: StateDep, page: PageDep) -> HTMLResponse:
    return page(
        "review.html",
        writable=state.token is not None and state.quarantine_dir is not None,
        dup_threshold=default_threshold(state.index.model_name),
        sweep_threshold=same_picture_threshold(state.index)[0],
    )
