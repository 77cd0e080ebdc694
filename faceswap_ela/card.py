"""A trained model's card (models/<name>/card.json, written by train@ beside model.keras): what
the model needs to be used on a new photo. predict reads it, so a model is fed the input it was
trained on, with the ELA and ROI settings of its own run, not those of the current params.yaml.

Settings beyond the paper's are recorded only when used, so the paper's card stays as it was:
``ela.qualities`` when set, and ``arch`` and ``residual`` for a network other than the paper's CNN
(a card without ``arch`` is the paper's)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import get_args

from pydantic import ValidationError

from faceswap_ela import params as P

CARD = "card.json"
KEYS = ("model", "input", "fakes", "forgers", "seed", "ela", "roi", "precision")


class CardError(ValueError):
    pass


def make(p: P.Params, input_kind: str, fakes: str, seed: int, name: str, precision: str) -> dict:
    """The card of a model trained under ``p``."""
    data = {
        "model": name,
        "input": input_kind,
        "fakes": fakes,
        "forgers": list(P.recipe_forgers(fakes)),
        "seed": int(seed),
        "ela": p.ela.model_dump(
            mode="json", exclude={"workers"} | (set() if p.ela.qualities else {"qualities"})
        ),
        "roi": p.roi.model_dump(mode="json"),
        "precision": precision,
    }
    if p.model.arch != P.ModelParams().arch:
        data.update(p.model.model_dump(mode="json"))
    return data


def path_for(model: str | os.PathLike) -> Path:
    """Where the card of a model file lies: beside it."""
    return Path(model).with_name(CARD)


def read(path: str | os.PathLike) -> dict:
    """The card at ``path``, checked (see ``check``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise CardError(f"can't read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CardError(f"{path} is not JSON: {exc}") from None
    return check(data, str(path))


def check(card: object, where: str) -> dict:
    """A card read from ``where``, checked: its keys, its input kind and precision, and ELA and ROI
    settings that params.py accepts."""
    if not isinstance(card, dict) or (missing := [k for k in KEYS if k not in card]):
        raise CardError(
            f"{where} is not a model card (it lacks {missing if isinstance(card, dict) else list(KEYS)})"
        )
    if card["input"] not in P.INPUTS:
        raise CardError(f"{where}: unknown input {card['input']!r}")
    if card["precision"] not in get_args(P.Precision):
        raise CardError(f"{where}: unknown precision {card['precision']!r}")
    for key, section in (("ela", P.ElaParams), ("roi", P.RoiParams)):
        try:
            section.model_validate(card[key])
        except ValidationError as exc:
            raise CardError(f"{where}: bad {key} settings: {P._format(exc)}") from None
    try:
        arch_settings(card)
    except ValidationError as exc:
        raise CardError(f"{where}: bad network settings: {P._format(exc)}") from None
    return card


def ela_settings(card: dict) -> P.ElaParams:
    return P.ElaParams.model_validate(card["ela"])


def roi_settings(card: dict) -> P.RoiParams:
    return P.RoiParams.model_validate(card["roi"])


def arch_settings(card: dict) -> P.ModelParams:
    """The network of the card (``arch``, ``residual``): the paper's CNN when it names none."""
    return P.ModelParams.model_validate({k: card[k] for k in P.ModelParams.model_fields if k in card})
