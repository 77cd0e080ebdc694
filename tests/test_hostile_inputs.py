"""Hostile and careless input (issue 13): bad photos and folders for `predict`, bad params.yaml
files, hostile archives and interrupted downloads, and a half-alive MLflow server. Each must give a
clear message and lose nothing: no traceback, no silent skip."""

from __future__ import annotations

import contextlib
import csv
import gzip
import http.server
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from faceswap_ela import card, cli, download, muct, predict, stage, tracking
from faceswap_ela import params as P
from faceswap_ela.download import CorruptArchiveError, UnsafeArchiveError
from faceswap_ela.images import save_png
from tests.helpers.sample_data import portrait, serve, stage_repo, write_bad_images

ROOT = Path(__file__).resolve().parents[1]
A, L = muct.camera_archive("a"), muct.LANDMARKS_ARCHIVE
SIZE = 64  # roi.size of the test model
ERROR = "faceswap-ela: error:"
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ---------------------------------------------------------------- helpers


@contextlib.contextmanager
def loopback(handle, limit_s: float = 30.0) -> Iterator[tuple[str, threading.Event, threading.Event]]:
    """An HTTP server on 127.0.0.1 whose GET requests go to ``handle(handler, stop)``; yields
    (base URL, "a request came" event, stop event). It stops on exit, or by itself after
    ``limit_s``, and every handler waiting on ``stop`` is released then."""
    seen, stop = threading.Event(), threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

        def do_GET(self) -> None:
            seen.set()
            handle(self, stop)

        do_POST = do_GET

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    timer = threading.Timer(limit_s, stop.set)
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", seen, stop
    finally:
        stop.set()
        timer.cancel()
        server.shutdown()
        server.server_close()


def _tar_gz(path: Path, members: list[tuple[str, bytes | int]]) -> Path:
    """A .tar.gz of (name, data) members; an int stands for that many zero bytes, streamed."""

    class Zeros(io.RawIOBase):
        def __init__(self, n: int):
            self.left = n

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            k = min(len(buffer), self.left)
            buffer[:k] = bytes(k)
            self.left -= k
            return k

    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = 0o644, 0
            info.size = data if isinstance(data, int) else len(data)
            tar.addfile(info, io.BufferedReader(Zeros(data)) if isinstance(data, int) else io.BytesIO(data))
    return path


def _data(source: str, **overrides) -> P.DataParams:
    raw = {"source": source, "archives": [A, L], "retries": 0, "timeout_s": 10, **overrides}
    return P.parse({"data": raw}).data


def _run(repo: Path, data: P.DataParams) -> dict:
    repo.mkdir(parents=True, exist_ok=True)
    out, metrics = repo / "data" / "raw", repo / "metrics" / "download.json"
    return download.run(data, out, metrics, root=repo, workers=1, backoff_s=0.0, progress=False)


def _cache_files(repo: Path) -> list[str]:
    cache = repo / ".cache" / "downloads"
    return sorted(p.name for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def _assert_no_outputs(repo: Path) -> None:
    for folder in (repo / "data", repo / "metrics"):
        assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())


def _copy_mirror(muct_mirror, tmp_path: Path) -> Path:
    mirror = tmp_path / "mirror"
    shutil.copytree(muct_mirror.mirror, mirror)
    return mirror


def _default_signals() -> None:
    # a shell may start background jobs with SIGINT ignored, and a child keeps that
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start_stage(repo: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "download.py")],
        cwd=repo, env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=_default_signals,
    )  # fmt: skip


# ---------------------------------------------------------------- params.yaml


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
        ("seed: 42\nela:\n  quality: 90\nseed: 43\n", "duplicate key 'seed' (line 4"),
        ("ela:\n  quality: 90\n  quality: 95\n", "duplicate key 'quality' (line 3"),
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


def test_missing_params_file_names_it(tmp_path):
    with pytest.raises(P.ParamsError, match=f"{tmp_path / 'params.yaml'} not found"):
        P.load(tmp_path / "params.yaml")


