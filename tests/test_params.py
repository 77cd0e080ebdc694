from pathlib import Path

import pytest
import yaml

from faceswap_ela import params as P

ROOT = Path(__file__).resolve().parents[1]


def test_repo_params_are_valid_and_complete():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = P.parse(raw)
    # every key in params.yaml is one the schema knows (unknown keys would have raised)
    assert p.ela.quality != 90, "the default must differ from the common choice so -S ela.quality=90 differs"
    assert p.split.test_fraction == pytest.approx(0.2)
    assert set(raw) == set(P.Params.model_fields)
    assert {key for key, _ in P.leaves(raw)} == set(P.flatten(p)), "params.yaml lists every parameter"


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"ela": {"quality": 101}}, "ela.quality"),
        ({"ela": {"qualty": 90}}, "ela.qualty"),
        ({"landmarks": {"multiple_faces": "all"}}, "landmarks.multiple_faces"),
        ({"fakes": {"blur_kernel": 4}}, "fakes.blur_kernel"),
        ({"fakes": {"scales": [127, 64]}}, "fakes.scales"),
        ({"fakes": {"blend": {"ratio": [0.75, 0.25]}}}, "fakes.blend.ratio"),
        ({"fakes": {"blend": {"ratio": [0.25, 1.5]}}}, "fakes.blend.ratio"),
        ({"fakes": {"blend": {"blur": 0.1}}}, "fakes.blend.blur"),
        ({"fakes": {"blend": {"hull": "jaw"}}}, "fakes.blend.hull"),
        ({"fakes": {"blend": {"scale": [0, 1]}}}, "fakes.blend.scale"),
        ({"fakes": {"blend": {"full_blend": True}}}, "fakes.blend.full_blend"),
        ({"fakes": {"blend": {"rgb_shift": -1}}}, "fakes.blend.rgb_shift"),
        ({"fakes": {"blend": {"bogus": 1}}}, "fakes.blend.bogus"),
        ({"fakes": {"swap": {"feather": [0.1, 0.03]}}}, "fakes.swap.feather"),
        ({"fakes": {"swap": {"intersect": "yes"}}}, "fakes.swap.intersect"),
        ({"fakes": {"swap": {"hul": "all"}}}, "fakes.swap.hul"),
        ({"split": {"test_fraction": 1.5}}, "split.test_fraction"),
        ({"data": {"checksums": {"muct-a-jpg-v1.tar.gz": "abc"}}}, "data.checksums"),
        ({"data": {"group_pattern": "no-groups"}}, "data.group_pattern"),
        ({"augment": {"brightness": [1.2, 0.8]}}, "augment.brightness"),
        ({"tracking": {"model_name": "team/cnn"}}, "tracking.model_name"),
        ({"tracking": {"model_name": ""}}, "tracking.model_name"),
        ({"tracking": {"model_name": "cnn@prod"}}, "tracking.model_name"),
        ({"tracking": {"register": "yes"}}, "tracking.register"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_values_name_the_key(patch, key):
    with pytest.raises(P.ParamsError) as info:
        P.parse(patch)
    assert key in str(info.value)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(P.ParamsError, match="not found"):
        P.load(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ela: [1, 2\n")
    with pytest.raises(P.ParamsError, match="not valid YAML"):
        P.load(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(P.ParamsError, match="mapping"):
        P.load(bad)


def test_flatten_and_digest():
    p = P.parse({})
    flat = P.flatten(p)
    assert flat["ela.quality"] == p.ela.quality
    assert flat["fakes.scales"] == "[64, 127]"
    assert flat["fakes.blend.ratio"] == "[0.25, 0.75]" and flat["fakes.swap.hull"] == "inner"
    assert flat["data.checksums"] == "{}"
    assert P.digest(p) == P.digest(P.parse({}))
    assert P.digest(p) != P.digest(P.parse({"ela": {"quality": 90}}))


def test_repo_root_prefers_dvc_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert P.repo_root() == tmp_path.resolve()
    monkeypatch.delenv("DVC_ROOT")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert P.repo_root() == tmp_path.resolve()


def test_yaml_as_dvc_rewrites_it(tmp_path):
    # `dvc exp run -S` writes YAML 1.2 without quotes: 4:2:0 must not become a base-60 integer
    path = tmp_path / "params.yaml"
    path.write_text("ela:\n  subsampling: 4:2:0\n  quality: 90\n  gain: 1.0e+1\nseed: 0x10\n")
    p = P.load(path)
    assert p.ela.subsampling == "4:2:0" and p.ela.quality == 90 and p.ela.gain == 10.0 and p.seed == 16


def test_yaml_1_1_booleans_are_strings_and_control_characters_are_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("tracking:\n  register: yes\n")  # YAML 1.2, as DVC reads it: "yes" is a string
    with pytest.raises(P.ParamsError, match="tracking.register"):
        P.load(path)
    path.write_bytes(b"seed: 1\x00\n")
    with pytest.raises(P.ParamsError, match="not valid YAML: unacceptable character") as info:
        P.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
