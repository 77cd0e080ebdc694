"""Stage `landmarks`: data/raw/manifest.csv -> data/landmarks.csv (68 dlib landmarks per photo),
data/landmark_rejects.csv (id, group, path, reason) and metrics/landmarks.json. See
faceswap_ela.landmarks."""

import json
import logging
import sys
from pathlib import Path

from faceswap_ela import landmarks as L
from faceswap_ela import params as P
from faceswap_ela import stage
from faceswap_ela.outputs import atomic_outputs

RAW = Path("data/raw")
LANDMARKS = Path("data/landmarks.csv")
REJECTS = Path("data/landmark_rejects.csv")
METRICS = Path("metrics/landmarks.json")


def run(p: P.Params) -> None:
    lp = p.landmarks
    L.predictor_path()
    manifest = L.read_manifest(RAW / "manifest.csv")
    located = L.locate(
        manifest,
        RAW,
        upsample=lp.upsample,
        max_side=lp.max_side,
        multiple_faces=lp.multiple_faces,
        retry_full_size=lp.retry_full_size,
        workers=lp.workers,
    )
    with atomic_outputs(LANDMARKS, REJECTS, METRICS) as (landmarks_tmp, rejects_tmp, metrics_tmp):
        located.landmarks.to_csv(landmarks_tmp, index=False, lineterminator="\n")
        located.rejects.to_csv(rejects_tmp, index=False, lineterminator="\n")
        metrics_tmp.write_text(json.dumps(located.metrics, indent=2, sort_keys=True) + "\n")
    m = located.metrics
    logging.info(
        "%d of %d photos with landmarks (%d no face, %d several faces, %d unreadable), %.1f photos/s",
        m["ok"],
        m["photos"],
        m["no_face"],
        m["multiple_faces"],
        m["unreadable"],
        m["photos_per_s"] or 0.0,
    )
    for key in ("nme_ibug68", "nme_muct76"):
        if key in m and m[key]["n"]:
            s = m[key]
            logging.info("%s: median %.4f, p90 %.4f over %d photos", key, s["median"], s["p90"], s["n"])


if __name__ == "__main__":
    sys.exit(stage.main(run, expected=(L.LandmarkError,)))
