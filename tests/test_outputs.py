import json

import pandas as pd
import pytest

from faceswap_ela import outputs


def test_atomic_file_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), outputs.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with outputs.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_outputs_all_or_nothing(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "dir"
    a.write_text("stale")
    with pytest.raises(ValueError), outputs.atomic_outputs(a, f"{b}/") as (ta, tb):
        ta.write_text("{}")
        (tb / "x").write_text("1")
        raise ValueError
    # stale outputs are gone too: a failed stage leaves nothing that looks current
    assert list(tmp_path.iterdir()) == []
    with outputs.atomic_outputs(a, f"{b}/") as (ta, tb):
        ta.write_text("{}")
        (tb / "x").write_text("1")
    assert a.read_text() == "{}" and (b / "x").read_text() == "1"


def test_json_and_csv_are_deterministic(tmp_path):
    outputs.write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1, 2], "b": 1}
    frame = pd.DataFrame({"id": ["x", "y"], "v": [1.5, 2.0]})
    outputs.write_csv(tmp_path / "t.csv", frame)
    first = (tmp_path / "t.csv").read_bytes()
    outputs.write_csv(tmp_path / "t.csv", frame)
    assert (tmp_path / "t.csv").read_bytes() == first == b"id,v\nx,1.5\ny,2.0\n"
