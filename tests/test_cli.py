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
from tests.helpers import as_user
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
    return as_user.run_as(
        uid,
        lambda: [[str(path), error] for path, error in predict.find_photos(paths)],
        "running as root and can't switch to user nobody, so chmod 000 can't be tested",
    )


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


def _console(*args, timeout: float = 300, env: dict | None = None, **run) -> subprocess.CompletedProcess:
    """``faceswap-ela predict ARGS`` as the console command runs (a new Python, TensorFlow's
    environment variables unset, ``env`` added); ``run`` goes to subprocess.run (default: capture
    both streams as bytes)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    command = [sys.executable, "-m", "faceswap_ela.cli", "predict", *map(os.fsdecode, args)]
    run.setdefault("stdout", subprocess.PIPE)
    run.setdefault("stderr", subprocess.PIPE)
    env = {**base, **(env or {}), "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, env=env, timeout=timeout, **run)


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # /dev/zero read whole fails soon


def test_a_model_or_params_that_is_no_regular_file_is_refused_before_it_is_read(tiny, tmp_path):
    """A FIFO would block its reader for ever and /dev/zero never ends: each is named for what it
    is, as a usage error, without reading it (a timeout and a memory cap stand guard)."""
    os.mkfifo(tmp_path / "fifo.keras")
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "zero.keras").symlink_to("/dev/zero")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    big = tmp_path / "big.yaml"
    big.write_text(tiny[1].read_text() + "#" * (1 << 20) + "\n")  # over params.MAX_BYTES, 1 MiB
    model, params = tiny[0], tiny[1]
    cases = (
        (tmp_path / "fifo.keras", params, "can't load model {}: not a regular file (a FIFO)"),
        (tmp_path / "zero.keras", params, "can't load model {}: not a regular file (a device)"),
        (model, tmp_path / "fifo.yaml", "can't read {}: not a regular file (a FIFO)"),
        (model, tmp_path / "zero.yaml", "can't read {}: not a regular file (a device)"),
        (model, big, "can't read {}: too large: over the 1,048,576-byte limit"),
    )
    for model, params, message in cases:
        named = model if params == tiny[1] else params
        done = _console(tiny[2]["astronaut"], "--model", model, "--params", params, timeout=60,
                        preexec_fn=_limit_memory, text=True)  # fmt: skip
        assert done.returncode == 2, (named, done.stderr)
        assert done.stdout == ""
        assert done.stderr.splitlines() == [f"{ERROR} {message.format(named)}"]


def test_an_empty_model_name_or_a_root_folder_is_a_usage_error(tiny, capsys):
    cases = {
        "": "empty model name ''",
        " ": "empty model name ' '",
        ".": "can't load model .: it is a folder",
        "/": "can't load model /: it is a folder",
    }
    for model, reason in cases.items():
        code, out, err = _predict(capsys, tiny[2]["astronaut"], "--model", model, "--params", tiny[1])
        assert code == 2 and out == "", (model, err)
        assert len(err.splitlines()) == 1 and err.startswith(f"{ERROR} {reason}"), (model, err)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def test_a_model_that_gives_nan_fails_that_face_with_valid_json(tiny, capsys, tmp_path):
    """Weights gone NaN: no face is labelled "real" on a NaN, the JSON stays JSON, exit 1."""
    keras = pytest.importorskip("keras")
    net = keras.saving.load_model(tiny[0], compile=False)
    net.set_weights([w * float("nan") for w in net.get_weights()])
    model = tmp_path / "model.keras"
    net.save(model)
    shutil.copy(card.path_for(tiny[0]), card.path_for(model))
    photo = tiny[2]["astronaut"]
    code, out, err = _predict(capsys, photo, "--model", model, "--params", tiny[1], "--format", "json")
    assert code == 1
    (row,) = json.loads(out, parse_constant=_reject_constant)
    assert row["status"] == "error" and row["p_fake"] is None and row["label"] is None
    assert row["error"] == "the model gave a non-finite score (nan)" and row["box"] is not None
    assert _errors(err) == [f"{ERROR} {photo} face 0: the model gave a non-finite score (nan)"]
    assert "0 face(s) scored" in err and "1 failed" in err


def test_json_output_never_holds_nan():
    row = predict.Prediction("a.jpg", 0, (1, 2, 3, 4), float("nan"), "real")
    with pytest.raises(ValueError, match="JSON compliant"):
        predict.to_json([row])
    assert predict.score_problem(1.5) == "the model gave p(fake) = 1.5, not a probability in [0, 1]"
    assert predict.score_problem(float("-inf")) == "the model gave a non-finite score (-inf)"
    assert predict.score_problem(0.0) is None and predict.score_problem(1.0) is None


def _name(tmp_path: Path, raw: bytes, photo: Path | None = None) -> Path:
    """``tmp_path``/``raw`` (a file name as bytes), a copy of ``photo`` unless None (a missing
    photo); skip where the file system refuses the name."""
    path = tmp_path / os.fsdecode(raw)
    if photo is not None:
        try:
            shutil.copy(photo, path)
        except (OSError, UnicodeEncodeError):
            pytest.skip(f"this file system takes no file named {raw!r}")
    return path


def test_undecodable_file_names_are_escaped_in_every_format(tiny, capsys, tmp_path):
    """A name whose bytes aren't UTF-8 can't be written to a UTF-8 stream as it is: it is shown
    with \\xNN escapes in the table, JSON, CSV, stderr and the heatmap's title, and every photo
    keeps its row; the heatmap file is named with the photo's own bytes."""
    bad = _name(tmp_path, b"bad\xff.png", tiny[2]["astronaut"])
    gone = _name(tmp_path, b"gone\xfe.jpg")
    shown_bad, shown_gone = f"{tmp_path}/bad\\xff.png", f"{tmp_path}/gone\\xfe.jpg"
    for fmt in ("table", "json", "csv"):
        code, out, err = _predict(capsys, bad, gone, *_using(tiny), "--format", fmt)
        assert code == 1, err
        assert _errors(err) == [f"{ERROR} {shown_gone}: file not found"]
        if fmt == "json":
            assert [row["photo"] for row in json.loads(out)] == [shown_bad, shown_gone]
        elif fmt == "csv":
            assert [row["photo"] for row in csv.DictReader(io.StringIO(out))] == [shown_bad, shown_gone]
        else:
            assert [line.split()[0] for line in out.splitlines()] == ["photo", shown_bad, shown_gone]
    heatmaps = tmp_path / "heatmaps"
    code, out, err = _predict(capsys, bad, *_using(tiny), "--heatmap", heatmaps)
    assert code == 0, err
    assert [p.name for p in heatmaps.iterdir()] == [os.fsdecode(b"bad\xff_face0.png")]


