"""Test data built on the fly (nothing here is committed): MUCT-layout photos, landmark CSV and
archives made from two public-domain portraits, hostile archives, awkward images, and loopback
HTTP servers: one for the download tests, one that answers as a test's handler says.

Public API:
    portrait(name) -> RGB uint8 array ("grace_hopper" or "astronaut")
    write_muct_photos(folder, subjects=4, per_subject=3) -> list[Path]   # folder/jpg/i000qa-fn.jpg ...
    write_muct_landmarks_csv(path, photos) -> Path                       # muct76-opencv.csv
    build_muct_archives(photo_root, out_dir) -> dict[archive name, Path]
    build_hostile_archive(path, kind) -> str                             # the hostile member's name
    build_archive(path, [(name, bytes or a size in zeros), ...]) -> Path
    serve(folder, *, cut_after=None, ignore_range=False, fail_first=0)  # -> (base_url, log)
    loopback(handle, limit_s=30.0)  # -> (base_url, seen, stop); each request goes to handle(handler, stop)
    write_bad_images(folder) -> dict[kind, Path]
    bomb_png(width, height) -> bytes                                     # a tiny PNG of many pixels
    default_params() -> dict                                             # params.yaml's committed values
    small_disk(folder, kib)  # -> folder, a tmpfs of that size that fills up (skips where it can't mount)
    predictor_path() -> str, face_detector(), shape_predictor()          # dlib, loaded once
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import importlib.util
import io
import re
import shutil
import struct
import subprocess
import tarfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import yaml
from PIL import Image

from faceswap_ela import muct

MUCT_SIZE = (480, 640)  # width, height of a MUCT photo
# dlib's face box (upsample 0) in each portrait: centre x, centre y, width.
_FACE_BOX = {"grace_hopper": (268.5, 244.5, 216.0), "astronaut": (222.5, 126.5, 88.0)}
_FACE_WIDTH = 200.0  # face width in the rendered photos, before the random 0.9-1.1 scale
_LIGHTINGS = "qrstuvw"
HOSTILE_KINDS = ("dotdot", "absolute", "symlink", "hardlink", "device", "fifo")


@functools.cache
def _portrait(name: str) -> np.ndarray:
    if name == "grace_hopper":
        import matplotlib.cbook

        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        image = np.asarray(Image.open(path).convert("RGB"))
    elif name == "astronaut":
        import skimage.data

        image = skimage.data.astronaut()
    else:
        raise ValueError(f"unknown portrait {name!r}: use 'grace_hopper' or 'astronaut'")
    image.setflags(write=False)
    return image


def portrait(name: str) -> np.ndarray:
    """A public-domain portrait as H x W x 3 uint8 RGB: "grace_hopper" (matplotlib's sample data,
    600 x 512) or "astronaut" (scikit-image, 512 x 512). dlib finds one face in each."""
    return _portrait(name).copy()


def render_face(
    name: str,
    size: tuple[int, int] = MUCT_SIZE,
    *,
    zoom: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    brightness: float = 1.0,
    mirror: bool = False,
) -> np.ndarray:
    """A portrait laid out like a MUCT photo: the face about 200 px wide (times ``zoom``) a little
    above the centre of a ``size`` (width, height) grey canvas, shifted by ``shift`` pixels."""
    source = _portrait(name)
    cx, cy, face_width = _FACE_BOX[name]
    if mirror:
        source = source[:, ::-1]
        cx = source.shape[1] - 1 - cx
    scale = face_width / (_FACE_WIDTH * zoom)  # source pixels per output pixel
    tx, ty = size[0] / 2 + shift[0], size[1] * 0.45 + shift[1]
    coeffs = (scale, 0.0, cx - tx * scale, 0.0, scale, cy - ty * scale)
    image = Image.fromarray(np.ascontiguousarray(source)).transform(
        size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128)
    )
    array = np.asarray(image, dtype=np.float64) * brightness
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def write_muct_photos(folder: str | Path, subjects: int = 4, per_subject: int = 3) -> list[Path]:
    """Write MUCT-named JPEGs ``folder/jpg/i{subject:03d}{lighting}a-{fn|mn}.jpg`` (480 x 640) and
    return their paths. Subjects alternate between the two portraits; each photo gets a seeded
    shift (up to 20 px), scale (0.9-1.1), brightness (0.85-1.15) and a mirror flip half the time.
    Faces are about 180-220 px wide: dlib's HOG detector finds exactly one at upsample 0."""
    if not 1 <= per_subject <= len(_LIGHTINGS):
        raise ValueError(f"per_subject must be 1..{len(_LIGHTINGS)}")
    jpg = Path(folder) / "jpg"
    jpg.mkdir(parents=True, exist_ok=True)
    written = []
    for subject in range(subjects):
        name, tag = (("grace_hopper", "fn"), ("astronaut", "mn"))[subject % 2]
        for k in range(per_subject):
            rng = np.random.default_rng([subject, k])
            rgb = render_face(
                name,
                zoom=rng.uniform(0.9, 1.1),
                shift=(rng.uniform(-20, 20), rng.uniform(-20, 20)),
                brightness=rng.uniform(0.85, 1.15),
                mirror=bool(rng.random() < 0.5),
            )
            path = jpg / f"i{subject:03d}{_LIGHTINGS[k]}a-{tag}.jpg"
            Image.fromarray(rgb).save(path, format="JPEG", quality=92)
            written.append(path)
    return written


