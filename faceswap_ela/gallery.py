"""A figure like the paper's Figure 8: original photos, their renderings, the ROI crops and the
crops' ELA images, one column per sample: for a few test photos, a real rendering and one fake
rendering by each forger of the test split (the same variant, so the same ROI).

The materialize stage keeps the samples in ``data/crops/samples/``: ``index.csv`` (set, crop_id,
photo_id, label, forger, donor; original, rendered, crop: file names relative to the folder) and
the PNGs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from faceswap_ela import ela
from faceswap_ela.images import load_rgb, save_png
from faceswap_ela.params import ElaParams

SAMPLE_COLUMNS = ["set", "crop_id", "photo_id", "label", "forger", "donor", "original", "rendered", "crop"]


def write_samples(folder: str | os.PathLike, samples: list[tuple[dict, dict[str, np.ndarray]]]) -> None:
    """Save (crop index row, images) pairs, images keyed original / rendered / crop, and their index."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for row, images in samples:
        record = {key: row[key] for key in ("crop_id", "photo_id", "forger", "donor")}
        record.update(set=row["split"], label=int(row["label"]))
        for kind in ("original", "rendered", "crop"):
            name = f"{row['split']}__{row['crop_id']}__{kind}.png"
            save_png(folder / name, images[kind])
            record[kind] = name
        records.append(record)
    frame = pd.DataFrame(records, columns=SAMPLE_COLUMNS)
    frame.to_csv(folder / "index.csv", index=False, lineterminator="\n")


def make_gallery(samples_dir: str | os.PathLike, out_png: str | os.PathLike, settings: ElaParams) -> int:
    """Draw the gallery from a samples folder into ``out_png``; returns the number of columns.
    The ELA row goes through ``ela.compute`` with the stage's settings (at several qualities, the
    first is shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples_dir = Path(samples_dir)
    index = samples_dir / "index.csv"
    if index.exists():
        frame = pd.read_csv(index, dtype=str, keep_default_na=False)
    else:
        frame = pd.DataFrame(columns=SAMPLE_COLUMNS)
    quality = settings.qualities[0] if settings.qualities else settings.quality
    ela_row = f"ELA (q={quality}, {settings.subsampling}, {settings.scale})"
    rows = ["original photo", "rendering", "ROI crop", ela_row]
    n = max(1, len(frame))
    fig, axes = plt.subplots(len(rows), n, figsize=(2.0 * n, 2.1 * len(rows)), squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if frame.empty:
        axes[0, 0].text(0.5, 0.5, "no samples", ha="center", va="center")
    for col, sample in enumerate(frame.itertuples(index=False)):
        crop = load_rgb(samples_dir / sample.crop)
        images = [
            load_rgb(samples_dir / sample.original),
            load_rgb(samples_dir / sample.rendered),
            crop,
            ela.compute(crop, settings)[..., :3],
        ]
        for row, image in enumerate(images):
            axes[row, col].imshow(image, interpolation="nearest")
        fake = int(sample.label) == 1
        title = f"fake: {sample.forger}\n{sample.crop_id}" if fake else f"real\n{sample.crop_id}"
        if sample.donor:
            title += f"\nface of {sample.donor}"
        axes[0, col].set_title(title, fontsize=7, color="C3" if fake else "C0")
    for row, label in enumerate(rows):
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(
        "A real and the fakes of each forger: renderings, ROI crops and their ELA images "
        "(cf. the paper's Figure 8)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out_png, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return len(frame)
