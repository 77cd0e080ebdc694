import difflib
import shutil
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from faceswap_ela import params as P

ROOT = Path(__file__).resolve().parents[1]


def _without_source(p: P.Params) -> P.Params:
    # `make repro SOURCE=...` leaves its data.source in the workspace's params.yaml
    return p.model_copy(update={"data": p.data.model_copy(update={"source": P.DataParams().source})})


def test_repo_params_are_valid_complete_and_the_schema_defaults():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = P.parse(raw)
    # every key in params.yaml is one the schema knows (unknown keys would have raised)
    assert p.ela.quality != 90, "the default must differ from the common choice so -S ela.quality=90 differs"
    assert p.split.test_fraction == pytest.approx(0.2)
    assert set(raw) == set(P.Params.model_fields)
    # every parameter but those left out for null (DVC's rewrite would blank a written null)
    listed = {key for key, value in P.flatten(p).items() if value is not None}
    assert {key for key, _ in P.leaves(raw)} == listed, "params.yaml lists every parameter"
    # tests start from the schema's defaults (tests/helpers/sample_data.default_params)
    assert _without_source(p) == P.Params()


def _set_param(tmp_path: Path, override: str) -> list[str]:
    """The lines `dvc exp run -S <override>` changes in params.yaml (DVC's own rewrite, ruamel's
    round trip), as a unified diff without its header."""
    copy = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", copy)
    apply_overrides(copy, [override])
    before, after = (ROOT / "params.yaml").read_text(), copy.read_text()
    return list(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0))[2:]


@pytest.mark.parametrize("folder", ["../shared/datasets/helen-train", "/some/folder"])
def test_dvc_set_param_changes_its_own_line_alone(folder, tmp_path):
    current = P.load(ROOT / "params.yaml").data.source  # `make repro SOURCE=...` may have set one
    diff = _set_param(tmp_path, f"data.source={folder}")
    assert diff[1:] == ([] if folder == current else [f"-  source: {current}", f"+  source: {folder}"])
    # and every YAML reader reads the result alike (PyYAML is YAML 1.1, the stages' ruamel 1.2)
    p = P.load(tmp_path / "params.yaml")
    assert p.data.source == folder and p.ela.subsampling == "4:2:0"
    assert P.parse(yaml.safe_load((tmp_path / "params.yaml").read_text())) == p


def test_dvc_set_param_of_a_list_changes_that_list_alone(tmp_path):
    seeds = list(P.load(ROOT / "params.yaml").train.seeds)
    new = max(seeds) + 1
    diff = _set_param(tmp_path, f"train.seeds=[{','.join(map(str, [*seeds, new]))}]")
    assert [line for line in diff if not line.startswith("@")] == [f"+  - {new}"], diff
    assert P.load(tmp_path / "params.yaml").train.seeds == (*seeds, new)


@pytest.mark.parametrize(
    ("value", "name"),
    [(444, "4:4:4"), (422, "4:2:2"), (420, "4:2:0"), ("4:4:4", "4:4:4"), ("4:2:0", "4:2:0")],
)
def test_subsampling_is_a_number_every_yaml_reader_reads_alike_or_the_old_name(value, name):
    # the old names stay valid: model cards written before hold them
    assert P.parse({"ela": {"subsampling": value}}).ela.subsampling == name


def test_subsampling_is_dumped_as_params_yaml_writes_it_and_old_cards_still_read():
    from faceswap_ela import card

    p = P.parse({"ela": {"subsampling": 444}})
    assert p.model_dump(mode="json")["ela"]["subsampling"] == 444 and P.flatten(p)["ela.subsampling"] == 444
    new = card.make(p, "ela", "warp", 0, "m", "float32")
    old = {**new, "ela": {**new["ela"], "subsampling": "4:4:4"}}  # a card written before
    for written in (new, old):
        assert card.ela_settings(card.check(written, "card.json")) == p.ela


