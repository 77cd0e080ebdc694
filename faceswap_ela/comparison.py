"""The comparison of the trained models (ELA-CNN, RGB-CNN, one per seed) and the baseline on every
test set: the paper's Table 2 beside ours, AUC with mean +- sd over seeds and 95% bootstrap
intervals over test photos, the ELA-minus-RGB difference, and the robustness to re-saved JPEGs.

Every model is scored on the same crops of each test set, so one set of bootstrap weights (test
photos drawn with replacement) serves all of them and the differences are paired.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tabulate

from faceswap_ela import evaluation, layout
from faceswap_ela.params import INPUTS
from faceswap_ela.testsets import MATCHED, TEST, jpeg_quality, set_order

BASELINE = "baseline"
LABELS = {"ela": "ELA-CNN", "rgb": "RGB-CNN", BASELINE: "sharpness baseline"}
MIB = 2**20
ELA_MINUS_RGB = "ela_minus_rgb"

# Table 2 of Zhang & Zhao, as quoted in METHOD.md (multiply-adds: the paper's "GFLOPs (forward pass)")
PAPER_COLUMNS = ("model", "input", "params", "size_mb", "gmacs", "epochs", "auc")
PAPER_ROWS = tuple(
    dict(zip(PAPER_COLUMNS, row, strict=True))
    for row in (
        ("ELA-CNN (paper)", "ELA", 2.95e7, 225, 0.44, 9, 0.976),
        ("VGG16 (paper)", "RGB", 1.38e8, 528, 15.5, 100, 0.833),
        ("ResNet50 (paper)", "RGB", 2.56e7, 98, 3.9, 20, 0.954),
        ("ResNet101 (paper)", "RGB", 4.46e7, 542, 7.6, 20, 0.951),
        ("ResNet152 (paper)", "RGB", 6.03e7, 736, 11.3, 20, 0.938),
    )
)


class ComparisonError(ValueError):
    """A model's or the baseline's file is missing or unreadable."""


@dataclass(frozen=True)
class ModelResult:
    """One trained model: its input kind, seed, train metrics, history and test predictions."""

    input: str
    seed: int
    train: Mapping[str, object]
    history: pd.DataFrame
    predictions: pd.DataFrame  # evaluation.PREDICTION_COLUMNS, every test set

    @property
    def name(self) -> str:
        return layout.model_name(self.input, self.seed)


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """A predictions file (evaluation.PREDICTION_COLUMNS); ComparisonError when it is missing or
    lacks a column."""
    path = Path(path)
    if not path.is_file():
        raise ComparisonError(f"{path} not found: run the stage that writes it first")
    frame = pd.read_csv(path, dtype={"crop_id": str, "photo_id": str, "set": str}, keep_default_na=False)
    missing = set(evaluation.PREDICTION_COLUMNS) - set(frame.columns)
    if missing:
        raise ComparisonError(f"{path} lacks columns {sorted(missing)}")
    return frame


def load_model_result(input_kind: str, seed: int) -> ModelResult:
    """One trained model's train metrics, history and predictions, from the files ``layout``
    names; ComparisonError when one is missing or unreadable."""
    name = layout.model_name(input_kind, seed)
    try:
        train = json.loads(layout.train_metrics(name).read_text())
        history = pd.read_csv(layout.history_file(name))
    except (OSError, ValueError) as exc:
        raise ComparisonError(f"model {name}: {exc}") from None
    predictions = read_predictions(layout.predictions_file(name))
    return ModelResult(input_kind, seed, train, history, predictions)


@dataclass(frozen=True)
class Auc:
    """One model kind's AUC on one test set: mean and sd over seeds, per seed, and the 95% bootstrap
    interval of the seed mean over test photos."""

    auc_mean: float | None
    auc_sd: float | None
    auc_per_seed: list[float | None]
    ci95: list[float] | None

    @classmethod
    def of(cls, aucs: Sequence[float | None], boot: np.ndarray | None) -> Auc:
        valid = [a for a in aucs if a is not None]
        return cls(
            round(float(np.mean(valid)), 4) if valid else None,
            round(_sd(valid), 4) if valid else None,
            [None if a is None else round(a, 4) for a in aucs],
            None if boot is None else evaluation.interval(boot),
        )

    def text(self) -> str:
        if self.auc_mean is None:
            return "n/a"
        return _cell(self.auc_mean, self.auc_sd if len(self.auc_per_seed) > 1 else None, self.ci95)


@dataclass(frozen=True)
class Difference:
    """A paired difference of seed-mean AUC on one test set; for ELA - RGB also the verdict and the
    difference of each seed's two models."""

    diff: float
    ci95: list[float] | None
    verdict: str | None = None
    diff_per_seed: dict[str, float] | None = None
    diff_sd: float | None = None
    seeds_ela_ahead: int | None = None

    def to_json(self) -> dict:
        doc = dataclasses.asdict(self)
        return doc if self.verdict is not None else {"diff": self.diff, "ci95": self.ci95}

    def text(self) -> str:
        return _cell(self.diff, self.diff_sd if len(self.diff_per_seed or {}) > 1 else None, self.ci95, "+")


