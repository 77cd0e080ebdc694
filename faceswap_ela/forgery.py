"""Simulated DeepFake fakes (§3.1, Fig. 3) and the renderings of one photo.

A fake follows Li & Lyu's face-warping code: the face is aligned to the unit-square template by
a similarity transform fitted to landmarks 17-67, warped into a square of a random size, blurred
with a Gaussian, warped back with the inverse transform over the original
(WARP_INVERSE_MAP | BORDER_TRANSPARENT) and kept either as the whole square or only inside the
convex hull of the brows and lower lip, with an optional feathered edge.

Each photo gives ``variants`` renderings. Which ones become fakes is drawn once per photo:
round(fraction * variants) of them (the fractional part decided by a seeded coin), at seeded
positions. So each photo contributes both classes in the paper's half/half ratio (with 4
variants: exactly 2 real + 2 fake), the classes are balanced within every split and group, and
the network can't tell the class from who is in the photo.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from faceswap_ela import augment, ela, roi, seeding
from faceswap_ela.alignment import BROWS_AND_LOWER_LIP, INNER, check_landmarks, umeyama
from faceswap_ela.images import ImageError, load_rgb, save_png
from faceswap_ela.params import AugmentParams, ExtraSetsParams, FakeParams, RoiParams

MASKS = ("square", "hull")
SAMPLE_SIDE = 320  # long side of the preview photos kept for the gallery
RESAMPLE_SIGMA = 0.5  # about the blur of one bilinear resampling, in pixels of the finer grid
MATCHED = "test_matched"


def jpeg_set(quality: int) -> str:
    return f"test_jpeg{quality}"


def derived_sets(sets: ExtraSetsParams) -> list[str]:
    """The extra renderings of the test split, in output order."""
    return ([MATCHED] if sets.matched_blur else []) + [jpeg_set(q) for q in sets.jpeg_qualities]


def aligned_matrix(landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """2x3 similarity from image pixels to a size x size aligned face (template scaled by size)."""
    return umeyama(np.asarray(landmarks, dtype=np.float64)[INNER], template) * float(size)


def gaussian_sigma(ksize: int) -> float:
    """The sigma OpenCV's GaussianBlur uses for a ksize x ksize kernel given sigma 0."""
    return 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8


def matched_sigma(landmarks: np.ndarray, template: np.ndarray, size: int, blur_kernel: int) -> float:
    """The softness a fake of this rendering carries, as a Gaussian sigma in photo pixels: the
    fake's blur (OpenCV's sigma for ``blur_kernel``) and one bilinear resampling, both in the
    aligned face of ``size`` pixels, carried into the photo by the alignment's scale."""
    matrix = aligned_matrix(landmarks, template, size)
    photo_per_aligned = 1.0 / math.hypot(matrix[0, 0], matrix[0, 1])
    return math.hypot(gaussian_sigma(blur_kernel), RESAMPLE_SIGMA) * photo_per_aligned


def _feathered(mask: np.ndarray, feather: int) -> np.ndarray:
    """Blend weights: the mask blurred over ``feather`` pixels, zero outside its dilation."""
    ksize = 2 * feather + 1
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (ksize, ksize), 0)
    grown = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ksize, ksize)))
    alpha[grown == 0] = 0.0
    return alpha


def _composite(rgb: np.ndarray, replacement: np.ndarray, region: np.ndarray, feather: int) -> np.ndarray:
    """``replacement`` inside ``region`` (its edge feathered over ``feather`` pixels), ``rgb`` elsewhere."""
    if feather > 0:
        alpha = _feathered(region, feather)[..., None]
        base = rgb.astype(np.float32)
        out = np.rint(base + alpha * (replacement.astype(np.float32) - base)).astype(np.uint8)
    else:
        out = np.where(region[..., None], replacement, rgb)
    return np.ascontiguousarray(out)


