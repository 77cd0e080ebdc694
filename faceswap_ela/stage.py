"""What every stage script shares: logging, reading params.yaml, and turning expected failures
into one line and an exit status (2: bad parameters, 1: bad or missing input) instead of a
traceback."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from faceswap_ela import params as P


class StageError(Exception):
    """An expected failure (a missing or bad input), with a one-line reason."""


def main(run: Callable[[P.Params], object], *, expected: tuple[type[Exception], ...] = ()) -> int:
    """Load and validate params.yaml, then ``run(params)``; the exit status for sys.exit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        params = P.load("params.yaml")
    except P.ParamsError as exc:
        logging.error("%s", exc)
        return 2
    try:
        run(params)
    except (StageError, *expected) as exc:
        logging.error("%s", exc)
        return 1
    return 0


def model_arguments(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """``--input {ela,rgb} --seed N``: which model a train@ / evaluate@ matrix stage works on."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input", choices=P.INPUTS, required=True, help="the input kind")
    parser.add_argument("--seed", type=int, required=True, help="the training seed (train.seeds)")
    return parser.parse_args(argv)
