"""emostream: real-time speech emotion recognition for live and long audio."""

__version__ = "0.1.0"
__all__ = ["__version__"]
