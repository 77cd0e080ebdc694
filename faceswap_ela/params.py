"""params.yaml, read once and validated into typed objects.

An unknown key or a bad value raises ParamsError naming the key, e.g. ``ela.quality``. Types are
strict: a bool or a string is never taken for a number (an int is fine for a float), and no number
may be infinite or NaN. Lists stand for tuples. A duplicate key, an empty file or one that isn't
YAML text is an error naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML, YAMLError

from faceswap_ela import files
from faceswap_ela.fake_params import UNSEEN_SWAP, FakeParams, HeldOutSwap, Section, unique

MAX_BYTES = files.MIB  # a params.yaml is a few KiB: more is no params file


class ParamsError(ValueError):
    pass


Factor = tuple[float, float]
# processes or threads of a stage (0: every core); more than this is a typo, not a machine
Workers = Annotated[int, Field(ge=0, le=1024)]
MAX_ROI = 512  # roi.size's upper bound (see params.yaml)
MAX_BATCH = 1024  # train.batch_size's


class DataParams(Section):
    source: str = "muct"
    muct_url: str = "https://github.com/StephenMilborrow/muct/raw/master/"
    archives: tuple[str, ...] = (
        "muct-a-jpg-v1.tar.gz",
        "muct-b-jpg-v1.tar.gz",
        "muct-c-jpg-v1.tar.gz",
        "muct-d-jpg-v1.tar.gz",
        "muct-e-jpg-v1.tar.gz",
        "muct-landmarks-v1.tar.gz",
    )
    checksums: dict[str, str] = Field(default_factory=dict)
    group_pattern: str = r"^i(\d{3})[a-z]|^([^_]+)_"
    retries: int = Field(5, ge=0, le=100)
    timeout_s: float = Field(60.0, gt=0)  # per read: a server that stays silent this long is retried
    deadline_s: float = Field(3600.0, gt=0)  # one archive's whole download, retries included
    max_download_mib: int = Field(1024, ge=1)  # one archive's download
    max_member_mib: int = Field(64, ge=1)  # the largest file an archive may unpack
    max_unpacked_mib: int = Field(4096, ge=1)  # all of one archive's files together

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name muct, a URL or a folder")
        return v

    @field_validator("checksums")
    @classmethod
    def _checksums(cls, v: dict[str, str]) -> dict[str, str]:
        for name, digest in v.items():
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
                raise ValueError(f"{name}: not a SHA-256 hex digest")
        return {k: d.lower() for k, d in v.items()}

    @field_validator("group_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        try:
            compiled = re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        if compiled.groups < 1:
            raise ValueError("needs at least one capture group")
        return v


class LandmarkParams(Section):
    upsample: int = Field(0, ge=0, le=4)
    max_side: int = Field(640, ge=0)
    multiple_faces: Literal["skip", "largest"] = "skip"
    retry_full_size: bool = True
    workers: Workers = 0


class SplitParams(Section):
    test_fraction: float = Field(0.2, gt=0, lt=1)


class MaterializeParams(Section):
    variants: int = Field(4, ge=2, le=100)  # at least one real and one fake rendering per photo
    # the train split's (0: variants); a number, not null, which DVC's rewrite of params.yaml would blank
    train_variants: int = Field(0, ge=0, le=100)

    @field_validator("train_variants")
    @classmethod
    def _train_variants(cls, v: int) -> int:
        if v == 1:
            raise ValueError("must be 0 (as variants) or 2..100")
        return v

    workers: Workers = 0


class RoiParams(Section):
    dx_max: float = Field(0.125, ge=0, le=1)
    dy_max: float = Field(0.2, ge=0, le=1)
    size: int = Field(128, ge=32, le=MAX_ROI)


class AugmentParams(Section):
    rotation: float = Field(10.0, ge=0, le=180)
    scaling: float = Field(0.1, ge=0, lt=1)
    flip: bool = True
    translation: float = Field(0.05, ge=0, lt=0.5)
    brightness: Factor = (0.8, 1.2)
    contrast: Factor = (0.8, 1.2)
    color: Factor = (0.8, 1.2)
    sharpness: Factor = (0.8, 1.2)
    real_blur: float = Field(0.0, ge=0, le=1)

    @field_validator("brightness", "contrast", "color", "sharpness")
    @classmethod
    def _factor(cls, v: Factor) -> Factor:
        if not 0 < v[0] <= v[1]:
            raise ValueError("must be [low, high] with 0 < low <= high")
        return v


# chroma subsampling as params.yaml writes it (a number: every YAML reader reads 420 alike, while an
# unquoted 4:2:0 is a string to YAML 1.2 and the base-60 integer 14520 to YAML 1.1), and the
# J:a:b name it stands for, which the code uses and model cards written before hold. Dumped (model
# cards, MLflow's parameters, the params hash) it is the number again, as params.yaml has it.
SUBSAMPLING_NAMES = {444: "4:4:4", 422: "4:2:2", 420: "4:2:0"}
SUBSAMPLING_CODES = {name: code for code, name in SUBSAMPLING_NAMES.items()}
Subsampling = Literal["4:4:4", "4:2:2", "4:2:0"]


def _sexagesimal(name: str) -> int:
    hours, minutes, seconds = (int(part) for part in name.split(":"))
    return (hours * 60 + minutes) * 60 + seconds


class ElaParams(Section):
    quality: int = Field(95, ge=1, le=100)
    subsampling: Subsampling = "4:2:0"  # params.yaml: 444 | 422 | 420 (or the quoted name)
    scale: Literal["max", "fixed"] = "max"
    gain: float = Field(20.0, gt=0)
    at: Literal["crop", "photo"] = "crop"
    workers: Workers = 0
    # () : the paper's single ``quality``; else the error levels at each, stacked as channels
    # (last, so that the validator sees ``scale``)
    qualities: tuple[int, ...] = ()

    @field_validator("subsampling", mode="before")
    @classmethod
    def _subsampling(cls, v: object) -> object:
        if isinstance(v, bool) or not isinstance(v, int):
            return v
        if v in SUBSAMPLING_NAMES:
            return SUBSAMPLING_NAMES[v]
        misread = {_sexagesimal(name): (code, name) for code, name in SUBSAMPLING_NAMES.items()}
        if v in misread:
            code, name = misread[v]
            raise ValueError(f"{v} is {name} read as a base-60 number by a YAML 1.1 reader: write {code}")
        raise ValueError(f"must be 444, 422 or 420 (4:4:4, 4:2:2 or 4:2:0), not {v}")

    @field_serializer("subsampling")
    def _subsampling_code(self, v: str) -> int:
        return SUBSAMPLING_CODES[v]

    @field_validator("qualities")
    @classmethod
    def _qualities(cls, v: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        if len(set(v)) != len(v) or any(not 1 <= q <= 100 for q in v):
            raise ValueError("must be distinct JPEG qualities in 1..100 ([]: quality alone)")
        if v and info.data.get("scale", "fixed") != "fixed":
            raise ValueError(
                "needs scale: fixed (the per-image max scaling of each quality hides the curve across them)"
            )
        return v


class ModelParams(Section):
    """The network: the paper's CNN, or a small fully convolutional one with a noise-residual first
    layer (fixed SRM high-pass filters, or Bayar and Stamm's constrained convolution)."""

    arch: Literal["paper", "small"] = "paper"
    residual: Literal["srm", "bayar"] = "srm"


Precision = Literal["auto", "float32", "bfloat16", "float16"]
INPUTS = ("ela", "rgb")
Input = Literal["ela", "rgb"]
FORGERS = ("warp", "blend", "swap")
Forger = Literal["warp", "blend", "swap"]


def recipe_forgers(recipe: str) -> tuple[str, ...]:
    """The forgers of a training recipe: ``warp``, ``blend``, or a mix such as ``warp_blend``."""
    forgers = tuple(recipe.split("_"))
    unknown = [f for f in forgers if f not in FORGERS]
    if unknown or len(set(forgers)) != len(forgers) or not recipe:
        raise ValueError(
            f"{recipe!r} is not a recipe: forgers from {', '.join(FORGERS)} joined by '_', none twice"
        )
    return forgers


class TrainParams(Section):
    inputs: tuple[Input, ...] = INPUTS
    fakes: tuple[str, ...] = ("warp", "blend")
    seeds: tuple[int, ...] = (42,)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(100, ge=1, le=MAX_BATCH)
    lr: float = Field(5e-4, gt=0)
    rho: float = Field(0.9, gt=0, lt=1)
    epsilon: float = Field(1e-8, gt=0)
    patience: int = Field(4, ge=0)
    val_fraction: float = Field(0.15, gt=0, lt=1)
    precision: Precision = "auto"
    pairs: bool = False  # the train split rendered as pairs: each real beside its own fake, one batch

    @field_validator("inputs", "fakes", "seeds")
    @classmethod
    def _listed(cls, v: tuple) -> tuple:
        return unique(v)

    @field_validator("fakes")
    @classmethod
    def _recipes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for recipe in v:
            recipe_forgers(recipe)
        return v

    def forgers(self) -> tuple[str, ...]:
        """Every forger some recipe names, in FORGERS order."""
        named = {f for recipe in self.fakes for f in recipe_forgers(recipe)}
        return tuple(f for f in FORGERS if f in named)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(s < 0 for s in v):
            raise ValueError("seeds must be >= 0")
        return v


class ExtraSetsParams(Section):
    forgers: tuple[Forger, ...] = ("blend", "swap")
    unseen_swap: HeldOutSwap | None = UNSEEN_SWAP  # test_swap_unseen's settings (None: no such set)
    matched_blur: bool = True
    jpeg_qualities: tuple[int, ...] = (100, 95, 90, 80, 70)

    @field_validator("forgers")
    @classmethod
    def _forgers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v) or "warp" in v:
            raise ValueError("must be distinct forgers other than warp (the standard test set is warp's)")
        return v

    @field_validator("jpeg_qualities")
    @classmethod
    def _qualities(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(v)) != len(v) or any(not 1 <= q <= 100 for q in v):
            raise ValueError("must be distinct JPEG qualities in 1..100")
        return v


