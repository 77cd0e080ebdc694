"""Face-swap detection with Error Level Analysis and a CNN (Zhang & Zhao), as a DVC pipeline."""

__version__ = "0.1.0"
