"""Shared fixtures. The builders themselves live in tests/helpers/."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.mlflow_server import running
from tests.helpers.sample_data import (
    build_muct_archives,
    dlib_shapes,
    portrait,
    write_muct_landmarks_csv,
    write_muct_photos,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


@dataclass(frozen=True)
class MuctMirror:
    """A small MUCT-layout dataset: photos/jpg/*.jpg, its landmark CSV and a folder of archives."""

    photos: list[Path]
    csv: Path
    mirror: Path
    archives: dict[str, Path]


@pytest.fixture(scope="session")
def muct_mirror(tmp_path_factory) -> MuctMirror:
    """4 subjects x 3 photos, built once per test run (read-only: copy before changing)."""
    base = tmp_path_factory.mktemp("muct")
    photos = write_muct_photos(base / "photos", subjects=4, per_subject=3)
    csv = write_muct_landmarks_csv(base / "photos" / "muct76-opencv.csv", photos)
    archives = build_muct_archives(base / "photos", base / "mirror")
    return MuctMirror(photos, csv, base / "mirror", archives)


@pytest.fixture
def shared_datasets() -> Path:
    """../shared/datasets beside the repo, or skip."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} is missing (the shared development datasets)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def portraits() -> list[tuple[np.ndarray, np.ndarray]]:
    """The two public-domain portraits with their dlib 68-point landmarks (HOG detector)."""
    out = []
    for name in ("astronaut", "grace_hopper"):
        rgb = portrait(name)
        shapes = dlib_shapes(rgb)
        assert len(shapes) == 1
        out.append((rgb, np.asarray(shapes[0], dtype=np.float64)))
    return out


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """A tiny DVC pipeline repo after `dvc repro` (tests/helpers/tiny_pipeline.py), built once per
    session: read-only, `tiny_pipeline.copy_repo` it before changing anything."""
    from tests.helpers import tiny_pipeline

    return tiny_pipeline.build(tmp_path_factory.mktemp("tiny") / "repo")


@pytest.fixture
def server(tmp_path) -> Iterator[str]:
    """`mlflow server` as `make server` runs it (sqlite store, proxied artifacts), for one test."""
    with running(
        tmp_path,
        "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow-server.db'}",
        "--serve-artifacts", "--artifacts-destination", str(tmp_path / "mlartifacts-server"),
    ) as url:  # fmt: skip
        yield url