class EvalParams(Section):
    threshold: float = Field(0.5, gt=0, lt=1)
    bootstrap: int = Field(1000, ge=0, le=100_000)


# `register` is also ABCMeta.register on the class; instances read the field, so the warning is moot
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class TrackingParams(Section):
        experiment: str = Field("faceswap-ela", min_length=1)
        log_model: bool = True
        register: bool = True  # `compare` registers the primary ELA model in MLflow's model registry
        model_name: str = Field("faceswap-ela-cnn", max_length=256)

        @field_validator("model_name")
        @classmethod
        def _model_name(cls, v: str) -> str:
            # what MLflow accepts and what a models:/<name>/<version> URI can name unambiguously
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", v):
                raise ValueError("must be letters, digits, '_', '.' or '-' (starting with a letter or digit)")
            return v


class Params(Section):
    seed: int = Field(42, ge=0)
    data: DataParams = DataParams()
    landmarks: LandmarkParams = LandmarkParams()
    split: SplitParams = SplitParams()
    materialize: MaterializeParams = MaterializeParams()
    fakes: FakeParams = FakeParams()
    roi: RoiParams = RoiParams()
    augment: AugmentParams = AugmentParams()
    testsets: ExtraSetsParams = ExtraSetsParams()
    ela: ElaParams = ElaParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    eval: EvalParams = EvalParams()
    tracking: TrackingParams = TrackingParams()

    @model_validator(mode="after")
    def _held_out(self) -> Params:
        held = self.testsets.unseen_swap
        overlaps = {} if held is None else held.overlaps(self.fakes.swap)
        if overlaps:
            raise ValueError(
                "; ".join(
                    f"testsets.unseen_swap.{axis}: {why} (fakes.swap.{axis})"
                    for axis, why in overlaps.items()
                )
            )
        return self

    @model_validator(mode="after")
    def _both_classes(self) -> Params:
        # materialize draws floor or ceil of fraction x variants fakes per photo (the fractional part
        # by a coin): both at least 1 and at most variants - 1 keeps a real and a fake of every photo,
        # so that no photo, group or split holds a single class (nothing to train or test against)
        # (with train.pairs every train rendering is a real and a fake: only the test split's count)
        counts = {"variants": self.materialize.variants}
        if self.materialize.train_variants and not self.train.pairs:
            counts["train_variants"] = self.materialize.train_variants
        fraction = self.fakes.fraction
        for key, variants in counts.items():
            fakes = fraction * variants
            if not 1 - 1e-9 <= fakes <= variants - 1 + 1e-9:
                raise ValueError(
                    f"fakes.fraction {fraction:g} x materialize.{key} {variants} gives {fakes:g} fakes per "
                    f"photo: it must be 1 to {variants - 1} ({key} - 1), so that every photo gives both "
                    "a real and a fake rendering"
                )
        return self


