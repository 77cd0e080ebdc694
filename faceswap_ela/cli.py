"""The ``faceswap-ela`` command line. One subcommand so far:

    faceswap-ela predict PATH... [--model NAME|FILE|models:/NAME/latest] [--format table|json|csv]
                                 [--heatmap DIR] [--threshold T] [--rois K] [--params params.yaml]
                                 [--input ela|rgb] [--precision auto|float32|bfloat16|float16]
                                 [--workers N] [--verbose]

prints, for every face found in the photos (folders are walked recursively for .jpg/.jpeg/.png),
the face box, p(fake) and the label at the threshold. The model is used as its card says (input
kind, ELA and ROI settings, precision); a model without a card gets params.yaml's settings and a
warning. Results go to stdout; one line per input that failed, one per heatmap that could not be
written, and a summary, go to stderr.

Exit status: 0 when every input was processed (a photo without a face is processed: it gets a row
with status "no face"), 1 when any input failed (missing, unreadable, truncated, oversized, a
broken or looping link, a FIFO or device, a folder that can't be read), a face got a score that is
no probability (NaN) or a heatmap could not be written, 2 for usage errors (bad arguments, missing
or unloadable model, a bad model card or a flag that contradicts it, bad params.yaml, a --model or
--params that is no regular file, a heatmap folder that can't be written), checked before any photo
is read; 74 (EX_IOERR) when the results could not be written to stdout (a full disk, a closed
stdout: one line on stderr), 141 (128 + SIGPIPE, as a shell reports a tool that SIGPIPE ended)
when stdout's reader went away, quietly.
"""

from __future__ import annotations

import argparse
import errno
import io
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "faceswap-ela"
EXIT_OUTPUT = getattr(os, "EX_IOERR", 74)  # sysexits.h: the results could not be written
EXIT_PIPE = 128 + signal.SIGPIPE  # the reader went away: what a shell reports for a tool SIGPIPE ends


def _whole(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
    return value


def _rois(text: str) -> int:
    return _whole(text, 1)


def _workers(text: str) -> int:
    return _whole(text, 0)


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], not {text!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be in [0, 1], not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Face-swap detection with Error Level Analysis and a CNN (Zhang & Zhao)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict",
        help="score the faces of photos",
        description="Find every face in the photos and print the probability that it was swapped. "
        "Exit status: 0 all inputs processed (a photo with no face counts as processed), "
        "1 some input failed (unreadable, truncated, too large, missing, not a regular file, "
        "a folder that can't be read, a face the model scored NaN) or a heatmap could not be written, "
        "2 usage error, 74 the results could not be written to stdout, 141 stdout's reader went away.",
    )
    predict.add_argument("paths", nargs="+", metavar="PATH", help="photos, or folders to walk recursively")
    predict.add_argument(
        "--model", metavar="M",
        help="a pipeline model's name (ela-blend-s42: <repo root>/models/NAME/model.keras), a Keras "
        "file, or a registered model: models:/NAME/latest, models:/NAME/VERSION, models:/NAME@ALIAS "
        "(default: the paper's ELA-CNN, ela-warp-s<first of train.seeds>)",
    )  # fmt: skip
    predict.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    predict.add_argument("--heatmap", type=Path, metavar="DIR", help="write crop + ELA PNGs per face here")
    predict.add_argument(
        "--threshold", type=_threshold, metavar="T",
        help="p(fake) at or above which a face is fake (default: params.yaml eval.threshold)",
    )  # fmt: skip
    predict.add_argument(
        "--rois", type=_rois, default=1, metavar="K",
        help="score the mean over K seeded random ROIs instead of the centred one (default: 1)",
    )  # fmt: skip
    predict.add_argument(
        "--params", type=Path, metavar="FILE",
        help="params.yaml for the landmarks, the threshold and the seed, and for the ELA and ROI "
        "settings of a model without a card (default: <repo root>/params.yaml)",
    )  # fmt: skip
    predict.add_argument(
        "--input", choices=("ela", "rgb"),
        help="what the model takes: ELA images or RGB crops (default: its card's, else ela); "
        "one that contradicts the card is an error",
    )  # fmt: skip
    predict.add_argument(
        "--precision", choices=("auto", "float32", "bfloat16", "float16"),
        help="numeric precision of the forward pass (default: params.yaml train.precision, for this machine)",
    )  # fmt: skip
    predict.add_argument(
        "--workers", type=_workers, default=0, metavar="N",
        help="processes that read the photos and find their faces (default: 0, every core; a few "
        "photos are read in this process); the output is the same whatever N",
    )  # fmt: skip
    predict.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    predict.add_argument(
        "--verbose", action="store_true",
        help="name the model's settings and the precision used; let TensorFlow's start-up messages through",
    )  # fmt: skip
    return parser