@dataclass(frozen=True)
class InputSummary:
    """One input kind over its seeds: cost, training speed and AUC on every test set."""

    label: str
    seeds: list[int]
    params: object
    multiply_adds: object
    size_mib: float | None
    best_epoch: float | None
    epochs_run: float | None
    epochs_to_95pct_val_accuracy: float | None
    samples_per_s: float | None
    sets: dict[str, Auc]

    @classmethod
    def of(cls, kind: str, runs: Sequence[ModelResult]) -> InputSummary:
        train = runs[0].train
        return cls(
            label=LABELS.get(kind, kind),
            seeds=[m.seed for m in runs],
            params=train.get("params"),
            multiply_adds=train.get("multiply_adds"),
            size_mib=round(float(train["model_bytes"]) / MIB, 1) if train.get("model_bytes") else None,
            best_epoch=_mean([m.train.get("best_epoch") for m in runs]),
            epochs_run=_mean([m.train.get("epochs_run") for m in runs]),
            epochs_to_95pct_val_accuracy=_mean(
                [evaluation.epochs_to_fraction(m.history["val_accuracy"]) for m in runs]
            ),
            samples_per_s=_mean([m.train.get("samples_per_s") for m in runs]),
            sets={},
        )


@dataclass(frozen=True)
class Comparison:
    """Every input kind and the baseline on every test set (``sets``, in ``set_order``), the paired
    differences by set and pair (``ela_minus_rgb``, ``<kind>_minus_baseline``), the bootstrap's
    settings and the paper's rows."""

    inputs: dict[str, InputSummary]
    baseline: dict[str, Auc]
    differences: dict[str, dict[str, Difference]]
    sets: list[str]
    bootstrap: dict
    paper: list[dict]

    def auc(self, model: str, set_name: str) -> Auc | None:
        """The AUC of an input kind, or of the baseline (``BASELINE``), on one test set."""
        sets = self.baseline if model == BASELINE else self.inputs[model].sets
        return sets.get(set_name)

    def to_json(self) -> dict:
        """compare.json's document."""
        return {
            "inputs": {kind: dataclasses.asdict(entry) for kind, entry in self.inputs.items()},
            "baseline": {"sets": {name: dataclasses.asdict(auc) for name, auc in self.baseline.items()}},
            "differences": {
                name: {pair: item.to_json() for pair, item in pairs.items()}
                for name, pairs in self.differences.items()
            },
            "sets": list(self.sets),
            "bootstrap": dict(self.bootstrap),
            "paper": [dict(row) for row in self.paper],
        }

    def tracked(self) -> dict[str, dict]:
        """The parts of compare.json logged to MLflow, by metric prefix."""
        doc = self.to_json()
        return {
            "compare": doc["inputs"],
            "compare.baseline": doc["baseline"],
            "compare.diff": doc["differences"],
        }


def _cell(value: float, sd: float | None, ci: list[float] | None, sign: str = "") -> str:
    """A table cell: the value, then ± sd when given, then [interval] when there is one."""
    text = f"{value:{sign}.3f}"
    if sd is not None:
        text += f" ± {sd:.3f}"
    if ci:
        text += f" [{ci[0]:{sign}.3f}, {ci[1]:{sign}.3f}]"
    return text


def _scores(frame: pd.DataFrame, set_name: str, crops: np.ndarray, who: str) -> np.ndarray:
    rows = frame[frame["set"] == set_name]
    if not np.array_equal(rows["crop_id"].to_numpy(dtype=str), crops):
        raise ValueError(f"{who}: the crops of {set_name} differ from the other models'")
    return rows["p_fake"].to_numpy(dtype=np.float64)


