"""The web face: a JSON API and a small offline web page over an :class:`~lookalike.index.Index`."""

from lookalike.web.app import create_app

__all__ = ["create_app"]