def test_every_stage_refuses_lax_params_at_start(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    ran = []
    for text in ("ela:\n  quality: true\n", "", "seed: 1\nseed: 2\n"):
        (tmp_path / "params.yaml").write_text(text)
        with caplog.at_level(logging.ERROR):
            caplog.clear()
            assert stage.main(ran.append) == 2
        assert len(caplog.records) == 1 and "params.yaml" in caplog.records[0].getMessage()
    assert ran == []


# ---------------------------------------------------------------- predict


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
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
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
    """The issue's "done": run as the console command would be, exit 1, one stderr line per bad
    entry and a summary (TensorFlow's start-up lines silenced), every good row printed."""
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


# ---------------------------------------------------------------- download: integrity


def test_a_flipped_block_fails_the_gzip_crc(muct_mirror, tmp_path):
    mirror = _copy_mirror(muct_mirror, tmp_path)
    data = bytearray((mirror / A).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    (mirror / A).write_bytes(bytes(data))
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _), pytest.raises(CorruptArchiveError) as err:
        _run(repo, _data(url))
    assert A in str(err.value) and "the cached copy was deleted" in str(err.value)
    assert _cache_files(repo) == []
    _assert_no_outputs(repo)


def test_a_damaged_header_in_a_plain_tar_loses_no_member_silently(muct_mirror, tmp_path):
    with gzip.open(muct_mirror.mirror / A) as zipped:
        data = bytearray(zipped.read())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        third = tar.getmembers()[3]
    data[third.offset : third.offset + 8] = b"garbage!"  # the member's header: tarfile stops there
    archive = tmp_path / "plain.tar"
    archive.write_bytes(bytes(data))
    with pytest.raises(CorruptArchiveError, match="plain.tar is damaged"):
        download.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_gzip_bomb_is_refused_before_it_is_unpacked(tmp_path):
    mirror = tmp_path / "mirror"
    _tar_gz(mirror / A, [("jpg/i000qa-fn.jpg", 200 << 20)])
    assert (mirror / A).stat().st_size < 400_000
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _), pytest.raises(UnsafeArchiveError) as err:
        _run(repo, _data(url, archives=[A]))
    message = str(err.value)
    assert "'jpg/i000qa-fn.jpg'" in message and "200.0 MiB" in message and "data.max_member_mib" in message
    assert _cache_files(repo) == []
    _assert_no_outputs(repo)
    assert sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) < 1 << 20


def test_an_archive_over_the_total_cap_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    _tar_gz(mirror / A, [(f"jpg/i00{k}qa-fn.jpg", 700 << 10) for k in range(2)])
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _), pytest.raises(UnsafeArchiveError, match=r"more than 1\.0 MiB"):
        _run(repo, _data(url, archives=[A], max_unpacked_mib=1))
    _assert_no_outputs(repo)
    with pytest.raises(P.ParamsError, match="data.max_member_mib"):
        _data("x", max_member_mib=0)


def test_a_duplicate_member_is_refused_naming_it(muct_mirror, tmp_path):
    first = muct_mirror.photos[0]
    mirror = tmp_path / "mirror"
    members = [(f"jpg/{p.name}", p.read_bytes()) for p in muct_mirror.photos]
    _tar_gz(mirror / A, [*members, (f"./jpg/{first.name}", b"a replacement photo")])
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _), pytest.raises(UnsafeArchiveError) as err:
        _run(repo, _data(url, archives=[A]))
    assert f"'./jpg/{first.name}'" in str(err.value) and "more than once" in str(err.value)
    assert _cache_files(repo) == []
    _assert_no_outputs(repo)


def test_what_failed_to_unpack_is_never_cached(muct_mirror, tmp_path):
    """A mirror that answers every path with an HTML page and 200: nothing of it stays in the
    cache, so the first run after the mirror is fixed succeeds."""
    broken = tmp_path / "broken"
    broken.mkdir()
    page = "<!DOCTYPE html><html><body>" + "Please sign in. " * 200 + "</body></html>\n"
    for name in (A, L):
        (broken / name).write_text(page)
    repo = tmp_path / "repo"
    with serve(broken) as (url, log):
        with pytest.raises(CorruptArchiveError, match=f"{A} is not a readable tar archive"):
            _run(repo, _data(url))
        assert _cache_files(repo) == []
        for name in (A, L):
            shutil.copy(muct_mirror.mirror / name, broken / name)
        assert _run(repo, _data(url))["photos"] == 12
    assert [path for path, _, status in log] == ["/" + A, "/" + A, "/" + L]