def test_control_characters_in_names_keep_each_row_on_its_line(tiny, capsys, tmp_path):
    """A newline in a file name would split its table row and its stderr line in two, an ESC
    would drive the terminal: the table and stderr show them escaped. CSV quotes such a name and
    JSON escapes it, so both read back the name as it is."""
    two = _name(tmp_path, b"two\nlines.png", tiny[2]["astronaut"])
    red = _name(tmp_path, b"tab\tand\x1b[31mred.png", tiny[2]["grace_hopper"])
    gone = _name(tmp_path, b"gone\r\n.jpg")
    code, out, err = _predict(capsys, two, red, gone, *_using(tiny))
    assert code == 1
    shown = ["two\\nlines.png", "tab\\tand\\x1b[31mred.png", "gone\\r\\n.jpg"]
    assert [line.split()[0] for line in out.splitlines()] == ["photo", *(f"{tmp_path}/{n}" for n in shown)]
    assert "\x1b" not in out + err
    assert _errors(err) == [f"{ERROR} {tmp_path}/gone\\r\\n.jpg: file not found"]
    assert len(err.splitlines()) == 2  # and the summary
    for fmt in ("json", "csv"):
        code, out, _ = _predict(capsys, two, red, gone, *_using(tiny), "--format", fmt)
        assert code == 1
        rows = json.loads(out) if fmt == "json" else list(csv.DictReader(io.StringIO(out)))
        assert [row["photo"] for row in rows] == [str(two), str(red), str(gone)]


def test_a_name_that_stdout_cannot_encode_is_escaped(tiny, tmp_path):
    photo = _name(tmp_path, "café.png".encode(), tiny[2]["astronaut"])
    done = _console(photo, *_using(tiny), env={"PYTHONIOENCODING": "ascii"}, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].startswith(f"{tmp_path}/caf\\xe9.png ")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_a_full_or_closed_stdout_is_one_line_and_exit_74(tiny):
    """The results that can't be written are lost: one line says so and the status (74, EX_IOERR)
    tells it from 1 (some input failed, the rest printed in full); no traceback, nor Python's own
    complaint at exit."""
    photo = tiny[2]["astronaut"]
    with open("/dev/full", "wb") as full:
        done = _console(photo, *_using(tiny), stdout=full, text=True)
    assert done.returncode == 74
    assert done.stderr.splitlines() == [f"{ERROR} can't write the results to stdout: No space left on device"]
    done = _console(photo, *_using(tiny), stdout=None, preexec_fn=lambda: os.close(1), text=True)
    assert done.returncode == 74
    assert done.stderr.splitlines() == [f"{ERROR} can't write the results to stdout: stdout is closed"]


def test_a_reader_that_goes_away_ends_predict_quietly_with_141(tiny):
    """``faceswap-ela predict ... | head -1``: when the reader has gone, predict ends as a tool
    that SIGPIPE ends would (the shell's 128 + 13), saying nothing."""
    read, write = os.pipe()
    os.close(read)  # a reader that has already gone: the first write fails with EPIPE
    try:
        done = _console(tiny[2]["astronaut"], *_using(tiny), stdout=write)
    finally:
        os.close(write)
    assert done.returncode == 141
    assert done.stderr == b""
