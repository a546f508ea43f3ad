"""lookalike: visual similarity search for image collections."""

__version__ = "0.1.0"
