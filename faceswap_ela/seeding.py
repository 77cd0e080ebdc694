"""Random generators seeded from params.yaml and the item's identity, never from global state."""

from __future__ import annotations

import hashlib

import numpy as np


def key(*parts: object) -> int:
    """A stable 64-bit integer for any parts (unlike hash(), the same in every process and run)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator for one item: the same seed and parts give the same draws in any worker."""
    return np.random.default_rng([int(seed), key(*parts)])
