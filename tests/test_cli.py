"""`faceswap-ela predict` on bad and careless input, with an untrained model (the scores don't
matter here): photos and folder entries that can't be read, params and model files that are none,
heatmap folders that can't be written and option values that make no sense. Each gets a clear
message, and costs no other photo its row: no traceback, no silent skip."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from faceswap_ela import card, cli, predict
from faceswap_ela import params as P
from faceswap_ela.images import save_png
from tests.helpers.sample_data import default_params, portrait, write_bad_images

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # roi.size of the test model
ERROR = "faceswap-ela: error:"
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, dict[str, Path]]:
    """An untrained two-class Keras model on SIZE x SIZE input (the scores don't matter here),
    the params.yaml it fits, and two portraits with one face each."""
    pytest.importorskip("dlib")
    keras = pytest.importorskip("keras")
    base = tmp_path_factory.mktemp("tiny")
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, "softmax"),
        ]
    )
    net.save(base / "model.keras")
    raw = default_params()
    raw["roi"]["size"] = SIZE
    (base / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    model_card = card.make(P.load(base / "params.yaml"), "ela", "warp", 0, "tiny", "float32")
    card.path_for(base / "model.keras").write_text(json.dumps(model_card))  # as train@ writes it
    photos = {}
    for name in ("astronaut", "grace_hopper"):
        photos[name] = base / f"{name}.png"
        save_png(photos[name], portrait(name))
    return base / "model.keras", base / "params.yaml", photos


def _predict(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _using(tiny) -> list[str]:
    return ["--model", str(tiny[0]), "--params", str(tiny[1])]


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(ERROR)]


def _unwritable_folders(tmp_path: Path) -> list[Path]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    folders = [blocker, blocker / "sub"]
    if Path("/proc/self").is_dir():  # Linux: no one, root included, creates files here
        folders += [Path("/proc/hm"), Path("/proc")]
    if not AS_ROOT:
        locked = tmp_path / "read-only"
        locked.mkdir(mode=0o555)
        folders.append(locked)
    return folders


def test_unwritable_heatmap_folder_is_a_usage_error_before_scoring(tiny, capsys, tmp_path):
    for folder in _unwritable_folders(tmp_path):
        code, out, err = _predict(capsys, tiny[2]["astronaut"], *_using(tiny), "--heatmap", folder)
        assert code == 2, (folder, err)
        assert err.startswith(ERROR) and len(err.splitlines()) == 1
        assert str(folder) in err and "heatmap" in err
        assert out == ""
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_a_heatmap_that_cannot_be_written_costs_that_figure_alone(tiny, capsys, tmp_path):
    long_name = tmp_path / ("p" * 250 + ".png")  # a legal name; its heatmap's would be too long
    shutil.copy(tiny[2]["grace_hopper"], long_name)
    heatmaps = tmp_path / "heatmaps"
    code, out, err = _predict(capsys, long_name, tiny[2]["astronaut"], *_using(tiny), "--format", "json",
                              "--heatmap", heatmaps)  # fmt: skip
    assert code == 1
    rows = json.loads(out)
    names = [Path(r["photo"]).name for r in rows]
    assert names == [long_name.name, "astronaut.png"] and {r["status"] for r in rows} == {"ok"}
    (line,) = _errors(err)
    assert "heatmap not written" in line and "too long" in line.lower()
    assert sorted(p.name for p in heatmaps.iterdir()) == ["astronaut_face0.png"]


def test_params_that_are_a_folder_or_binary_exit_2_with_one_line(tiny, capsys, tmp_path):
    binary = tmp_path / "params.yaml"
    binary.write_bytes(bytes(range(256)) * 8)
    for params in (tmp_path, binary):
        code, out, err = _predict(capsys, tiny[2]["astronaut"], "--model", tiny[0], "--params", params)
        assert code == 2 and out == ""
        assert len(err.splitlines()) == 1 and err.startswith(ERROR) and str(params) in err


def test_a_file_that_is_no_model_is_named_so_before_any_photo(tiny, capsys, tmp_path):
    no_face = write_bad_images(tmp_path / "bad")["no_face"]
    fake_model = tmp_path / "model.keras"
    fake_model.write_bytes(b"not a keras archive")
    folder_model = tmp_path / "folder.keras"
    folder_model.mkdir()
    params = tmp_path / "p.bin"
    shutil.copy(tiny[1], params)
    for model in (fake_model, folder_model, params):
        code, out, err = _predict(capsys, no_face, "--model", model, "--params", tiny[1])
        assert code == 2 and out == "", (model, err)
        assert len(err.splitlines()) == 1 and "can't load model" in err
        assert "not found" not in err.lower()


def test_folder_entries_that_cannot_be_read_each_get_a_line(tiny, capsys, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(tiny[2]["astronaut"], folder / "sub" / "good.png")
    (folder / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "sub" / "back").symlink_to(folder)  # a folder loop
    os.mkfifo(folder / "pipe.png")
    (folder / "notes.txt").write_text("not a photo: left out")
    (folder / "old-notes.txt").symlink_to(tmp_path / "gone.txt")  # no photo either: left out
    (folder / "album").symlink_to(tmp_path / "moved-album")  # may have been a folder of photos
    code, out, err = _predict(capsys, folder, *_using(tiny), "--format", "json")
    assert code == 1
    rows = {Path(r["photo"]).relative_to(folder).as_posix(): r for r in json.loads(out)}
    assert rows["sub/good.png"]["status"] == "ok"
    expected = {
        "album": "broken symbolic link",
        "dangling.jpg": "broken symbolic link",
        "loop.jpg": "symbolic link loop",
        "pipe.png": "not a regular file (a FIFO)",
        "sub/back": "symbolic link loop",
    }
    for name, reason in expected.items():
        assert rows[name]["status"] == "error" and reason in rows[name]["error"], rows[name]
    assert set(rows) == {*expected, "sub/good.png"}
    errors = _errors(err)
    assert len(errors) == len(expected)
    for name in expected:
        assert sum(str(folder / name) in line for line in errors) == 1


def test_a_fifo_given_directly_is_no_empty_file(tiny, capsys, tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    code, out, err = _predict(capsys, fifo, tiny[2]["astronaut"], *_using(tiny), "--format", "json")
    assert code == 1
    first = json.loads(out)[0]
    assert first["error"] == "not a regular file (a FIFO)" and "empty" not in err
    assert _errors(err) == [f"{ERROR} {fifo}: not a regular file (a FIFO)"]


def _find_photos_as(uid: int | None, paths: list[Path]) -> list[list]:
    """predict.find_photos(paths) in a forked child running as ``uid`` (None: as this user)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so no interpreter the other user must be able to reach
        code = 3
        try:
            os.close(read)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            code = 1
            found = predict.find_photos(paths)
            with os.fdopen(write, "w") as out:
                json.dump([[str(path), error] for path, error in found], out)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as result:
        text = result.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 3:
        pytest.skip("running as root and can't switch to user nobody, so chmod 000 can't be tested")
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(text)


def test_unreadable_folders_are_named():
    """As root, chmod 000 stops no one: the walk then runs as user nobody (65534), in a world-
    readable temporary folder, so that the permissions bite."""
    with tempfile.TemporaryDirectory(prefix="faceswap-ela-test-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        top, inner = base / "locked", base / "open"
        (inner / "shut").mkdir(parents=True)
        top.mkdir()
        shutil.copy(ROOT / "README.md", inner / "readme.jpg")
        top.chmod(0o000)
        (inner / "shut").chmod(0o000)
        try:
            found = dict(_find_photos_as(65534 if AS_ROOT else None, [top, inner]))
        finally:
            top.chmod(0o755)
            (inner / "shut").chmod(0o755)
    assert found == {
        str(top): "can't read this folder: Permission denied",
        str(inner / "readme.jpg"): None,
        str(inner / "shut"): "can't read this folder: Permission denied",
    }


def test_bad_option_values_name_the_option_not_the_code(capsys):
    for option, value in (("--rois", "abc"), ("--threshold", "abc"), ("--rois", "2.5")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["predict", "x.jpg", option, value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {option}: must be" in err and repr(value) in err and "_" + option[2:] not in err


def test_predict_on_a_folder_of_every_bad_entry(tiny, tmp_path):
    """Run as the console command would be: exit 1, one stderr line per bad entry and a summary
    (TensorFlow's start-up lines silenced), every good row printed."""
    folder = tmp_path / "photos"
    bad = write_bad_images(folder / "bad")
    for name, path in tiny[2].items():
        shutil.copy(path, folder / f"{name}.png")
    (folder / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "loop.jpeg").symlink_to(folder / "loop.jpeg")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "deep" / "er").mkdir(parents=True)
    (folder / "deep" / "er" / "up").symlink_to(folder / "deep")
    (folder / "empty").mkdir()  # holds no photo: nothing to report inside a walk
    unusable = {"zero_byte", "truncated", "random_bytes", "huge"}
    n_bad = len(unusable) + 4
    if not AS_ROOT:
        (folder / "shut").mkdir(mode=0o000)
        n_bad += 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    done = subprocess.run(
        [sys.executable, "-m", "faceswap_ela.cli", "predict", str(folder), *_using(tiny), "--format", "csv"],
        capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    if not AS_ROOT:
        (folder / "shut").chmod(0o755)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == n_bad + 1, done.stderr  # nothing from TensorFlow
    assert all(line.startswith(ERROR) for line in lines[:-1]) and "photo(s):" in lines[-1]
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    by_name: dict[str, list[str]] = {}
    for row in rows:
        by_name.setdefault(Path(row["photo"]).name, []).append(row["status"])
    assert by_name.pop("astronaut.png") == by_name.pop("grace_hopper.png") == ["ok"]
    assert by_name.pop("two_faces.jpg") == ["ok", "ok"] and by_name.pop("no_face.jpg") == ["no face"]
    for kind in ("grayscale", "cmyk", "rgba"):  # odd modes, still photos
        assert "error" not in by_name.pop(bad[kind].name)
    assert sorted(s for statuses in by_name.values() for s in statuses) == ["error"] * n_bad
    assert {bad[kind].name for kind in unusable} <= set(by_name)