def predictor_path() -> str:
    """dlib's 68-point shape predictor shipped in face_recognition_models (found without importing
    it: its pkg_resources import breaks with recent setuptools)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face_recognition_models is not installed")
    return spec.submodule_search_locations[0] + "/models/shape_predictor_68_face_landmarks.dat"


@functools.lru_cache(maxsize=1)
def face_detector():
    """dlib's HOG frontal face detector (made once)."""
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def shape_predictor():
    """dlib's 68-point shape predictor (loaded once, about 1.5 s)."""
    import dlib

    return dlib.shape_predictor(predictor_path())


def dlib_shapes(rgb: np.ndarray, upsample: int = 0) -> list[np.ndarray]:
    """Every face dlib finds in ``rgb`` as a (68, 2) float array."""
    predictor = shape_predictor()
    shapes = []
    for box in face_detector()(rgb, upsample):
        parts = predictor(rgb, box).parts()
        shapes.append(np.array([[p.x, p.y] for p in parts], dtype=np.float64))
    return shapes


def _format_points(points: np.ndarray) -> list[str]:
    values = np.nan_to_num(np.round(points, 1), nan=0.0).ravel()
    return [f"{v:g}" for v in values]


def write_muct_landmarks_csv(path: str | Path, photos: Sequence[str | Path]) -> Path:
    """Write a ``muct76-opencv.csv`` for ``photos``: header ``name,tag,x00,y00,...,x75,y75``, a row
    per photo whose points MUCT shares with dlib (pupils, nose tip, mouth corners) come from
    dlib's landmarks through ``muct.MUCT_TO_DLIB`` (others ``0,0``: not visible), then the mirrored
    ``ir...`` rows. A photo where dlib finds no single face gets no row."""
    header = ["name", "tag"] + [f"{axis}{i:02d}" for i in range(muct.N_POINTS) for axis in "xy"]
    rows, mirrored = [], []
    for photo in sorted(Path(p) for p in photos):
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        shapes = dlib_shapes(rgb)
        if len(shapes) != 1:
            continue
        points = muct.muct_from_dlib(shapes[0])
        rows.append(",".join([photo.stem, "0000", *_format_points(points)]))
        flipped = muct.mirror_muct(points, rgb.shape[1])
        mirrored.append(",".join(["ir" + photo.stem[1:], "0000", *_format_points(flipped)]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(header), *rows, *mirrored]) + "\n")
    return path


class _Zeros(io.RawIOBase):
    """``n`` zero bytes, read in pieces: a huge member streamed, never held in memory."""

    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        k = min(len(buffer), self.left)
        buffer[:k] = bytes(k)
        self.left -= k
        return k


