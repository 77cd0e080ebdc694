"""An untrained "JPEG ghost" score (after Farid 2009, "Exposing digital forgeries from JPEG ghosts")
on the ELA at several qualities (``ela.qualities``).

Re-saving a JPEG at quality q changes it least where it was last saved at q: its error level,
plotted against q, dips there (the ghost). A face pasted from a photo with another compression
history, or blurred and re-rendered, answers to the qualities differently from its frame. For each
crop the per-quality mean error level inside the face (the centre that faceswap_ela.baseline uses)
and in its surround (the border) give two curves over the k qualities.

The score is the total-variation distance between the two curves, each normalised to unit sum:
``0.5 * sum_j |c_j / sum(c) - b_j / sum(b)|``, in [0, 1], higher for a face that answers to the
qualities unlike its frame. Why this and not the difference of the curves' argmin qualities:
texture scales a region's error levels at every quality alike (a smooth cheek errs less than hair
at all of them), so the curves of one untouched photo differ mostly by a gain, which the unit sum
takes out, while a ghost changes the curve's shape, which the distance measures; Farid too compares
normalised difference curves, not raw levels. The argmin takes a few discrete values (k of them),
ties often (for a photo never saved below the smallest quality both minima sit there) and ignores
everything but the dip; the distance is continuous, so its AUC ranks every pair. A curve that is
zero throughout (a flat region) counts as uniform.

It needs k >= 2 qualities: with one, both normalised curves are 1 and the score says nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faceswap_ela.baseline import CHUNK, centre_mask


def ghost_curves(ela_k: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre, border): N x k mean error levels per quality, inside the centre mask and outside
    it, of an N x S x S x 3k uint8 ELA stack (quality by quality, RGB within each; memory maps are
    read in blocks)."""
    if ela_k.ndim != 4 or ela_k.shape[1] != ela_k.shape[2] or ela_k.shape[3] != 3 * k:
        raise ValueError(f"need an N x S x S x {3 * k} ELA stack for {k} qualities, got {ela_k.shape}")
    inside = centre_mask(ela_k.shape[1]).ravel()
    count_in, count_out = 3 * int(inside.sum()), 3 * int((~inside).sum())
    centre, border = np.empty((len(ela_k), k)), np.empty((len(ela_k), k))
    for start in range(0, len(ela_k), CHUNK):
        block = np.asarray(ela_k[start : start + CHUNK]).reshape(-1, inside.size, k, 3)
        centre[start : start + len(block)] = block[:, inside].sum(axis=(1, 3), dtype=np.int64) / count_in
        border[start : start + len(block)] = block[:, ~inside].sum(axis=(1, 3), dtype=np.int64) / count_out
    return centre, border


def _unit_sum(curves: np.ndarray) -> np.ndarray:
    totals = curves.sum(axis=1, keepdims=True)
    uniform = np.full_like(curves, 1.0 / curves.shape[1])
    return np.divide(curves, totals, out=uniform, where=totals > 0)


def ghost_scores(ela_k: np.ndarray, qualities: Sequence[int]) -> np.ndarray:
    """The ghost score of each crop of an N x S x S x 3k ELA stack at ``qualities`` (k >= 2): the
    total-variation distance between its centre's and its border's unit-sum curves (module doc)."""
    qualities = list(qualities)
    if len(qualities) < 2:
        raise ValueError(f"a JPEG ghost needs at least 2 qualities, got {qualities}")
    centre, border = ghost_curves(ela_k, len(qualities))
    return 0.5 * np.abs(_unit_sum(centre) - _unit_sum(border)).sum(axis=1)
