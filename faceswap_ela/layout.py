"""Where the pipeline keeps each trained model's files: one model per input kind and seed, named
``<input>-s<seed>`` (``ela-s42``), the names of DVC's train@/evaluate@ matrix stages."""

from __future__ import annotations

from pathlib import Path

from faceswap_ela.params import Params


def model_name(input_kind: str, seed: int) -> str:
    return f"{input_kind}-s{int(seed)}"


def model_file(name: str) -> Path:
    return Path("models") / name / "model.keras"


def run_file(name: str) -> Path:
    return Path("models") / name / "run.json"


def train_metrics(name: str) -> Path:
    return Path("metrics/train") / f"{name}.json"


def history_file(name: str) -> Path:
    return Path("plots/history") / f"{name}.csv"


def eval_metrics(name: str) -> Path:
    return Path("metrics/eval") / f"{name}.json"


def predictions_file(name: str) -> Path:
    return Path("data/predictions") / f"{name}.csv"


def model_names(p: Params) -> list[tuple[str, int, str]]:
    """(input, seed, name) of every model the parameters ask for, inputs first, in params order."""
    return [(kind, seed, model_name(kind, seed)) for kind in p.train.inputs for seed in p.train.seeds]


def primary(p: Params) -> str:
    """The model the headline metrics and `faceswap-ela predict` use: the ELA model of the first
    seed (the first input kind's when ela is not trained)."""
    kind = "ela" if "ela" in p.train.inputs else p.train.inputs[0]
    return model_name(kind, p.train.seeds[0])