def _write_tar(path: Path, members: Sequence[tuple[tarfile.TarInfo, bytes | int | None]]) -> Path:
    """A deterministic .tar.gz (fixed times and owners), so its SHA-256 is stable. A member's data
    may be an int: that many zero bytes, streamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for info, data in members:
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if isinstance(data, int):
                info.size = data
                tar.addfile(info, io.BufferedReader(_Zeros(data)))
                continue
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file_member(name: str, data: bytes | int) -> tuple[tarfile.TarInfo, bytes | int]:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info, data


def build_archive(path: str | Path, members: Sequence[tuple[str, bytes | int]]) -> Path:
    """A .tar.gz of (name, data) file members, in that order (a name may repeat); an int stands
    for that many zero bytes, streamed (a gzip bomb stays small on disk and in memory)."""
    return _write_tar(Path(path), [_file_member(name, data) for name, data in members])


def build_muct_archives(photo_root: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Pack ``photo_root/jpg/*.jpg`` as ``muct-a-jpg-v1.tar.gz`` (members ``jpg/...``) and, when
    ``photo_root/muct76-opencv.csv`` (or ``photo_root/muct-landmarks/muct76-opencv.csv``) exists,
    ``muct-landmarks-v1.tar.gz`` (member ``muct-landmarks/muct76-opencv.csv``) into ``out_dir``."""
    photo_root, out_dir = Path(photo_root), Path(out_dir)
    jpgs = sorted((photo_root / "jpg").glob("*.jpg"))
    if not jpgs:
        raise FileNotFoundError(f"no photos in {photo_root / 'jpg'}")
    name = muct.camera_archive("a")
    members = [_file_member(f"jpg/{p.name}", p.read_bytes()) for p in jpgs]
    archives = {name: _write_tar(out_dir / name, members)}
    for csv_path in (photo_root / muct.LANDMARKS_CSV, photo_root / "muct-landmarks" / muct.LANDMARKS_CSV):
        if csv_path.is_file():
            member = _file_member(f"muct-landmarks/{muct.LANDMARKS_CSV}", csv_path.read_bytes())
            archives[muct.LANDMARKS_ARCHIVE] = _write_tar(out_dir / muct.LANDMARKS_ARCHIVE, [member])
            break
    return archives


def build_hostile_archive(path: str | Path, kind: str) -> str:
    """Write a .tar.gz holding a harmless ``jpg/ok.jpg`` and then one hostile member; return that
    member's name. Kinds: ``dotdot`` (``../evil``), ``absolute`` (``/etc/x``), ``symlink`` and
    ``hardlink`` (``jpg/link.jpg`` pointing at ``/etc/passwd``), ``device`` (a character device
    ``jpg/null``), ``fifo`` (``jpg/pipe``)."""
    if kind in ("dotdot", "absolute"):
        info, data = _file_member("../evil" if kind == "dotdot" else "/etc/x", b"not a photo\n")
    else:
        names = {"device": "jpg/null", "fifo": "jpg/pipe"}
        info, data = tarfile.TarInfo(names.get(kind, "jpg/link.jpg")), None
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        elif kind == "fifo":
            info.type = tarfile.FIFOTYPE
        else:
            raise ValueError(f"unknown hostile kind {kind!r}: use one of {', '.join(HOSTILE_KINDS)}")
    ok = _file_member("jpg/ok.jpg", _jpeg_bytes(render_face("grace_hopper")))
    _write_tar(Path(path), [ok, (info, data)])
    return info.name