def _masked(region: np.ndarray, landmarks: np.ndarray, mask: str) -> np.ndarray:
    """``region`` limited to the brows and lower-lip hull for mask 'hull', as it is for 'square'."""
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, not {mask!r}")
    if mask == "hull":
        points = np.asarray(landmarks, dtype=np.float64)[list(BROWS_AND_LOWER_LIP)]
        hull = cv2.convexHull(np.round(points).astype(np.int32))
        inside = np.zeros(region.shape, np.uint8)
        cv2.fillConvexPoly(inside, hull, 1)
        region = region & (inside > 0)
    return region


def _covered(matrix: np.ndarray, size: int, shape: tuple[int, ...]) -> np.ndarray:
    """The photo pixels the inverse warp of a size x size aligned face writes (edge pixels are a
    blend, so they count too)."""
    height, width = shape[:2]
    covered = cv2.warpAffine(
        np.full((size, size), 255, np.uint8),
        matrix,
        (width, height),
        dst=np.zeros((height, width), np.uint8),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_TRANSPARENT,
    )
    return covered > 0


def fake_region(
    shape: tuple[int, ...], landmarks: np.ndarray, template: np.ndarray, *, size: int, mask: str = "square"
) -> np.ndarray:
    """The boolean mask of the pixels a fake of this rendering replaces (before feathering)."""
    return _masked(_covered(aligned_matrix(landmarks, template, size), size, shape), landmarks, mask)


