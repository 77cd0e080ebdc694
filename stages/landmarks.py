"""Stage `landmarks`: data/raw/manifest.csv -> data/landmarks.csv (68 dlib landmarks per photo),
data/landmark_rejects.csv (id, group, path, reason) and metrics/landmarks.json. See
faceswap_ela.landmarks."""

import logging
import sys

from faceswap_ela import landmarks as L
from faceswap_ela import layout, outputs, stage
from faceswap_ela import params as P


def run(p: P.Params) -> None:
    lp = p.landmarks
    L.predictor_path()
    manifest = L.read_manifest(layout.MANIFEST)
    located = L.locate(
        manifest,
        layout.RAW,
        upsample=lp.upsample,
        max_side=lp.max_side,
        multiple_faces=lp.multiple_faces,
        retry_full_size=lp.retry_full_size,
        workers=lp.workers,
    )
    outs = (layout.LANDMARKS, layout.LANDMARK_REJECTS, layout.LANDMARKS_METRICS)
    with outputs.atomic_outputs(*outs) as (landmarks_tmp, rejects_tmp, metrics_tmp):
        outputs.write_csv(landmarks_tmp, located.landmarks)
        outputs.write_csv(rejects_tmp, located.rejects)
        outputs.write_json(metrics_tmp, located.metrics)
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
