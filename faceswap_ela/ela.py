"""Error level analysis (§3.2) and the streaming writer of the ELA tensors.

For an RGB image X: Y = decode(encode_jpeg(X, quality q, chroma subsampling)), D = |X - Y|, then
either the paper's stretch D * 255 / max(D) (max over every pixel and channel, 1 when D is all
zero) or a fixed gain, rounded and clipped to uint8. All in memory, no temporary files.

With ``ela.qualities`` [q1, ..., qk] the input is the ELA at each of those qualities (each as
above, at the fixed gain), stacked as channels: H x W x 3k, quality by quality, RGB within each.
A region saved before at another quality answers differently across them than its surround (the
JPEG ghosts of Farid 2009), which a single quality cannot show.

The JPEG round trip encodes with OpenCV (libjpeg-turbo, IMWRITE_JPEG_SAMPLING_FACTOR for the
subsampling) and decodes with simplejpeg (libjpeg-turbo's TurboJPEG API, straight into the colour
order asked for): the decoded pixels are those of Pillow's ``save(..., subsampling=)`` + open, which
is the reference. With simplejpeg's decoder the threaded ELA benchmark ran x5.9-6.1 the public
recipe, against x4.3 with OpenCV's (benchmarks/ela.py).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import simplejpeg

from faceswap_ela import augment, roi
from faceswap_ela.dataset import COLUMNS, DatasetError, create_tensor, tensor_path
from faceswap_ela.outputs import write_csv
from faceswap_ela.parallel import ordered_thread_map
from faceswap_ela.params import ElaParams

SUBSAMPLING = {
    "4:4:4": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    "4:2:2": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "4:2:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
}
PIL_SUBSAMPLING = {name: i for i, name in enumerate(SUBSAMPLING)}  # Image.save's subsampling=
SCALES = ("max", "fixed")
DEFAULTS = ElaParams()  # 4:2:0 (Pillow's default), max scaling, gain 20


def _check(quality: int, subsampling: str) -> list[int]:
    if subsampling not in SUBSAMPLING:
        raise ValueError(f"subsampling must be one of {sorted(SUBSAMPLING)}, not {subsampling!r}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, not {quality}")
    return [
        cv2.IMWRITE_JPEG_QUALITY,
        int(quality),
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        SUBSAMPLING[subsampling],
    ]


def _as_image(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"need an H x W x 3 uint8 image, got {rgb.dtype} {rgb.shape}")
    return rgb


def _to_bgr(rgb: np.ndarray) -> np.ndarray:
    # cvtColor, not a [..., ::-1] copy: numpy's reversed-stride copy costs more than the JPEG codec
    return cv2.cvtColor(_as_image(rgb), cv2.COLOR_RGB2BGR)


def jpeg_bytes(rgb: np.ndarray, quality: int, subsampling: str = DEFAULTS.subsampling) -> bytes:
    """An RGB uint8 image encoded as baseline JPEG at ``quality`` with explicit subsampling."""
    params = _check(quality, subsampling)
    ok, buffer = cv2.imencode(".jpg", _to_bgr(rgb), params)
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()


def _error_levels(rgb: np.ndarray, bgr: np.ndarray, params: list[int]) -> np.ndarray:
    """|X - decode(encode(X))| in RGB order, given X in both orders (OpenCV encodes BGR; the
    decoder writes RGB straight away, so no conversion follows)."""
    ok, buffer = cv2.imencode(".jpg", bgr, params)
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.absdiff(rgb, decode_jpeg(buffer, "RGB"))


def decode_jpeg(data: bytes | np.ndarray, colorspace: str = "RGB") -> np.ndarray:
    """A baseline JPEG decoded to uint8 ``colorspace`` (RGB or BGR) with the accurate integer DCT
    and fancy upsampling (libjpeg's defaults, as Pillow and OpenCV)."""
    return simplejpeg.decode_jpeg(data, colorspace=colorspace, fastdct=False, fastupsample=False)


def jpeg_roundtrip(rgb: np.ndarray, quality: int, subsampling: str = DEFAULTS.subsampling) -> np.ndarray:
    """The image after one in-memory JPEG save and load."""
    return decode_jpeg(jpeg_bytes(rgb, quality, subsampling), "RGB")


def error_levels(rgb: np.ndarray, quality: int, subsampling: str = DEFAULTS.subsampling) -> np.ndarray:
    """The raw ELA difference |X - decode(encode_jpeg(X))| of an RGB image, uint8, unscaled."""
    params = _check(quality, subsampling)
    return _error_levels(_as_image(rgb), _to_bgr(rgb), params)


@functools.lru_cache(maxsize=8)
def _tables(scale: str, gain: float) -> np.ndarray:
    """The 256 lookup tables of a scaling, one per peak difference (row = peak): level -> uint8."""
    levels = np.arange(256, dtype=np.float64)
    if scale == "max":
        factors = 255.0 / np.maximum(np.arange(256, dtype=np.float64), 1.0)  # peak 0 counts as 1
    elif scale == "fixed":
        factors = np.full(256, float(gain))
    else:
        raise ValueError(f"scale must be one of {SCALES}, not {scale!r}")
    tables = np.clip(np.rint(factors[:, None] * levels[None, :]), 0, 255).astype(np.uint8)
    tables.flags.writeable = False
    return tables


def _table(diff: np.ndarray, scale: str, gain: float) -> np.ndarray:
    """The lookup table for one difference image (its peak picks the row in ``max`` mode)."""
    if diff.size == 0:
        return _tables(scale, float(gain))[0]
    flat = diff.reshape(diff.shape[0], -1) if diff.ndim > 1 else diff.reshape(1, -1)
    peak = int(cv2.minMaxLoc(flat)[1]) if scale == "max" else 0
    return _tables(scale, float(gain))[peak]


def scale_levels(diff: np.ndarray, scale: str = DEFAULTS.scale, gain: float = DEFAULTS.gain) -> np.ndarray:
    """Stretch a raw difference to uint8: ``max`` multiplies by 255 / max (max over every pixel
    and channel, 1 when all zero), ``fixed`` by ``gain``; rounded to the nearest level, clipped
    to 255 (so the largest difference becomes exactly 255 in ``max`` mode)."""
    diff = np.asarray(diff, dtype=np.uint8)
    return cv2.LUT(diff, _table(diff, scale, gain)).reshape(diff.shape)


def qualities(settings: ElaParams) -> tuple[int, ...]:
    """The JPEG qualities of the ELA input: ``ela.qualities``, or ``ela.quality`` alone when empty."""
    return tuple(settings.qualities) or (settings.quality,)


def channels(settings: ElaParams) -> int:
    """The channels of the ELA input: 3 per quality."""
    return 3 * len(qualities(settings))


def compute(rgb: np.ndarray, settings: ElaParams) -> np.ndarray:
    """``ela_image`` with params.yaml's validated ``ela`` settings; with ``ela.qualities``, the ELA
    images at each quality stacked as channels (H x W x 3k)."""
    if not settings.qualities:
        return ela_image(rgb, settings.quality, settings.subsampling, settings.scale, settings.gain)
    return np.concatenate(
        [ela_image(rgb, q, settings.subsampling, settings.scale, settings.gain) for q in settings.qualities],
        axis=2,
    )


def photo_levels(rgb: np.ndarray, settings: ElaParams) -> np.ndarray:
    """The raw error levels of an RGB image at each of the settings' qualities, stacked as channels
    (H x W x 3k uint8, unscaled; ``error_levels`` itself for a single quality)."""
    levels = [error_levels(rgb, q, settings.subsampling) for q in qualities(settings)]
    return levels[0] if len(levels) == 1 else np.concatenate(levels, axis=2)


def ela_image(
    rgb: np.ndarray,
    quality: int,
    subsampling: str = DEFAULTS.subsampling,
    scale: str = DEFAULTS.scale,
    gain: float = DEFAULTS.gain,
) -> np.ndarray:
    """The ELA image of an RGB uint8 array (same shape, uint8), the settings given one by one."""
    return scale_levels(error_levels(rgb, quality, subsampling), scale, gain)


def read_crop_bgr(path: str | os.PathLike) -> np.ndarray:
    """A lossless crop (PNG) in OpenCV's BGR order; ValueError when it can't be read."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise ValueError(f"can't read crop {path}: {exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is not None and (image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8):
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # grey, alpha or 16-bit: convert
    if image is None:
        raise ValueError(f"can't read crop {path}")
    return image


def read_crop(path: str | os.PathLike) -> np.ndarray:
    """A lossless crop (PNG) as RGB uint8; ValueError when it can't be read."""
    return cv2.cvtColor(read_crop_bgr(path), cv2.COLOR_BGR2RGB)


def ela_arrays(paths: Sequence[str | os.PathLike], settings: ElaParams) -> tuple[np.ndarray, np.ndarray]:
    """(ELA stack, RGB stack) of crop files, uint8 N x H x W x 3 (3k with ``ela.qualities``) and
    N x H x W x 3, in RGB order: the values of ``compute`` on each crop."""
    params = [_check(q, settings.subsampling) for q in qualities(settings)]
    bgrs = [read_crop_bgr(path) for path in paths]
    if len({bgr.shape for bgr in bgrs}) > 1:
        raise ValueError(f"crops of different sizes, e.g. {paths[0]}")
    shape = (len(bgrs), *bgrs[0].shape) if bgrs else (0, 0, 0, 3)
    rgbs = np.empty(shape, np.uint8)
    elas = np.empty((*shape[:3], 3 * len(params)), np.uint8)
    for i, bgr in enumerate(bgrs):
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=rgbs[i])
        for j, param in enumerate(params):
            diff = _error_levels(rgbs[i], bgr, param)
            table = _table(diff, settings.scale, settings.gain)
            if len(params) == 1:
                cv2.LUT(diff, table, dst=elas[i])
            else:
                elas[i, ..., 3 * j : 3 * j + 3] = cv2.LUT(diff, table)
    return elas, rgbs


