"""A trivial baseline: logistic regression on five hand-made numbers per crop.

The simulated fakes are blurred faces pasted back, so sharpness alone separates much of them. The
features measure exactly that, and nothing a CNN could not: the variance of the Laplacian of the
grey crop in its centre and in its border (log scale), their log ratio, and the mean ELA level in
the centre and in the border (over every channel: with ELA at several qualities, the mean over
them). The centre is the middle ``CENTRE`` share of each side.
"""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ("log_lap_var_centre", "log_lap_var_border", "log_lap_ratio", "ela_mean_centre", "ela_mean_border")
CENTRE = 0.5
CHUNK = 512  # crops per block read from the memory maps


def centre_mask(size: int, centre: float = CENTRE) -> np.ndarray:
    """True on the middle ``centre`` share of a size x size crop (on each side), False on the border."""
    if not 0 < centre < 1:
        raise ValueError(f"centre must be in (0, 1), not {centre}")
    side = max(1, round(size * centre))
    start = (size - side) // 2
    mask = np.zeros((size, size), bool)
    mask[start : start + side, start : start + side] = True
    return mask


def crop_features(rgb: np.ndarray, ela: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The FEATURES of one crop (RGB and its ELA image, H x W x 3 uint8; the ELA H x W x 3k at k
    qualities)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    laplacian = cv2.Laplacian(grey, cv2.CV_64F, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    centre_var = float(laplacian[mask].var())
    border_var = float(laplacian[~mask].var())
    level = ela.astype(np.float64).mean(axis=2)
    return np.array(
        [
            np.log1p(centre_var),
            np.log1p(border_var),
            np.log1p(centre_var) - np.log1p(border_var),
            float(level[mask].mean()),
            float(level[~mask].mean()),
        ]
    )


def features(rgbs: np.ndarray, elas: np.ndarray) -> np.ndarray:
    """N x len(FEATURES) for stacks of crops and their ELA images (memory maps are read in blocks)."""
    square = rgbs.ndim == 4 and rgbs.shape[1] == rgbs.shape[2] and rgbs.shape[3] == 3
    if not square or rgbs.shape[:3] != elas.shape[:3] or elas.ndim != 4 or elas.shape[3] % 3:
        raise ValueError(
            f"need matching N x S x S x 3 stacks (3k for ELA), got {rgbs.shape} and {elas.shape}"
        )
    mask = centre_mask(rgbs.shape[1])
    out = np.empty((len(rgbs), len(FEATURES)))
    for start in range(0, len(rgbs), CHUNK):
        rgb_block = np.asarray(rgbs[start : start + CHUNK])
        ela_block = np.asarray(elas[start : start + CHUNK])
        for i, (rgb, ela) in enumerate(zip(rgb_block, ela_block, strict=True)):
            out[start + i] = crop_features(rgb, ela, mask)
    return out


def fit(x: np.ndarray, labels: np.ndarray) -> Pipeline:
    """Standardised features, then an L2 logistic regression (lbfgs: deterministic)."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(np.unique(labels)) < 2:
        raise ValueError("the baseline needs both classes in its training crops")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return model.fit(x, labels)


def p_fake(model: Pipeline, x: np.ndarray) -> np.ndarray:
    """The baseline's probability that each crop is fake."""
    return model.predict_proba(x)[:, list(model.classes_).index(1)]


def coefficients(model: Pipeline) -> dict[str, float]:
    """The logistic regression's weight per standardised feature, and its intercept."""
    regression = model[-1]
    weights = {name: round(float(w), 4) for name, w in zip(FEATURES, regression.coef_[0], strict=True)}
    return {**weights, "intercept": round(float(regression.intercept_[0]), 4)}
