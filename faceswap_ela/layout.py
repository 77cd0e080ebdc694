"""Where the pipeline keeps its files, relative to the repository root: each stage's outputs, and
each trained model's files. One model per input kind, training recipe and seed, named
``<input>-<recipe>-s<seed>`` (``ela-warp-s42``, ``ela-blend-s42``), as DVC's train@/evaluate@
matrix stages are (``train@ela-warp-42``). dvc.yaml declares the same paths."""

from __future__ import annotations

from pathlib import Path

from faceswap_ela.params import Params
from faceswap_ela.testsets import PAPER_FORGER

# download: the photos with their manifest
RAW = Path("data/raw")
MANIFEST = RAW / "manifest.csv"
DOWNLOAD_METRICS = Path("metrics/download.json")
# landmarks: 68 points per photo, and the photos without them
LANDMARKS = Path("data/landmarks.csv")
LANDMARK_REJECTS = Path("data/landmark_rejects.csv")
LANDMARKS_METRICS = Path("metrics/landmarks.json")
# split: train or test per photo
SPLIT = Path("data/split.csv")
SPLIT_METRICS = Path("metrics/split.json")
# materialize: the crops of every set
TEMPLATE = Path("data/template.json")
CROPS = Path("data/crops")
MATERIALIZE_METRICS = Path("metrics/materialize.json")
# ela: the models' inputs (ELA and RGB arrays per set)
ELA_DIR = Path("data/ela")
GALLERY = Path("plots/gallery.png")
# compare: the tables, the headline and the plots
COMPARE_JSON = Path("metrics/compare.json")
COMPARE_MD = Path("metrics/compare.md")
EVAL_JSON = Path("metrics/eval.json")
CROSS_FORGER_CSV, CROSS_FORGER_PNG = Path("plots/cross_forger.csv"), Path("plots/cross_forger.png")
ROC_CSV, ROC_PNG = Path("plots/roc.csv"), Path("plots/roc.png")
CONFUSION_CSV, CONFUSION_PNG = Path("plots/confusion.csv"), Path("plots/confusion.png")
CURVES_CSV, CURVES_PNG = Path("plots/curves.csv"), Path("plots/curves.png")
ROBUSTNESS_CSV, ROBUSTNESS_PNG = Path("plots/robustness.csv"), Path("plots/robustness.png")


def model_name(input_kind: str, fakes: str, seed: int) -> str:
    return f"{input_kind}-{fakes}-s{int(seed)}"


def model_file(name: str) -> Path:
    return Path("models") / name / "model.keras"


def run_file(name: str) -> Path:
    return Path("models") / name / "run.json"


def card_file(name: str) -> Path:
    """What a model needs to be used: its input, recipe, ELA and ROI settings, precision."""
    return Path("models") / name / "card.json"


def train_metrics(name: str) -> Path:
    return Path("metrics/train") / f"{name}.json"


def history_file(name: str) -> Path:
    return Path("plots/history") / f"{name}.csv"


def eval_metrics(name: str) -> Path:
    return Path("metrics/eval") / f"{name}.json"


def predictions_file(name: str) -> Path:
    return Path("data/predictions") / f"{name}.csv"


def baseline_name(fakes: str) -> str:
    return f"baseline-{fakes}"


def baseline_predictions(fakes: str) -> Path:
    return predictions_file(baseline_name(fakes))


def baseline_metrics(fakes: str) -> Path:
    return Path("metrics/baseline") / f"{fakes}.json"


GHOST = "ghost"  # the untrained JPEG-ghost score's row in the comparison


def ghost_predictions(fakes: str) -> Path:
    """The JPEG-ghost scores the baseline stage of a recipe writes (the same for every recipe: the
    score is untrained; the header alone without two ELA qualities)."""
    return predictions_file(f"{GHOST}-{fakes}")


def model_names(p: Params) -> list[tuple[str, str, int, str]]:
    """(input, recipe, seed, name) of every model the parameters ask for, in params order:
    inputs, then recipes, then seeds."""
    return [
        (kind, fakes, seed, model_name(kind, fakes, seed))
        for kind in p.train.inputs
        for fakes in p.train.fakes
        for seed in p.train.seeds
    ]


def primary_recipe(p: Params) -> str:
    """The paper's recipe (warp) when it is trained, else the first."""
    return PAPER_FORGER if PAPER_FORGER in p.train.fakes else p.train.fakes[0]


def primary(p: Params) -> str:
    """The model the headline metrics and `faceswap-ela predict` use: the ELA model of the paper's
    recipe and the first seed (the first input kind's when ela is not trained)."""
    kind = "ela" if "ela" in p.train.inputs else p.train.inputs[0]
    return model_name(kind, primary_recipe(p), p.train.seeds[0])
