"""Stage `download`: MUCT archives (or a mirror, or a local photo folder) -> data/raw/ and
metrics/download.json. See faceswap_ela.download."""

import sys

from faceswap_ela import archives, download, layout, stage
from faceswap_ela import params as P


def run(p: P.Params) -> None:
    download.run(p.data, layout.RAW, layout.DOWNLOAD_METRICS, root=P.repo_root())


if __name__ == "__main__":
    sys.exit(stage.main(run, expected=(download.DownloadError, archives.ArchiveError)))
