"""Liveness: whether the server answers, and what it serves (model, size, batching so far)."""

from __future__ import annotations

from fastapi import APIRouter

from lookalike import __version__
from lookalike.web.deps import StateDep

router = APIRouter(tags=["api"])


@router.get("/api/health")
def health(state: StateDep) -> dict[str, object]:
    """Liveness and what is being served."""
    return {
        "status": "ok",
        "version": __version__,
        "items": len(state.index),
        "model": state.index.model_name,
        "writable": state.token is not None and state.upload_dir is not None,
        "batches": dict(sorted(state.batcher.batch_sizes.items())),
    }