@pytest.mark.parametrize(
    ("value", "message"),
    [(14520, "4:2:0 read as a base-60 number by a YAML 1.1 reader: write 420"), (421, "444, 422 or 420")],
)
def test_a_subsampling_misread_as_base_60_says_so(value, message):
    with pytest.raises(P.ParamsError, match="ela.subsampling") as info:
        P.parse({"ela": {"subsampling": value}})
    assert message in str(info.value)


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
        ({"fakes": {"swap": {"color_transfer": True}}}, "fakes.swap.color_transfer"),
        ({"fakes": {"swap": {"color": ["sepia"]}}}, "fakes.swap.color"),
        ({"fakes": {"swap": {"align": []}}}, "fakes.swap.align"),
        ({"fakes": {"swap": {"mask": ["inner", "inner"]}}}, "fakes.swap.mask"),
        ({"fakes": {"swap": {"interpolation": None}}}, "fakes.swap.interpolation"),
        ({"fakes": {"swap": {"erosion": [0.1, 0.0]}}}, "fakes.swap.erosion"),
        ({"fakes": {"swap": {"scale": [1.0]}}}, "fakes.swap.scale"),
        ({"fakes": {"swap": {"save": [90, 101]}}}, "fakes.swap.save"),
        ({"fakes": {"swap": {"save": "tail"}}}, "fakes.swap.save"),
        ({"testsets": {"unseen_swap": {"color": ["reinhard", "lowfreq"]}}}, "testsets.unseen_swap.color"),
        ({"testsets": {"unseen_swap": {"scale": [1.2, 1.6]}}}, "testsets.unseen_swap.scale"),
        ({"testsets": {"unseen_swap": {"save": [60, 80]}}}, "testsets.unseen_swap.save"),
        ({"testsets": {"unseen_swap": {"save": "head"}}}, "testsets.unseen_swap.save"),
        ({"fakes": {"swap": {"scale": []}}}, "testsets.unseen_swap.scale"),
        ({"fakes": {"swap": {"mask": ["subset"]}}}, "testsets.unseen_swap.mask"),
        ({"testsets": {"unseen_swap": {}}}, "testsets.unseen_swap"),
        ({"testsets": {"unseen_swap": {"colour": ["lowfreq"]}}}, "testsets.unseen_swap.colour"),
        ({"materialize": {"train_variants": 1}}, "materialize.train_variants"),
        ({"train": {"pairs": "yes"}}, "train.pairs"),
        ({"split": {"test_fraction": 1.5}}, "split.test_fraction"),
        ({"data": {"checksums": {"muct-a-jpg-v1.tar.gz": "abc"}}}, "data.checksums"),
        ({"data": {"group_pattern": "no-groups"}}, "data.group_pattern"),
        ({"augment": {"brightness": [1.2, 0.8]}}, "augment.brightness"),
        ({"tracking": {"model_name": "team/cnn"}}, "tracking.model_name"),
        ({"tracking": {"model_name": ""}}, "tracking.model_name"),
        ({"tracking": {"model_name": "cnn@prod"}}, "tracking.model_name"),
        ({"tracking": {"register": "yes"}}, "tracking.register"),
        ({"bogus": 1}, "bogus"),
        # values that make a model or a stage impossible, refused before any work
        ({"roi": {"size": 4096}}, "roi.size"),
        ({"roi": {"size": 16}}, "roi.size"),
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"train": {"batch_size": 100_000}}, "train.batch_size"),
        ({"materialize": {"variants": 1}}, "materialize.variants"),
        ({"materialize": {"variants": 10_000}}, "materialize.variants"),
        ({"materialize": {"workers": 100_000}}, "materialize.workers"),
        ({"fakes": {"scales": [64, 100_000]}}, "fakes.scales"),
        ({"fakes": {"blur_kernel": 1001}}, "fakes.blur_kernel"),
        ({"fakes": {"fraction": 1.0}}, "fakes.fraction"),
        ({"fakes": {"fraction": 0.0}}, "fakes.fraction"),
    ],
)
def test_bad_values_name_the_key(patch, key):
    with pytest.raises(P.ParamsError) as info:
        P.parse(patch)
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("fraction", "variants", "fakes"), [(0.1, 4, "0.4"), (0.8, 4, "3.2"), (0.5, 100, None), (0.25, 4, None)]
)
def test_every_photo_must_give_a_real_and_a_fake(fraction, variants, fakes):
    patch = {"fakes": {"fraction": fraction}, "materialize": {"variants": variants}}
    if fakes is None:
        assert P.parse(patch).fakes.fraction == fraction
        return
    with pytest.raises(P.ParamsError) as info:
        P.parse(patch)
    message = str(info.value)
    assert f"fakes.fraction {fraction} x materialize.variants {variants} gives {fakes} fakes" in message
    assert "both a real and a fake" in message and "Value error" not in message


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
    assert flat["fakes.blend.ratio"] == "[0.25, 0.75]" and flat["fakes.swap.hull"] == "all"
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


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("ela:\n  quality: true\n", "ela.quality"),
        ("train:\n  epochs: true\n", "train.epochs"),
        ('ela:\n  quality: "95"\n', "ela.quality"),
        ("ela:\n  gain: .inf\n", "ela.gain"),
        ("data:\n  timeout_s: .inf\n", "data.timeout_s"),
        ("ela:\n  gain: .nan\n", "ela.gain"),
        ("augment:\n  flip: 1\n", "augment.flip"),
        ("train:\n  seeds: [42, true]\n", "train.seeds"),
        (
            "seed: 42\nela:\n  quality: 90\nseed: 43\n",
            'duplicate key "seed" with value "43" (original value: "42") (line 4',
        ),
        (
            "ela:\n  quality: 90\n  quality: 95\n",
            'duplicate key "quality" with value "95" (original value: "90") (line 3',
        ),
        ("", "is empty"),
        ("# every line a comment\n", "is empty"),
    ],
)
def test_bad_params_file_is_refused_naming_the_key_and_file(text, named, tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(P.ParamsError) as info:
        P.load(path)
    assert named in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_params_stay_what_dvc_and_people_write(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "seed: 0x10\nela:\n  subsampling: 4:2:0\n  quality: 90\n  gain: 20\n"
        "train:\n  lr: 5e-4\n  epsilon: 1e-8\n  seeds: [42, 43]\naugment:\n  brightness: [1, 1.2]\n"
    )
    p = P.load(path)
    assert (p.seed, p.ela.subsampling, p.ela.quality) == (16, "4:2:0", 90)
    assert isinstance(p.ela.gain, float) and p.ela.gain == 20.0  # a YAML int for a float
    assert isinstance(p.train.lr, float) and p.train.lr == 5e-4  # YAML 1.2's float, no dot
    assert p.train.epsilon == 1e-8 and p.train.seeds == (42, 43) and p.augment.brightness == (1.0, 1.2)
    assert P.load(ROOT / "params.yaml") == P.parse(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["ela"]["subsampling"] == 420


def test_missing_params_file_names_it(tmp_path):
    with pytest.raises(P.ParamsError, match=f"{tmp_path / 'params.yaml'} not found"):
        P.load(tmp_path / "params.yaml")


def test_the_held_out_swaps_share_nothing_with_the_training_family():
    """params.yaml's test_swap_unseen holds out six axes, none sharing a value or a range with
    fakes.swap, the only family a training recipe (swap, or a mix naming it) draws swaps from."""
    p = P.load(ROOT / "params.yaml")
    family, held = p.fakes.swap, p.testsets.unseen_swap
    axes = held.held_out()
    assert set(axes) == {"color", "align", "interpolation", "mask", "scale", "save"}
    for axis in ("color", "align", "interpolation", "mask"):
        assert not set(axes[axis]) & set(getattr(family, axis)), axis
        assert len(getattr(family, axis)) >= 2, axis  # the family varies on every axis
    for axis in ("scale", "save"):
        (low, high), (family_low, family_high) = axes[axis], getattr(family, axis)
        assert high < family_low or family_high < low, axis
    assert held.overlaps(family) == {}
    unseen = held.over(family)  # the held-out axes replaced, the rest the family's
    assert (
        unseen.erosion == family.erosion and unseen.feather == family.feather and unseen.mask == ("subset",)
    )
    # the single swap of earlier versions stays expressible
    single = {"color": ["reinhard"], "align": ["inner"], "interpolation": ["linear"], "mask": ["inner"],
              "erosion": [0.0, 0.0], "scale": [], "save": "head", "hull": "inner"}  # fmt: skip
    assert P.parse({"fakes": {"swap": single}, "testsets": {"unseen_swap": None}}).fakes.swap.save == "head"