def _sd(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _mean(values: Sequence[object]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return round(float(np.mean(numbers)), 2) if numbers else None


def _verdict(ci: list[float] | None) -> str:
    if ci is None:
        return "undetermined"
    if ci[0] > 0:
        return "ELA better"
    if ci[1] < 0:
        return "RGB better"
    return "no difference shown"


def compare(
    models: Sequence[ModelResult],
    baseline: pd.DataFrame | None,
    *,
    resamples: int,
    seed: int,
    threshold: float = 0.5,
) -> Comparison:
    """compare.json: per input kind its cost, training speed and AUC on every test set (mean, sd
    over seeds, per seed, 95% bootstrap interval of the seed-mean over test photos), the same for
    the baseline, the paired ELA - RGB and CNN - baseline differences, and the paper's rows."""
    if not models:
        raise ValueError("no trained models to compare")
    runs = {kind: [m for m in models if m.input == kind] for kind in dict.fromkeys(m.input for m in models)}
    first = models[0].predictions
    sets = set_order(first["set"].unique())
    inputs = {kind: InputSummary.of(kind, kind_runs) for kind, kind_runs in runs.items()}
    base_aucs: dict[str, Auc] = {}
    differences = {}
    for set_name in sets:
        reference = first[first["set"] == set_name]
        crops = reference["crop_id"].to_numpy(dtype=str)
        labels = reference["label"].to_numpy(dtype=np.int64)
        photos = reference["photo_id"].to_numpy(dtype=str)
        weights = evaluation.photo_weights(photos, resamples, seed) if resamples else None
        scores = {
            kind: [_scores(m.predictions, set_name, crops, m.name) for m in kind_runs]
            for kind, kind_runs in runs.items()
        }
        if baseline is not None:
            scores[BASELINE] = [_scores(baseline, set_name, crops, BASELINE)]
        boot_means: dict[str, np.ndarray] = {}
        for kind, kind_scores in scores.items():
            aucs = [evaluation.evaluate(labels, s, threshold)["roc_auc"] for s in kind_scores]
            if weights is not None:
                boot_means[kind] = np.mean(
                    [evaluation.weighted_aucs(labels, s, weights) for s in kind_scores], axis=0
                )
            auc = Auc.of(aucs, boot_means.get(kind))
            if kind == BASELINE:
                base_aucs[set_name] = auc
            else:
                inputs[kind].sets[set_name] = auc
        differences[set_name] = _differences(inputs, base_aucs, set_name, boot_means)
    bootstrap = {
        "resamples": resamples,
        "unit": "test photo",
        "photos": int(first[first["set"] == TEST]["photo_id"].nunique()) if TEST in sets else None,
        "level": 0.95,
    }
    return Comparison(inputs, base_aucs, differences, sets, bootstrap, list(PAPER_ROWS))


def _differences(
    inputs: Mapping[str, InputSummary],
    base: Mapping[str, Auc],
    set_name: str,
    boots: Mapping[str, np.ndarray],
) -> dict[str, Difference]:
    """Paired differences of seed-mean AUC: ELA - RGB (also per seed), and each CNN - baseline."""
    pairs = [("ela", "rgb")] if {"ela", "rgb"} <= set(inputs) else []
    if base:
        pairs += [(kind, BASELINE) for kind in inputs]
    out = {}
    for a, b in pairs:
        auc_a = inputs[a].sets[set_name]
        auc_b = base[set_name] if b == BASELINE else inputs[b].sets[set_name]
        if auc_a.auc_mean is None or auc_b.auc_mean is None:
            continue
        diff = round(auc_a.auc_mean - auc_b.auc_mean, 4)
        ci = evaluation.interval(boots[a] - boots[b]) if a in boots and b in boots else None
        if (a, b) == ("ela", "rgb"):
            out[ELA_MINUS_RGB] = Difference(diff, ci, _verdict(ci), **_per_seed_differences(inputs, set_name))
        else:
            out[f"{a}_minus_{b}"] = Difference(diff, ci)
    return out


def _per_seed_differences(inputs: Mapping[str, InputSummary], set_name: str) -> dict:
    """ELA - RGB for each seed both inputs were trained with (the same seed's two models)."""
    per_input = {
        kind: dict(zip(inputs[kind].seeds, inputs[kind].sets[set_name].auc_per_seed, strict=True))
        for kind in ("ela", "rgb")
    }
    diffs = {
        str(seed): round(auc - per_input["rgb"][seed], 4)
        for seed, auc in per_input["ela"].items()
        if auc is not None and per_input["rgb"].get(seed) is not None
    }
    values = list(diffs.values())
    return {
        "diff_per_seed": diffs,
        "diff_sd": round(_sd(values), 4) if values else None,
        "seeds_ela_ahead": sum(v > 0 for v in values),
    }


def headline(result: Comparison, primary: ModelResult, primary_metrics: Mapping[str, object]) -> dict:
    """metrics/eval.json: the primary model's test metrics (accuracy, AUC, precision, recall, F1,
    confusion matrix), the seed-mean AUC of each input kind, and the baseline's AUC and margin, on
    the standard and the sharpness-matched test sets."""
    out = {"model": primary.name, **primary_metrics}
    for set_name, prefix in ((TEST, ""), (MATCHED, "matched_")):
        if set_name not in result.sets:
            continue
        for kind, entry in result.inputs.items():
            out[f"{prefix}{kind}_auc_mean"] = entry.sets[set_name].auc_mean
        base = result.baseline.get(set_name)
        if base is not None:
            out[f"{prefix}baseline_auc"] = base.auc_mean
            primary_auc = result.inputs[primary.input].sets[set_name].auc_mean
            if primary_auc is not None and base.auc_mean is not None:
                out[f"{prefix}margin_over_baseline"] = round(primary_auc - base.auc_mean, 4)
    return out


def curves(models: Sequence[ModelResult]) -> pd.DataFrame:
    """Per epoch, each input kind's training and validation accuracy and loss (mean over the seeds
    that ran that epoch): epoch, <input>_accuracy, <input>_val_accuracy, <input>_loss, ... Every
    kind of ``INPUTS`` has its columns, empty where it was not trained, so that plot definitions
    naming them hold for any ``train.inputs``."""
    longest = max((len(m.history) for m in models), default=0)
    frame = pd.DataFrame({"epoch": np.arange(1, longest + 1)})
    for kind in INPUTS:
        runs = [m.history.set_index("epoch") for m in models if m.input == kind]
        for metric in ("accuracy", "val_accuracy", "loss", "val_loss"):
            if not runs:
                frame[f"{kind}_{metric}"] = np.nan
                continue
            stacked = pd.concat([h[metric] for h in runs], axis=1).reindex(frame["epoch"])
            frame[f"{kind}_{metric}"] = stacked.mean(axis=1, skipna=True).round(6).to_numpy()
    return frame


def robustness(result: Comparison) -> pd.DataFrame:
    """AUC per JPEG quality the test photos were re-saved at: quality, <kind>_auc (seed mean) for
    every kind of ``INPUTS`` (empty where it was not trained), baseline_auc."""
    columns = ["quality", *(f"{kind}_auc" for kind in INPUTS), "baseline_auc"]
    rows = []
    for set_name in result.sets:
        quality = jpeg_quality(set_name)
        if quality is None:
            continue
        row = {"quality": quality}
        for kind, entry in result.inputs.items():
            row[f"{kind}_auc"] = entry.sets[set_name].auc_mean
        if set_name in result.baseline:
            row["baseline_auc"] = result.baseline[set_name].auc_mean
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def roc_points(predictions: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(false positive rate, true positive rate) of the ROC curve on the test set."""
    rows = predictions[predictions["set"] == TEST]
    table = evaluation.roc_table(rows["label"].to_numpy(), rows["p_fake"].to_numpy())
    return table["fpr"], table["tpr"]


def roc_curves(
    result: Comparison, models: Sequence[ModelResult], baseline: pd.DataFrame | None, seed: int
) -> dict[str, tuple[pd.Series, pd.Series]]:
    """The test-set ROC curves of the models trained with ``seed`` and of the baseline (when
    given), by legend label: "<input label> <model> (AUC <test AUC>)"."""
    curves = {}
    for m in (m for m in models if m.seed == seed):
        auc = number(result.auc(m.input, TEST).auc_per_seed[0], 3)
        curves[f"{LABELS[m.input]} {m.name} (AUC {auc})"] = roc_points(m.predictions)
    if baseline is not None:
        auc = number(result.auc(BASELINE, TEST).auc_mean, 3)
        curves[f"{LABELS[BASELINE]} (AUC {auc})"] = roc_points(baseline)
    return curves


def number(value: object, digits: int = 1) -> str:
    """A table cell: "n/a" for None, a float to ``digits`` places, anything else as it is."""
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else f"{value}"


# GitHub's pipe table with every cell as it is: no padding, no alignment, "---" under each header
_MARKDOWN = tabulate.TableFormat(
    lineabove=None,
    linebelowheader=lambda widths, aligns: "|" + "|".join(" --- " for _ in widths) + "|",
    linebetweenrows=None,
    linebelow=None,
    headerrow=tabulate.DataRow("|", "|", "|"),
    datarow=tabulate.DataRow("|", "|", "|"),
    padding=1,
    with_header_hide=None,
)


def _table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(
        index=False, tablefmt=_MARKDOWN, stralign=None, numalign=None, disable_numparse=True
    )


def cost_table(result: Comparison) -> pd.DataFrame:
    """Cost, training speed and test AUC of each input kind, the baseline and the paper's models."""
    rows = [
        (
            f"{entry.label} (seeds {', '.join(map(str, entry.seeds))})", f"{entry.params:,}",
            f"{entry.multiply_adds / 1e9:.3f}", number(entry.size_mib), number(entry.best_epoch),
            number(entry.epochs_to_95pct_val_accuracy), _auc_text(entry.sets.get(TEST)),
        )
        for entry in result.inputs.values()
    ]  # fmt: skip
    if result.baseline:
        label = f"{LABELS[BASELINE]} (logistic regression, 5 features)"
        rows.append((label, "6", "~0", "~0", "–", "–", _auc_text(result.baseline.get(TEST))))
    rows += [
        (row["model"], f"{row['params']:.3g}", f"{row['gmacs']}", f"{row['size_mb']} (MB)", "–",
         f"{row['epochs']} (trained)", f"{row['auc']:.3f}")
        for row in result.paper
    ]  # fmt: skip
    header = ["Model", "Params", "Mult-adds / sample (G)", "Size (MiB)", "Best epoch",
              "Epochs to 95% of best val acc", "Test AUC"]  # fmt: skip
    return pd.DataFrame(rows, columns=header)


def auc_table(result: Comparison) -> pd.DataFrame:
    """AUC of each input kind and the baseline on every test set, then the paired differences (rows
    that have one at least): the long form (row, set, cell) pivoted to one column per set."""
    cells = [
        (entry.label, name, _auc_text(entry.sets.get(name)))
        for entry in result.inputs.values()
        for name in result.sets
    ]
    if result.baseline:
        cells += [(LABELS[BASELINE], name, _auc_text(result.baseline.get(name))) for name in result.sets]
    pairs = [ELA_MINUS_RGB, "ela_minus_baseline", "rgb_minus_baseline"]
    for pair in pairs:
        items = [result.differences.get(name, {}).get(pair) for name in result.sets]
        if any(items):
            label = pair.replace("_minus_", " − ").upper().replace("BASELINE", "baseline")
            cells += [
                (label, name, "n/a" if item is None else item.text())
                for name, item in zip(result.sets, items, strict=True)
            ]
    long = pd.DataFrame(cells, columns=["Model", "set", "cell"])
    order = list(dict.fromkeys(long["Model"]))
    wide = long.pivot(index="Model", columns="set", values="cell").reindex(index=order, columns=result.sets)
    return wide.rename_axis(columns=None).reset_index()


def _auc_text(auc: Auc | None) -> str:
    return "n/a" if auc is None else auc.text()


def markdown(result: Comparison) -> str:
    """compare.md: the cost and AUC beside the paper, the AUC per test set with the differences,
    and one sentence on ELA vs RGB."""
    intro = "AUC: seed mean (± sd over seeds when more than one) [95% bootstrap interval over test photos]."
    parts = [intro, _table(cost_table(result)), _table(auc_table(result)), claim(result)]
    return "\n\n".join(parts) + "\n"


def claim(result: Comparison) -> str:
    """One sentence on the paper's ELA-vs-raw claim from the paired test-set difference."""
    item = result.differences.get(TEST, {}).get(ELA_MINUS_RGB)
    if not item:
        return "ELA vs raw RGB: not measured (train.inputs lacks ela or rgb)."
    ci = item.ci95
    interval_text = f" (95% interval {ci[0]:+.3f} to {ci[1]:+.3f})" if ci else ""
    seeds = item.diff_per_seed or {}
    seeds_text = (
        f"; ELA was ahead with {item.seeds_ela_ahead} of {len(seeds)} seeds "
        f"(sd of the difference over seeds {item.diff_sd:.3f})"
        if len(seeds) > 1
        else ""
    )
    if item.verdict == "ELA better":
        return f"On this data ELA input beats raw RGB by {item.diff:+.3f} AUC{interval_text}{seeds_text}."
    if item.verdict == "RGB better":
        return f"On this data raw RGB beats ELA input by {-item.diff:.3f} AUC{interval_text}{seeds_text}."
    return (
        f"On this data ELA input does not measurably beat raw RGB: the AUC difference is "
        f"{item.diff:+.3f}{interval_text}{seeds_text}."
    )
