"""Stage `download`: MUCT archives (or a mirror, or a local photo folder) -> data/raw/ and
metrics/download.json. See faceswap_ela.download."""

import logging
import sys

from faceswap_ela import download
from faceswap_ela import params as P


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        p = P.load("params.yaml")
    except P.ParamsError as exc:
        logging.error("%s", exc)
        return 2
    try:
        download.run(p.data, "data/raw", "metrics/download.json", root=P.repo_root())
    except download.DownloadError as exc:
        logging.error("download failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