def test_the_first_download_is_pinned_and_a_changed_one_warned_about(muct_mirror, tmp_path, caplog):
    mirror = _copy_mirror(muct_mirror, tmp_path)
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _):
        _run(repo, _data(url))
        first = json.loads((repo / "data/raw/archives.json").read_text())
        shutil.rmtree(repo / ".cache")
        _run(repo, _data(url))  # the same bytes again: no warning
        _tar_gz(mirror / A, [(f"jpg/{p.name}", p.read_bytes()) for p in muct_mirror.photos[:2]])
        shutil.rmtree(download.cache_path(repo / ".cache" / "downloads", url + A).parent)
        with caplog.at_level(logging.WARNING):
            caplog.clear()
            assert _run(repo, _data(url))["photos"] == 2
    changed = [r.getMessage() for r in caplog.records if "differs from its first download" in r.getMessage()]
    assert len(changed) == 1 and url + A in changed[0] and first[0]["sha256"] in changed[0]
    assert json.loads((repo / ".cache/downloads/pins.json").read_text())[url + A] == first[0]["sha256"]


# ---------------------------------------------------------------- download: interruptions


def _hanging(handler, stop: threading.Event) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(10 << 20))
    handler.end_headers()
    handler.wfile.write(b"\x1f\x8b" + bytes(4094))
    handler.wfile.flush()
    stop.wait()


@pytest.mark.parametrize(("sent", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_download_leaves_nothing_and_no_traceback(sent, code, tmp_path):
    with loopback(_hanging) as (url, seen, _):
        repo = stage_repo(tmp_path, source=url, archives=[A], retries=0)
        proc = _start_stage(repo)
        try:
            assert seen.wait(120), "the stage never asked for the archive"
            deadline = time.monotonic() + 30
            while not list((repo / "data").glob(".raw.*.tmp")) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert list((repo / "data").glob(".raw.*.tmp")), "no temporary output to clean up"
            proc.send_signal(sent)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert sum("stopped by" in line for line in err.splitlines()) == 1
    _assert_no_outputs(repo)


def test_stale_temporaries_are_swept_at_every_stage_start(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    stale = [
        tmp_path / "data" / ".raw.k2j3h4g5.tmp",
        tmp_path / "metrics" / ".download.json.abc_1234.tmp",
        tmp_path / "models" / "ela-warp-s42" / ".model.keras.4242.keras",
        tmp_path / "plots" / "history" / ".ela-warp-s42.csv.zzzzzzzz.tmp",
    ]
    stale[0].mkdir(parents=True)
    (stale[0] / "photos").mkdir()
    for path in stale[1:]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    kept = [tmp_path / "data" / "raw" / "manifest.csv", tmp_path / "metrics" / ".hidden.tmp"]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    with caplog.at_level(logging.INFO):
        assert stage.main(lambda p: None) == 0
    assert [p for p in stale if p.exists()] == []
    assert all(p.read_text() == "mine" for p in kept)
    assert sum("left by an interrupted run" in r.getMessage() for r in caplog.records) == len(stale)


# ---------------------------------------------------------------- tracking


def _half_alive(handler, stop: threading.Event) -> None:
    if handler.path.startswith("/health"):
        handler.send_response(200)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"OK")
        return
    stop.wait()  # accepts the API call and never answers


def test_a_half_alive_tracking_server_costs_seconds_and_one_warning(monkeypatch, caplog, capfd):
    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "DVC_ROOT"):
        monkeypatch.setenv(name, "")  # so that what the project sets is undone afterwards
        monkeypatch.delenv(name)
    p = P.parse({})
    with loopback(_half_alive, limit_s=60) as (url, seen, _):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url.rstrip("/"))
        with caplog.at_level(logging.WARNING):
            started = time.monotonic()
            tracker = tracking.start_run(p)
            start_s = time.monotonic() - started
            start_warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            caplog.clear()
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")  # the user's own setting wins
            started = time.monotonic()
            resumed = tracking.resume_run({"run_id": "0" * 32}, p)
            resume_s = time.monotonic() - started
            resume_warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert seen.is_set()
    assert not tracker.active and not resumed.active
    assert start_s < tracking.HTTP_TIMEOUT_S + 5, start_s
    assert resume_s < 1 + 4, resume_s
    assert len(start_warnings) == 1 and "MLflow tracking disabled" in start_warnings[0], start_warnings
    assert len(resume_warnings) == 1 and "MLflow tracking disabled" in resume_warnings[0], resume_warnings
    assert "Retrying" not in capfd.readouterr().err