@dataclass(frozen=True)
class Piece:
    """ela.at: photo: where a crop's ELA comes from: ``path``, the rendered photo around the ROI
    on its JPEG grid; ``box``, the ROI inside it (inclusive); ``values``, the crop's augmentation,
    whose geometric part the ELA crop gets too."""

    path: str
    box: tuple[int, int, int, int]
    values: dict = field(default_factory=dict)


def roi_levels(
    diff: np.ndarray,
    box: tuple[int, int, int, int],
    size: int,
    settings: ElaParams,
    values: dict | None = None,
) -> np.ndarray | None:
    """The ELA crop of the ROI ``box`` from a photo's raw error levels ``diff`` (ela.at: photo):
    cut, resized to ``size`` (area averaging), given the geometric part of the augmentation
    ``values``, then scaled; None when the box is empty (see roi.crop). Levels at several
    qualities (H x W x 3k, ``photo_levels``) go through quality by quality."""
    if diff.ndim == 3 and diff.shape[2] > 3:
        parts = [
            roi_levels(diff[..., i : i + 3], box, size, settings, values) for i in range(0, diff.shape[2], 3)
        ]
        return None if parts[0] is None else np.concatenate(parts, axis=2)
    cut = roi.crop(diff, box)
    if cut is None:
        return None
    cut = augment.apply(roi.resize(cut, size), augment.geometric(values or {}))
    return scale_levels(cut, settings.scale, settings.gain)