def make_fake(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    template: np.ndarray,
    *,
    size: int,
    blur_kernel: int = 5,
    mask: str = "square",
    feather: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A fake of ``rgb`` and the boolean mask of the replaced pixels (before feathering).

    Pixels outside the mask dilated by ``feather`` are the original's, bit for bit."""
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, not {mask!r}")
    height, width = rgb.shape[:2]
    matrix = aligned_matrix(landmarks, template, size)
    face = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    face = cv2.GaussianBlur(face, (blur_kernel, blur_kernel), 0)
    back_flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(
        face, matrix, (width, height), dst=rgb.copy(), flags=back_flags, borderMode=cv2.BORDER_TRANSPARENT
    )
    region = _masked(_covered(matrix, size, rgb.shape), landmarks, mask)
    return _composite(rgb, warped, region, feather), region


def blur_region(rgb: np.ndarray, region: np.ndarray, sigma: float, feather: int = 0) -> np.ndarray:
    """``rgb`` with a Gaussian blur of ``sigma`` pixels inside ``region`` (its edge feathered as a
    fake's): a real photo made as soft as a fake, where a fake is soft, but without the warp. Only
    the region's box grown by the kernel's reach is filtered: the same pixels as filtering it all."""
    if sigma <= 0 or not region.any():
        return rgb.copy()
    ys, xs = np.nonzero(region)
    reach = math.ceil(4 * sigma) + feather + 1  # OpenCV's uint8 kernel reaches 3 sigma
    height, width = rgb.shape[:2]
    y1, y2 = max(0, int(ys.min()) - reach), min(height, int(ys.max()) + 1 + reach)
    x1, x2 = max(0, int(xs.min()) - reach), min(width, int(xs.max()) + 1 + reach)
    soft = rgb.copy()
    soft[y1:y2, x1:x2] = cv2.GaussianBlur(rgb[y1:y2, x1:x2], (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    return _composite(rgb, soft, region, feather)


def assign_labels(seed: int, photo_id: str, variants: int, fraction: float) -> list[int]:
    """Which of a photo's renderings are fakes (1) and which stay real (0); see the module doc."""
    rng = seeding.rng(seed, "materialize", photo_id, "labels")
    exact = fraction * variants
    n_fakes = math.floor(exact) + int(rng.random() < exact - math.floor(exact))
    labels = np.zeros(variants, dtype=int)
    labels[rng.permutation(variants)[:n_fakes]] = 1
    return [int(v) for v in labels]


def crop_id(photo_id: str, variant: int) -> str:
    return f"{photo_id}__v{variant}"


@dataclass(frozen=True)
class RenderConfig:
    """What every rendering worker needs (set once per worker by ``init_render``)."""

    seed: int
    fakes: FakeParams
    roi: RoiParams
    augment: AugmentParams
    template: np.ndarray
    raw_dir: str
    out_dir: str
    samples: frozenset[str] = field(default_factory=frozenset)
    sets: ExtraSetsParams = field(default_factory=ExtraSetsParams)


@dataclass(frozen=True)
class PhotoTask:
    photo_id: str
    group: str
    split: str
    path: str  # relative to raw_dir
    landmarks: np.ndarray | None
    labels: tuple[int, ...]


_CONFIG: RenderConfig | None = None


def init_render(config: RenderConfig) -> None:
    """Pool initializer: keep the shared configuration in the worker."""
    global _CONFIG
    _CONFIG = config


def draw_rendering(
    rng: np.random.Generator, landmarks: np.ndarray, shape: tuple[int, ...], config: RenderConfig
) -> tuple[int, str, tuple[int, int, int, int], dict]:
    """Everything random about one rendering, drawn in the same order for reals and fakes:
    (aligned face size, mask mode, ROI box, augmentation values)."""
    fakes = config.fakes
    size = int(rng.integers(fakes.scales[0], fakes.scales[1] + 1))
    mask_u = rng.random()
    mask = fakes.mask if fakes.mask != "random" else ("hull" if mask_u < 0.5 else "square")
    box = roi.roi_box(landmarks, shape, rng, dx_max=config.roi.dx_max, dy_max=config.roi.dy_max)
    values = augment.draw(rng, config.augment)
    return size, mask, box, values


def render_photo(task: PhotoTask) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """Render, crop, augment (train only), resize and save every variant of one photo.

    A test crop also gets its extra renderings (``derived_sets``): the sharpness-matched one (a real
    photo blurred by ``matched_sigma`` inside the region a fake of the same rendering would replace,
    with the same mask and feather; a fake unchanged) and one per JPEG quality (the rendered photo
    re-saved as JPEG, then cut by the same ROI). With ``augment.real_blur`` that share of the real
    train renderings, drawn per rendering, gets the matched blur too.

    Returns the index rows (one per variant, 'skipped' with a reason when something about the
    photo or crop is unusable, then one per extra rendering of an ok test crop) and the preview
    images of the variants named in config.samples."""
    config = _CONFIG
    if config is None:
        raise RuntimeError("init_render was not called")
    rows, extra_rows = [], []
    samples: dict[str, dict[str, np.ndarray]] = {}
    rgb, reason = None, check_landmarks(task.landmarks)  # before reading: no landmarks, NaN, ...
    if reason is None:
        try:
            rgb = load_rgb(Path(config.raw_dir) / task.path)
        except ImageError as exc:
            reason = f"unreadable image: {exc}"
    if rgb is not None:
        reason = check_landmarks(task.landmarks, rgb.shape)
    for variant, label in enumerate(task.labels):
        name = crop_id(task.photo_id, variant)
        row: dict = {
            "crop_id": name, "photo_id": task.photo_id, "group": task.group, "split": task.split,
            "label": label, "variant": variant, "status": "skipped", "reason": reason or "", "path": "",
            "scale": None, "mask": "", "roi_x1": None, "roi_y1": None, "roi_x2": None, "roi_y2": None,
            "augment": "", "blur_sigma": None,
        }  # fmt: skip
        rows.append(row)
        if reason is not None:
            continue
        rng = seeding.rng(config.seed, "materialize", task.photo_id, variant)
        size, mask, box, values = draw_rendering(rng, task.landmarks, rgb.shape, config)
        row.update(roi_x1=box[0], roi_y1=box[1], roi_x2=box[2], roi_y2=box[3])
        try:
            rendered = rgb
            if label == 1:
                rendered, _ = make_fake(
                    rgb, task.landmarks, config.template, size=size, blur_kernel=config.fakes.blur_kernel,
                    mask=mask, feather=config.fakes.feather,
                )  # fmt: skip
                row.update(scale=size, mask=mask)
            soft, sigma = None, 0.0  # the real photo as soft as a fake of this rendering, where it is soft
            if label == 0 and _wants_soft(task, variant, config):
                sigma = matched_sigma(task.landmarks, config.template, size, config.fakes.blur_kernel)
                region = fake_region(rgb.shape, task.landmarks, config.template, size=size, mask=mask)
                soft = blur_region(rgb, region, sigma, config.fakes.feather)
            if task.split == "train" and soft is not None:
                rendered = soft
                row.update(scale=size, mask=mask, blur_sigma=round(sigma, 4))
            piece = roi.crop(rendered, box)
            if piece is None:
                row["reason"] = f"empty crop: ROI {box[2] - box[0] + 1}x{box[3] - box[1] + 1} px"
                continue
            extras: dict[str, np.ndarray] = {}
            if task.split == "train":
                piece = augment.apply(piece, values)
                row["augment"] = augment_json(values)
            else:
                row["augment"] = "{}"
                extras = _extra_renderings(rendered, soft, box, config)
            piece = roi.resize(piece, config.roi.size)
        except (cv2.error, ValueError, np.linalg.LinAlgError) as exc:
            row["reason"] = f"render failed: {exc}".replace("\n", " ")[:200]
            continue
        relative = f"{task.split}/{name}.png"
        save_png(os.path.join(config.out_dir, relative), piece)
        row.update(status="ok", reason="", path=relative)
        for set_name, image in extras.items():
            extra_path = f"{set_name}/{name}.png"
            save_png(os.path.join(config.out_dir, extra_path), image)
            extra = {**row, "split": set_name, "path": extra_path}
            if set_name == MATCHED and soft is not None:
                extra.update(scale=size, mask=mask, blur_sigma=round(sigma, 4))
            extra_rows.append(extra)
        if name in config.samples:
            samples[name] = {
                "original": roi.shrink(rgb, SAMPLE_SIDE),
                "rendered": roi.shrink(rendered, SAMPLE_SIDE),
                "crop": piece,
            }
    return rows + extra_rows, samples


def _wants_soft(task: PhotoTask, variant: int, config: RenderConfig) -> bool:
    """Whether a real rendering gets the matched blur: always for the test split's matched set, for
    a seeded ``augment.real_blur`` share of the train split (its own draw: the others are unchanged)."""
    if task.split != "train":
        return config.sets.matched_blur
    if config.augment.real_blur <= 0:
        return False
    return seeding.rng(config.seed, "materialize", task.photo_id, variant, "real_blur").random() < (
        config.augment.real_blur
    )


def _extra_renderings(
    rendered: np.ndarray, soft: np.ndarray | None, box: tuple[int, int, int, int], config: RenderConfig
) -> dict[str, np.ndarray]:
    """The extra renderings of one test crop, by set name (see ``derived_sets``): the matched one
    cut from ``soft`` (a real's matched blur; None for a fake, which stays as it is) and one per
    JPEG quality, cut from the rendered photo re-saved."""
    extras = {}
    if config.sets.matched_blur:
        extras[MATCHED] = roi.resize(roi.crop(rendered if soft is None else soft, box), config.roi.size)
    for quality in config.sets.jpeg_qualities:
        resaved = ela.jpeg_roundtrip(rendered, quality)
        extras[jpeg_set(quality)] = roi.resize(roi.crop(resaved, box), config.roi.size)
    return extras


def augment_json(values: dict) -> str:
    """The drawn augmentation values as compact, sorted JSON (the index's augment column)."""
    return json.dumps(values, sort_keys=True, separators=(",", ":"))