def repo_root() -> Path:
    """The repository root: DVC_ROOT when DVC runs the stage, else the nearest folder with dvc.yaml."""
    env = os.environ.get("DVC_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists():
            return folder
    return here


def _format(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        value = err.get("input")
        shown = isinstance(value, (bool, int, float, str)) and len(repr(value)) < 60
        got = f" (got {value!r})" if shown else ""
        # a check across sections (Params._both_classes) names its keys in its message
        lines.append(f"{key}: {err['msg']}{got}" if key else err["msg"].removeprefix("Value error, "))
    return "; ".join(lines)


def parse(raw: dict | None, name: str = "params.yaml") -> Params:
    """Validate a params mapping; raise ParamsError naming every bad key."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        raise ParamsError(f"bad {name}: {_format(exc)}") from None


def _yaml_problem(exc: YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def load(path: str | os.PathLike | None = None) -> Params:
    """Read and validate params.yaml (by default the one in the working directory). A missing,
    empty, unreadable or non-text file, one that is no regular file (a FIFO, a device) or over
    MAX_BYTES, bad YAML or a duplicate key raises ParamsError naming it.

    The file is read as YAML 1.2, as DVC reads and rewrites it (`dvc exp run -S` writes values
    unquoted): `4:2:0` is a string, `5e-4` a float, `yes` a string; a key given twice in one
    mapping is an error. Only plain dicts, lists and scalars come out, never Python objects."""
    path = Path(path) if path is not None else Path("params.yaml")
    try:
        text = files.read_regular(path, MAX_BYTES).decode("utf-8")
        raw = YAML(typ="safe", pure=True).load(text)
    except FileNotFoundError:
        raise ParamsError(f"{path} not found") from None
    except IsADirectoryError:
        raise ParamsError(f"{path} is a folder, not a params.yaml file") from None
    except OSError as exc:
        raise ParamsError(f"can't read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ParamsError(f"{path} is not a text file (not UTF-8)") from None
    except YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    if raw is None:
        raise ParamsError(f"{path} is empty: it must hold the pipeline's parameters")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping at the top level")
    return parse(raw, str(path))


def leaves(data: object, prefix: str = "", *, expand_lists: bool = False) -> Iterator[tuple[str, object]]:
    """(``prefix.path.to.leaf``, value) for every leaf of nested mappings: a list is a leaf, or
    with ``expand_lists`` a level keyed 0, 1, ...; an empty mapping below the top is a leaf."""
    if isinstance(data, Mapping) and (data or not prefix):
        for key, item in data.items():
            yield from leaves(item, f"{prefix}.{key}" if prefix else str(key), expand_lists=expand_lists)
    elif expand_lists and isinstance(data, (list, tuple)):
        for i, item in enumerate(data):
            yield from leaves(item, f"{prefix}.{i}" if prefix else str(i), expand_lists=expand_lists)
    else:
        yield prefix, data


def flatten(params: Params) -> dict[str, object]:
    """Every parameter as ``section.key -> value`` (lists and empty mappings as JSON), for tracking."""
    return {
        key: json.dumps(value) if isinstance(value, (list, dict)) else value
        for key, value in leaves(params.model_dump(mode="json"))
    }


def digest(params: Params) -> str:
    """A short, stable hash of every parameter."""
    text = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