def piece_levels(piece: Piece, size: int, settings: ElaParams) -> np.ndarray:
    """The ELA crop of a piece: the raw error levels of the photo at its own resolution and grid,
    through ``roi_levels`` with the ROI and the crop's augmentation."""
    diff = photo_levels(read_crop(piece.path), settings)
    levels = roi_levels(diff, piece.box, size, settings, piece.values)
    if levels is None:
        raise ValueError(f"ROI {piece.box} is empty in {piece.path}")
    return levels


def ela_task(task: tuple) -> int:
    """Worker: ELA of one chunk of crops, written straight into its rows of the output tensors
    (so memory stays flat whatever N); returns the number of rows written."""
    paths, pieces, first_row, targets, settings = task
    if pieces is None:
        elas, rgbs = ela_arrays(paths, settings)
    else:  # ela.at: photo: the ELA comes from the pieces, the crops give only the RGB
        rgbs = np.stack([read_crop(path) for path in paths])
    if rgbs.shape[1:] != (*targets[0].shape[1:3], 3):
        raise ValueError(f"crop {paths[0]} is {rgbs.shape[1:]}, expected {(*targets[0].shape[1:3], 3)}")
    if pieces is not None:
        elas = np.stack([piece_levels(piece, rgbs.shape[1], settings) for piece in pieces])
    for target, block in zip(targets, (elas, rgbs), strict=False):
        target[first_row : first_row + len(block)] = block
    return len(paths)


def write_tensors(
    paths: Sequence[str | os.PathLike],
    ela_path: str | os.PathLike,
    rgb_path: str | os.PathLike | None,
    settings: ElaParams,
    *,
    pieces: Sequence[Piece] | None = None,
    size: int | None = None,
    workers: int = 0,
    chunk: int = 64,
    desc: str | None = None,
) -> int:
    """ELA (and optionally the RGB crops) of every crop file, in order, as N x S x S x 3 uint8
    .npy files (the ELA N x S x S x 3k with ``ela.qualities``); with ``pieces`` (one per crop) the
    ELA comes from those instead (ela.at: photo).
    Chunks of crops are spread over ``workers`` threads, each writing its rows in place, so memory
    does not grow with N and the bytes do not depend on the number of workers. ``size`` is the
    crop side (read from the first crop when None). Returns N."""
    paths = [str(p) for p in paths]
    for quality in qualities(settings):
        _check(quality, settings.subsampling)
    if size is None:
        size = read_crop_bgr(paths[0]).shape[0] if paths else 0
    shapes = ((len(paths), size, size, channels(settings)), (len(paths), size, size, 3))
    targets = [
        create_tensor(path, shape)
        for path, shape in zip((ela_path, rgb_path), shapes, strict=True)
        if path is not None
    ]
    if pieces is not None and len(pieces) != len(paths):
        raise ValueError(f"{len(pieces)} pieces for {len(paths)} crops")
    tasks = [
        (paths[i : i + chunk], None if pieces is None else pieces[i : i + chunk], i, targets, settings)
        for i in range(0, len(paths), chunk)
    ]
    # OpenCV's codecs release the GIL: threads spread the chunks over the cores without the
    # start-up and pickling costs of processes, and OpenCV's own threads would only compete.
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        written = sum(ordered_thread_map(ela_task, tasks, workers=workers, desc=desc))
    finally:
        cv2.setNumThreads(threads)
        for target in targets:
            target.flush()
    if written != len(paths):
        raise ValueError(f"wrote {written} ELA rows, expected {len(paths)}")
    return written


def pieces_of(rows: pd.DataFrame, crops: str | os.PathLike) -> list[Piece]:
    """The pieces of index rows (ela.at: photo), with each ROI moved into its piece."""
    out = []
    for row in rows.itertuples(index=False):
        x0, y0 = int(row.piece_x1), int(row.piece_y1)
        box = (int(row.roi_x1) - x0, int(row.roi_y1) - y0, int(row.roi_x2) - x0, int(row.roi_y2) - y0)
        values = json.loads(row.augment) if isinstance(row.augment, str) and row.augment else {}
        out.append(Piece(str(Path(crops) / row.piece_path), box, values))
    return out


def write_sets(
    sets: Mapping[str, pd.DataFrame],
    crops: str | os.PathLike,
    folder: str | os.PathLike,
    settings: ElaParams,
    *,
    size: int,
    workers: int = 0,
) -> dict[str, int]:
    """For every set (name -> its index rows, crop paths relative to ``crops``), ``{set}_ela.npy``,
    ``{set}_rgb.npy`` (``write_tensors``) and ``{set}.csv`` (the rows' dataset.COLUMNS, in order,
    and ``pair`` for a set of pairs) in ``folder``. With ``settings.at`` photo the ELA comes from
    the rows' pieces. The crop side is the first crop's, ``size`` when there is none. Returns the
    number of crops per set; DatasetError when a crop or piece listed is missing or unreadable."""
    crops, folder = Path(crops), Path(folder)
    photo = settings.at == "photo"
    listed = [path for rows in sets.values() for path in rows["path"]]
    if photo:
        if any("piece_path" not in rows.columns for rows in sets.values()):
            raise DatasetError(
                "ela.at is photo but the crops have no pieces: run materialize with ela.at: photo"
            )
        listed += [path for rows in sets.values() for path in rows["piece_path"]]
    missing = sorted({str(crops / path) for path in listed if not path or not (crops / path).is_file()})
    if missing:
        raise DatasetError(f"{len(missing)} crops listed in the index are missing, e.g. {missing[0]}")
    try:
        side = read_crop(crops / listed[0]).shape[0] if listed else size
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    counts = {}
    for name, rows in sets.items():
        try:
            counts[name] = write_tensors(
                [crops / path for path in rows["path"]], tensor_path(folder, name, "ela"),
                tensor_path(folder, name, "rgb"), settings, pieces=pieces_of(rows, crops) if photo else None,
                size=side, workers=workers, desc=f"ela {name}",
            )  # fmt: skip
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
        paired = "pair" in rows.columns and bool((rows["pair"].fillna("") != "").any())
        write_csv(folder / f"{name}.csv", rows[[*COLUMNS, *(["pair"] if paired else [])]])
    return counts