def _blank_png(width: int, height: int) -> bytes:
    """A black 1-bit PNG written row by row: a 20000 x 20000 one is about 50 KB and 0.4 s."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bomb_png(width: int, height: int) -> bytes:
    """A 1-bit PNG of ``width`` x ``height`` white pixels in a few kilobytes: a decompression bomb."""
    return _blank_png(width, height)


def _jpeg_bytes(rgb: np.ndarray, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90, **save)
    return buffer.getvalue()


@contextlib.contextmanager
def serve(
    folder: str | Path,
    *,
    cut_after: int | None = None,
    ignore_range: bool = False,
    fail_first: int = 0,
) -> Iterator[tuple[str, list[tuple[str, str | None, int]]]]:
    """Serve the files of ``folder`` over HTTP on 127.0.0.1 (an ephemeral port) in a thread.

    Yields ``(base_url, log)``; ``log`` collects ``(path, Range header or None, status)`` per request.
    ``Range: bytes=N-`` (or ``N-M``) is answered 206 unless ``ignore_range`` (then 200, the whole
    file). With ``cut_after``, the first full answer for each file declares the whole length but
    the connection closes after ``cut_after`` body bytes. With ``fail_first``, the first that many
    requests for each file get 503. The server shuts down on exit."""
    root = Path(folder).resolve()
    log: list[tuple[str, str | None, int]] = []
    requests_seen: dict[str, int] = {}
    cut_done: set[str] = set()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

        def _answer(self, status: int, headers: dict[str, str], body: bytes = b"", cut: int | None = None):
            with lock:
                log.append((self.path, self.headers.get("Range"), status))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if cut is None else body[:cut])
            self.wfile.flush()
            if cut is not None:
                self.close_connection = True

        def do_GET(self) -> None:
            name = unquote(urlparse(self.path).path).lstrip("/")
            file = (root / name).resolve()
            with lock:
                count = requests_seen.get(name, 0)
                requests_seen[name] = count + 1
            if count < fail_first:
                self._answer(503, {})
                return
            if not file.is_relative_to(root) or not file.is_file():
                self._answer(404, {"Content-Type": "text/plain"}, b"not found\n")
                return
            data = file.read_bytes()
            size, status, start, end = len(data), 200, 0, len(data) - 1
            headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", (self.headers.get("Range") or "").strip())
            if match and not ignore_range:
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
                if start >= size:
                    self._answer(416, {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            cut = None
            with lock:
                if cut_after is not None and name not in cut_done:
                    cut_done.add(name)
                    cut = cut_after
            self._answer(status, headers, data[start : end + 1], cut)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="sample-data-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


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


def write_bad_images(folder: str | Path) -> dict[str, Path]:
    """Write awkward images into ``folder`` and return kind -> path. Unusable: ``zero_byte`` (.jpg),
    ``truncated`` (half a JPEG), ``random_bytes`` (.jpg), ``huge`` (a 20000 x 20000 1-bit PNG of
    about 50 KB, beyond the decompression-bomb guard). Usable but odd: ``grayscale`` (PNG, mode L),
    ``cmyk`` (JPEG), ``rgba`` (PNG with transparency), ``no_face`` (a plain texture), ``two_faces``
    (both portraits side by side, each face about 200 px wide)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "zero_byte": folder / "zero_byte.jpg",
        "truncated": folder / "truncated.jpg",
        "random_bytes": folder / "random_bytes.jpg",
        "grayscale": folder / "grayscale.png",
        "cmyk": folder / "cmyk.jpg",
        "rgba": folder / "rgba.png",
        "huge": folder / "huge.png",
        "no_face": folder / "no_face.jpg",
        "two_faces": folder / "two_faces.jpg",
    }
    face = render_face("grace_hopper")
    paths["zero_byte"].write_bytes(b"")
    whole = _jpeg_bytes(face)
    paths["truncated"].write_bytes(whole[: len(whole) // 2])
    noise = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8)
    paths["random_bytes"].write_bytes(noise.tobytes())
    Image.fromarray(face).convert("L").save(paths["grayscale"])
    Image.fromarray(render_face("astronaut")).convert("CMYK").save(paths["cmyk"], format="JPEG", quality=90)
    alpha = np.broadcast_to(np.linspace(0, 255, face.shape[1], dtype=np.uint8), face.shape[:2])
    rgba = np.dstack([face, alpha])
    Image.fromarray(rgba, "RGBA").save(paths["rgba"])
    paths["huge"].write_bytes(_blank_png(20_000, 20_000))
    y, x = np.mgrid[0:640, 0:480]
    texture = 128 + 60 * np.sin(x / 7.0) * np.cos(y / 11.0)
    Image.fromarray(np.dstack([texture, texture * 0.8, texture * 0.6]).astype(np.uint8)).save(
        paths["no_face"], format="JPEG", quality=90
    )
    pair = np.hstack([render_face("grace_hopper"), render_face("astronaut")])
    Image.fromarray(pair).save(paths["two_faces"], format="JPEG", quality=90)
    return paths


@contextlib.contextmanager
def small_disk(folder: Path, kib: int) -> Iterator[Path]:
    """``folder`` as a tmpfs of ``kib`` KiB, a disk that fills up, unmounted on exit; the test is
    skipped, with the reason, where one can't be mounted (it takes root, or CAP_SYS_ADMIN)."""
    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except OSError as exc:
        pytest.skip(f"can't mount a small tmpfs to fill: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"can't mount a small tmpfs to fill: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], capture_output=True, timeout=30, check=False)


def default_params() -> dict:
    """The committed values of params.yaml as a mapping to change and write as a test's params.yaml:
    the schema's defaults, which tests/test_params.py holds equal to params.yaml, so that a test
    doesn't take what `make repro SOURCE=...` (or `dvc exp run -S`) left in the workspace's copy."""
    from faceswap_ela import params as P

    return P.Params().model_dump(mode="json")


def stage_repo(tmp_path: Path, **data) -> Path:
    """``tmp_path/repo`` holding this project's dvc.yaml and params.yaml, with ``data`` overriding
    params' data section: a folder the download stage runs in."""
    root = Path(__file__).resolve().parents[2]
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy2(root / "dvc.yaml", repo / "dvc.yaml")
    params = default_params()
    params["data"].update(data)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo
