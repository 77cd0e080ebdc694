"""What every stage script shares: logging, reading params.yaml, sweeping what an interrupted run
left, and turning expected failures into one line and an exit status (2: bad parameters, 1: bad
or missing input or a full disk, 128 + the signal: interrupted by Ctrl-C or SIGTERM) instead of a
traceback.

A stage that DVC restores from its run cache doesn't run, so it sweeps nothing: a run that left
temporaries (killed outright) followed by repros that restore every stage would keep them for
good. ``python -m faceswap_ela.stage sweep`` (what `make repro` does first) sweeps the workspace
while it holds DVC's repository lock, so that no running `dvc repro` loses its temporaries."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from faceswap_ela import params as P
from faceswap_ela.outputs import disk_full, disk_full_message, sweep_stale

# where the stages write (relative to the repository root, their working directory)
OUTPUT_FOLDERS = ("data", "metrics", "models", "plots")


class StageError(Exception):
    """An expected failure (a missing or bad input), with a one-line reason."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``dvc queue kill``, CI), raised like Ctrl-C so that every clean-up runs."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(run: Callable[[P.Params], object], *, expected: tuple[type[Exception], ...] = ()) -> int:
    """Sweep stale temporaries, load and validate params.yaml, then ``run(params)``; the exit
    status for sys.exit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        for path in sweep_stale(*OUTPUT_FOLDERS):
            logging.info("removed %s, left by an interrupted run", path)
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
        except Exception as exc:
            full = disk_full(exc)  # wherever the stage was writing: an output, the download cache
            if full is None:
                raise
            logging.error("%s", disk_full_message(full))
            return 1
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        logging.error("stopped by %s; no half-written output is left", "SIGTERM" if terminated else "Ctrl-C")
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def sweep_workspace(root: str | Path = ".") -> list[Path]:
    """Remove what interrupted runs left in ``root``'s OUTPUT_FOLDERS, holding DVC's repository lock
    (a dvc.lock.LockError when DVC is running there); return what was removed."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    folders = [Path(root) / folder for folder in OUTPUT_FOLDERS]
    try:
        repo = Repo(str(root))
    except NotDvcRepoError:  # no DVC can be running here
        return sweep_stale(*folders)
    with repo, repo.lock:
        return sweep_stale(*folders)


def _sweep_command() -> int:
    from dvc.lock import LockError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        removed = sweep_workspace()
    except LockError:
        logging.info("DVC is running in this workspace: its temporaries are not swept")
        return 0
    for path in removed:
        logging.info("removed %s, left by an interrupted run", path)
    return 0


def recipe(text: str) -> str:
    """An argparse type: a training recipe (``warp``, ``blend``, ``warp_blend``)."""
    try:
        P.recipe_forgers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def model_arguments(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """``--input {ela,rgb} --fakes RECIPE --seed N``: which model a train@ / evaluate@ matrix stage
    works on."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input", choices=P.INPUTS, required=True, help="the input kind")
    parser.add_argument("--fakes", type=recipe, required=True, help="the training recipe (train.fakes)")
    parser.add_argument("--seed", type=int, required=True, help="the training seed (train.seeds)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if sys.argv[1:] != ["sweep"]:
        sys.exit(f"usage: python -m {__spec__.name} sweep")
    sys.exit(_sweep_command())
