"""The embedding pipeline every job shares: reader threads -> model batches -> a sink."""

from lookalike.pipeline.runner import Pipeline, Sink, Work

__all__ = ["Pipeline", "Sink", "Work"]
