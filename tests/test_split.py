import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faceswap_ela import split as S

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "stages" / "split.py"


def photos(group_sizes: dict[str, int]) -> pd.DataFrame:
    rows = [(f"{g}_{k}", g) for g, n in group_sizes.items() for k in range(n)]
    return pd.DataFrame(rows, columns=["id", "group"])


def muct_like(subjects: int = 60, seed: int = 0) -> pd.DataFrame:
    sizes = np.random.default_rng(seed).integers(8, 16, subjects)
    return photos({f"{s:03d}": int(n) for s, n in enumerate(sizes)})


def test_groups_never_on_both_sides_and_ratio_is_nearest_reachable():
    table, metrics = S.split(muct_like(), 0.2, seed=42)
    sides = table.groupby("group")["split"].nunique()
    assert (sides == 1).all()
    n, n_test = len(table), int((table["split"] == "test").sum())
    # groups of 8-15 photos: some subset hits round(0.2 n) exactly or within one photo
    assert abs(n_test - 0.2 * n) <= 1
    assert metrics["photos"] == {"train": n - n_test, "test": n_test, "total": n}
    assert metrics["groups"]["train"] + metrics["groups"]["test"] == 60
    assert metrics["groups"]["test"] == table.loc[table["split"] == "test", "group"].nunique()
    assert metrics["test_fraction"] == pytest.approx(n_test / n, abs=1e-6)
    assert list(table["id"]) == sorted(table["id"])
    assert list(table.columns) == ["id", "group", "split"]


def test_uneven_groups_get_the_closest_count():
    # 10 photos, 20% = 2: only a group of 3 or the pair 3+4 or 5 can go -> 3 is nearest
    table, _ = S.split(photos({"a": 3, "b": 4, "c": 3}), 0.2, seed=1)
    assert (table["split"] == "test").sum() == 3
    # one big group and singles: 0.5 of 12 = 6 is reachable only with the six singles
    table, _ = S.split(photos({"big": 6, **{f"s{i}": 1 for i in range(6)}}), 0.5, seed=3)
    assert (table["split"] == "test").sum() == 6


def test_test_groups_are_a_random_subset_by_seed():
    sizes = {f"g{i:02d}": 1 for i in range(50)}
    a = S.choose_test_groups(sizes, 0.2, seed=1)
    b = S.choose_test_groups(sizes, 0.2, seed=1)
    c = S.choose_test_groups(sizes, 0.2, seed=2)
    assert a == b and len(a) == 10 and a != c
    assert a != {f"g{i:02d}" for i in range(10)}  # not simply the first groups by name


def test_too_few_groups_or_bad_input_is_an_error():
    with pytest.raises(S.SplitError, match="at least 2 groups"):
        S.split(photos({"only": 5}), 0.2, seed=0)
    with pytest.raises(S.SplitError, match="no photos"):
        S.split(photos({}), 0.2, seed=0)
    with pytest.raises(S.SplitError, match="duplicate"):
        S.split(pd.DataFrame({"id": ["x", "x"], "group": ["a", "b"]}), 0.2, seed=0)
    with pytest.raises(S.SplitError, match="test_fraction"):
        S.choose_test_groups({"a": 1, "b": 1}, 1.5, seed=0)


def run_stage(folder: Path, params: str) -> subprocess.CompletedProcess:
    (folder / "params.yaml").write_text(params)
    command = [sys.executable, str(STAGE)]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)


def write_landmarks(folder: Path) -> pd.DataFrame:
    table = muct_like(subjects=40, seed=5)
    table["path"] = "jpg/" + table["id"] + ".jpg"
    (folder / "data").mkdir(parents=True)
    table.sample(frac=1.0, random_state=0).to_csv(folder / "data" / "landmarks.csv", index=False)
    return table


def test_stage_is_deterministic_by_seed(tmp_path):
    table = write_landmarks(tmp_path)
    outputs = []
    for seed in (7, 7, 8):
        result = run_stage(tmp_path, f"seed: {seed}\nsplit:\n  test_fraction: 0.25\n")
        assert result.returncode == 0, result.stderr
        outputs.append((tmp_path / "data" / "split.csv").read_bytes())
    assert outputs[0] == outputs[1] and outputs[0] != outputs[2]
    written = pd.read_csv(tmp_path / "data" / "split.csv", dtype=str)
    assert sorted(written["id"]) == sorted(table["id"])
    assert written["group"].str.len().eq(3).all()  # "007" stays text, not 7
    metrics = json.loads((tmp_path / "metrics" / "split.json").read_text())
    assert metrics["test_fraction_target"] == 0.25
    assert abs(metrics["test_fraction"] - 0.25) < 0.01


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ("split:\n  test_fraction: 1.5\n", "split.test_fraction"),
        ("split:\n  test_fractoin: 0.2\n", "split.test_fractoin"),
        ("seed: -1\n", "seed"),
    ],
)
def test_stage_rejects_bad_params_naming_the_key(tmp_path, params, key):
    write_landmarks(tmp_path)
    result = run_stage(tmp_path, params)
    assert result.returncode != 0
    assert key in result.stderr
    assert not (tmp_path / "data" / "split.csv").exists()


def test_stage_without_landmarks_fails_clearly(tmp_path):
    result = run_stage(tmp_path, "seed: 1\n")
    assert result.returncode == 1
    assert "landmarks.csv not found" in result.stderr
    assert "Traceback" not in result.stderr
