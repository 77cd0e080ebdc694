"""Training-crop augmentation (§3.1): shape changes (rotation, scaling, flipping, translation)
and colour jitter (brightness, contrast, colour, sharpness with PIL's enhancers, as Li & Lyu).

Every value is drawn in a fixed order whatever is switched off, so turning one augmentation
off leaves the draws of the others unchanged; a switched-off one gets its neutral value.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageEnhance

from faceswap_ela.params import AugmentParams

_ENHANCERS = {
    "brightness": ImageEnhance.Brightness,
    "contrast": ImageEnhance.Contrast,
    "color": ImageEnhance.Color,
    "sharpness": ImageEnhance.Sharpness,
}


def draw(rng: np.random.Generator, params: AugmentParams) -> dict[str, float | bool]:
    """Draw one crop's augmentation: rotation (degrees), scale, flip, tx and ty (fractions of
    the crop), and the four enhancer factors."""
    u = rng.random(9)
    values: dict[str, float | bool] = {
        "rotation": (2 * u[0] - 1) * params.rotation,
        "scale": 1.0 + (2 * u[1] - 1) * params.scaling,
        "flip": bool(params.flip and u[2] < 0.5),
        "tx": (2 * u[3] - 1) * params.translation,
        "ty": (2 * u[4] - 1) * params.translation,
    }
    for i, name in enumerate(_ENHANCERS):
        low, high = getattr(params, name)
        values[name] = low + u[5 + i] * (high - low)
    return {k: v if isinstance(v, bool) else round(float(v), 6) for k, v in values.items()}


GEOMETRIC = ("rotation", "scale", "flip", "tx", "ty")


def geometric(values: dict[str, float | bool]) -> dict[str, float | bool]:
    """Only the shape changes of drawn values (for an ELA map: the colour jitter is the crop's)."""
    return {k: v for k, v in values.items() if k in GEOMETRIC}


def apply(rgb: np.ndarray, values: dict[str, float | bool]) -> np.ndarray:
    """Apply drawn values to an RGB crop (same size out). The geometric part is one affine
    warp about the centre with a reflected border; it is skipped when it is the identity."""
    out = np.ascontiguousarray(rgb[:, ::-1]) if values.get("flip") else rgb
    height, width = out.shape[:2]
    angle, scale = float(values.get("rotation", 0.0)), float(values.get("scale", 1.0))
    tx, ty = float(values.get("tx", 0.0)) * width, float(values.get("ty", 0.0)) * height
    if angle or scale != 1.0 or tx or ty:
        matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, scale)
        matrix[:, 2] += (tx, ty)
        out = cv2.warpAffine(
            out, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
    factors = [(name, float(values.get(name, 1.0))) for name in _ENHANCERS]
    if any(f != 1.0 for _, f in factors):
        image = Image.fromarray(np.ascontiguousarray(out))
        for name, factor in factors:
            if factor != 1.0:
                image = _ENHANCERS[name](image).enhance(factor)
        out = np.asarray(image)
    return np.ascontiguousarray(out, dtype=np.uint8)


def augment(
    rgb: np.ndarray, rng: np.random.Generator, params: AugmentParams
) -> tuple[np.ndarray, dict[str, float | bool]]:
    """Draw and apply; returns the crop and the drawn values."""
    values = draw(rng, params)
    return apply(rgb, values), values