def _say(kind: str, message: str) -> None:
    """One line on stderr, file names in it printable (see predict.printable)."""
    from faceswap_ela.predict import printable

    print(f"{PROG}: {kind}: {printable(message)}", file=sys.stderr)


def _error(message: str) -> None:
    _say("error", message)


def _drop_stdout() -> None:
    """Point file descriptor 1 at /dev/null, so that what is still buffered for stdout is not
    written again (and failed again, with Python's own message and status 120) at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # no stdout, or none with a file descriptor
        pass


def write_results(text: str) -> int | None:
    """Write ``text`` to stdout: None when it was, else the exit status. A reader that went away
    (``| head``: EPIPE) ends the command quietly with EXIT_PIPE, as SIGPIPE ends other tools; any
    other failure (a full disk, a closed stdout) gets one line on stderr and EXIT_OUTPUT: the
    results are lost or cut short, which exit status 1 (some input failed) would not say. A
    character that stdout's encoding lacks (PYTHONIOENCODING=ascii) is written as an escape."""
    try:
        if sys.stdout is None:  # started with file descriptor 1 closed
            raise OSError(errno.EBADF, "stdout is closed")
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(errors="backslashreplace")
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_PIPE
    except OSError as exc:
        _drop_stdout()
        _error(f"can't write the results to stdout: {exc.strerror or exc}")
        return EXIT_OUTPUT
    return None


def run_predict(args: argparse.Namespace) -> int:
    from faceswap_ela import params as P
    from faceswap_ela import predict

    params_path = args.params if args.params is not None else P.repo_root() / "params.yaml"
    try:
        params = P.load(params_path)
        predictor = predict.Predictor(
            params,
            args.model,
            threshold=args.threshold,
            rois=args.rois,
            verbose=args.verbose,
            precision=args.precision,
            input_kind=args.input,
        )
        predictor.load()  # a file that is no model fails here, before the card's warning
        if predictor.warning:
            _say("warning", predictor.warning)
        if args.verbose:
            print(f"{PROG}: {predict.printable(predictor.settings())}", file=sys.stderr)
        rows = predictor.predict(
            args.paths, heatmap_dir=args.heatmap, progress=args.progress, workers=args.workers
        )
        if args.verbose and predictor.precision_choice is not None:
            choice = predictor.precision_choice
            print(
                f"{PROG}: precision {choice.precision} ({choice.reason}) on {choice.device}", file=sys.stderr
            )
    except (P.ParamsError, predict.PredictError) as exc:
        _error(str(exc))
        return 2
    status = write_results(predict.render(rows, args.format))
    if status is not None:
        return status
    failed = [row for row in rows if row.failed]
    for row in failed:
        _error(f"{row.photo}{'' if row.face is None else f' face {row.face}'}: {row.error}")
    for problem in predictor.heatmap_errors:
        _error(problem)
    faces = [row for row in rows if row.status == predict.OK]
    n_fake = sum(row.label == "fake" for row in faces)
    photos = len({row.photo for row in rows})
    no_face = sum(row.status == predict.NO_FACE for row in rows)
    print(
        f"{photos} photo(s): {len(faces)} face(s) scored ({n_fake} fake, {len(faces) - n_fake} real "
        f"at threshold {predictor.threshold:g}), {no_face} without a face, {len(failed)} failed"
        + (f", {len(predictor.heatmap_errors)} heatmap(s) not written" if predictor.heatmap_errors else ""),
        file=sys.stderr,
    )
    return 1 if failed or predictor.heatmap_errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``faceswap-ela`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "predict":
        return run_predict(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
