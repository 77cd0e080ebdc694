"""The comparison of the trained model families (input kind x training recipe, one model per seed)
and each recipe's sharpness baseline on every test set: the cross-forger table (each row on the
paper's warp fakes and on the other forgers' fakes), the paper's Table 2 beside ours, AUC with mean
+- sd over seeds and 95% bootstrap intervals over test photos, the paired differences (ELA - RGB
within each recipe, each family - its recipe's baseline), the false-positive rate at
eval.threshold, and the robustness to re-saved JPEGs.

Every model and baseline is scored on the same crops of each test set, so one set of bootstrap
weights (test photos drawn with replacement) serves all of them and the differences are paired.
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
from faceswap_ela.params import INPUTS, TrainParams, recipe_forgers
from faceswap_ela.testsets import MATCHED, PAPER_FORGER, TEST, jpeg_quality, set_forger, set_order

INPUT_LABELS = {"ela": "ELA-CNN", "rgb": "RGB-CNN"}
BASELINE_LABEL = "sharpness baseline"
MIB = 2**20
# curves.csv and robustness.csv have the columns of these recipes' families even when not trained
DEFAULT_RECIPES = TrainParams().fakes

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
    """A model's or a baseline's file is missing or unreadable."""


def family(input_kind: str, fakes: str) -> str:
    """A model family's key: ``ela-warp``, the model names without the seed."""
    return f"{input_kind}-{fakes}"


@dataclass(frozen=True)
class ModelResult:
    """One trained model: its input kind, training recipe, seed, train metrics, history and test
    predictions."""

    input: str
    fakes: str
    seed: int
    train: Mapping[str, object]
    history: pd.DataFrame
    predictions: pd.DataFrame  # evaluation.PREDICTION_COLUMNS, every test set

    @property
    def name(self) -> str:
        return layout.model_name(self.input, self.fakes, self.seed)

    @property
    def family(self) -> str:
        return family(self.input, self.fakes)


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


def load_model_result(input_kind: str, fakes: str, seed: int) -> ModelResult:
    """One trained model's train metrics, history and predictions, from the files ``layout``
    names; ComparisonError when one is missing or unreadable."""
    name = layout.model_name(input_kind, fakes, seed)
    try:
        train = json.loads(layout.train_metrics(name).read_text())
        history = pd.read_csv(layout.history_file(name))
    except (OSError, ValueError) as exc:
        raise ComparisonError(f"model {name}: {exc}") from None
    predictions = read_predictions(layout.predictions_file(name))
    return ModelResult(input_kind, fakes, seed, train, history, predictions)


@dataclass(frozen=True)
class Auc:
    """One row's AUC on one test set: mean and sd over seeds, per seed, and the 95% bootstrap
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
class FalsePositives:
    """The share of one test set's real crops scored p_fake >= eval.threshold: mean over seeds and
    per seed (None for a set without reals)."""

    fpr_mean: float | None
    fpr_per_seed: list[float | None]
    n_real: int

    @classmethod
    def of(cls, results: Sequence[Mapping[str, object]]) -> FalsePositives:
        n_real = int(results[0]["n_real"])
        rates = [r["fp"] / n_real if n_real else None for r in results]
        valid = [r for r in rates if r is not None]
        return cls(
            round(float(np.mean(valid)), 4) if valid else None,
            [None if r is None else round(r, 4) for r in rates],
            n_real,
        )

    def text(self) -> str:
        if self.fpr_mean is None:
            return "n/a"
        valid = [r for r in self.fpr_per_seed if r is not None]
        spread = f" ({min(valid):.1%}–{max(valid):.1%})" if len(self.fpr_per_seed) > 1 else ""
        return f"{self.fpr_mean:.1%}{spread}"


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
class Row:
    """A row of the cross-forger table: a model family, or (``input`` None) a recipe's baseline."""

    label: str
    input: str | None
    fakes: str


@dataclass(frozen=True)
class Family:
    """One model family over its seeds: cost and training speed."""

    seeds: list[int]
    params: object
    multiply_adds: object
    size_mib: float | None
    best_epoch: float | None
    epochs_run: float | None
    epochs_to_95pct_val_accuracy: float | None
    samples_per_s: float | None

    @classmethod
    def of(cls, runs: Sequence[ModelResult]) -> Family:
        train = runs[0].train
        return cls(
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
        )


@dataclass(frozen=True)
class Comparison:
    """Every model family and baseline (``rows``: each recipe's families, then its baseline) on
    every test set (``sets``, in ``set_order``): the AUC (``cross_forger``, by row and set), the
    false-positive rate at ``threshold``, the paired differences by set and pair
    (``<row>_minus_<row>``), the families' cost, the bootstrap's settings and the paper's rows."""

    rows: dict[str, Row]
    families: dict[str, Family]
    cross_forger: dict[str, dict[str, Auc]]
    false_positives: dict[str, dict[str, FalsePositives]]
    differences: dict[str, dict[str, Difference]]
    sets: list[str]
    threshold: float
    primary_recipe: str
    bootstrap: dict
    paper: list[dict]

    def auc(self, row: str, set_name: str) -> Auc | None:
        """The AUC of a family (``ela-warp``) or a baseline (``baseline-warp``) on one test set."""
        return self.cross_forger.get(row, {}).get(set_name)

    def to_json(self) -> dict:
        """compare.json's document."""
        return {
            "rows": {key: dataclasses.asdict(row) for key, row in self.rows.items()},
            "families": {key: dataclasses.asdict(entry) for key, entry in self.families.items()},
            "cross_forger": _as_json(self.cross_forger),
            "fpr_at_threshold": {"threshold": self.threshold, "rows": _as_json(self.false_positives)},
            "differences": {
                name: {pair: item.to_json() for pair, item in pairs.items()}
                for name, pairs in self.differences.items()
            },
            "sets": list(self.sets),
            "primary_recipe": self.primary_recipe,
            "bootstrap": dict(self.bootstrap),
            "paper": [dict(row) for row in self.paper],
        }

    def tracked(self) -> dict[str, dict]:
        """The parts of compare.json logged to MLflow, by metric prefix."""
        doc = self.to_json()
        return {
            "compare": doc["families"],
            "compare.cross_forger": doc["cross_forger"],
            "compare.fpr": doc["fpr_at_threshold"]["rows"],
            "compare.diff": doc["differences"],
        }


def _as_json(table: Mapping[str, Mapping[str, object]]) -> dict:
    return {
        row: {name: dataclasses.asdict(cell) for name, cell in cells.items()} for row, cells in table.items()
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
    baselines: Mapping[str, pd.DataFrame],
    *,
    resamples: int,
    seed: int,
    threshold: float = 0.5,
    primary_recipe: str = PAPER_FORGER,
) -> Comparison:
    """compare.json: per model family (its seeds) and per recipe's baseline (``baselines``, by
    recipe) the AUC on every test set (mean, sd over seeds, per seed, 95% bootstrap interval of the
    seed mean over test photos) and the false-positive rate at ``threshold``; the paired ELA - RGB
    and family - baseline differences within each recipe; each family's cost; the paper's rows."""
    if not models:
        raise ValueError("no trained models to compare")
    runs: dict[str, list[ModelResult]] = {}
    for m in models:
        runs.setdefault(m.family, []).append(m)
    rows: dict[str, Row] = {}
    sources: dict[str, list[tuple[str, pd.DataFrame]]] = {}  # row -> (name, predictions) per seed
    for recipe in dict.fromkeys([*(m.fakes for m in models), *baselines]):
        for key, family_runs in runs.items():
            if family_runs[0].fakes == recipe:
                kind = family_runs[0].input
                rows[key] = Row(f"{INPUT_LABELS.get(kind, kind)} · {recipe}", kind, recipe)
                sources[key] = [(m.name, m.predictions) for m in family_runs]
        if recipe in baselines:
            key = layout.baseline_name(recipe)
            rows[key] = Row(f"{BASELINE_LABEL} · {recipe}", None, recipe)
            sources[key] = [(key, baselines[recipe])]
    families = {key: Family.of(runs[key]) for key in rows if key in runs}
    pairs = _pairs(rows)
    first = models[0].predictions
    sets = set_order(first["set"].unique())
    cross: dict[str, dict[str, Auc]] = {key: {} for key in rows}
    false_positives: dict[str, dict[str, FalsePositives]] = {key: {} for key in rows}
    differences = {}
    for set_name in sets:
        reference = first[first["set"] == set_name]
        crops = reference["crop_id"].to_numpy(dtype=str)
        labels = reference["label"].to_numpy(dtype=np.int64)
        photos = reference["photo_id"].to_numpy(dtype=str)
        weights = evaluation.photo_weights(photos, resamples, seed) if resamples else None
        boot_means: dict[str, np.ndarray] = {}
        for key, row_sources in sources.items():
            scores = [_scores(frame, set_name, crops, name) for name, frame in row_sources]
            results = [evaluation.evaluate(labels, s, threshold) for s in scores]
            if weights is not None:
                boot_means[key] = np.mean(
                    [evaluation.weighted_aucs(labels, s, weights) for s in scores], axis=0
                )
            cross[key][set_name] = Auc.of([r["roc_auc"] for r in results], boot_means.get(key))
            false_positives[key][set_name] = FalsePositives.of(results)
        differences[set_name] = {
            pair: item
            for pair, (a, b) in pairs.items()
            if (item := _difference(families, cross, a, b, set_name, boot_means)) is not None
        }
    bootstrap = {
        "resamples": resamples,
        "unit": "test photo",
        "photos": int(first[first["set"] == TEST]["photo_id"].nunique()) if TEST in sets else None,
        "level": 0.95,
    }
    return Comparison(
        rows=rows,
        families=families,
        cross_forger=cross,
        false_positives=false_positives,
        differences=differences,
        sets=sets,
        threshold=threshold,
        primary_recipe=primary_recipe,
        bootstrap=bootstrap,
        paper=list(PAPER_ROWS),
    )


def ela_minus_rgb(recipe: str) -> str:
    """The key of a recipe's paired ELA - RGB difference."""
    return f"{family('ela', recipe)}_minus_{family('rgb', recipe)}"


def _pairs(rows: Mapping[str, Row]) -> dict[str, tuple[str, str]]:
    """The paired differences by key ``<a>_minus_<b>``, within each recipe: ELA - RGB, then each
    family - the recipe's baseline."""
    pairs = {}
    for recipe in dict.fromkeys(row.fakes for row in rows.values()):
        ela, rgb, base = family("ela", recipe), family("rgb", recipe), layout.baseline_name(recipe)
        if ela in rows and rgb in rows:
            pairs[ela_minus_rgb(recipe)] = (ela, rgb)
        if base in rows:
            for key, row in rows.items():
                if row.fakes == recipe and row.input is not None:
                    pairs[f"{key}_minus_{base}"] = (key, base)
    return pairs


def _difference(
    families: Mapping[str, Family],
    cross: Mapping[str, Mapping[str, Auc]],
    a: str,
    b: str,
    set_name: str,
    boots: Mapping[str, np.ndarray],
) -> Difference | None:
    """A - B in seed-mean AUC with its paired interval; between two families (ELA - RGB) also the
    verdict and the per-seed differences. None when either AUC is undefined."""
    auc_a, auc_b = cross[a][set_name], cross[b][set_name]
    if auc_a.auc_mean is None or auc_b.auc_mean is None:
        return None
    diff = round(auc_a.auc_mean - auc_b.auc_mean, 4)
    ci = evaluation.interval(boots[a] - boots[b]) if a in boots and b in boots else None
    if b not in families:
        return Difference(diff, ci)
    per_seed = [
        dict(zip(families[key].seeds, cross[key][set_name].auc_per_seed, strict=True)) for key in (a, b)
    ]
    diffs = {
        str(s): round(auc - per_seed[1][s], 4)
        for s, auc in per_seed[0].items()
        if auc is not None and per_seed[1].get(s) is not None
    }
    values = list(diffs.values())
    return Difference(
        diff, ci, _verdict(ci), diffs, round(_sd(values), 4) if values else None, sum(v > 0 for v in values)
    )


def _headline_prefix(set_name: str) -> str | None:
    """The prefix of a set's keys in eval.json: "" for test, "matched_", "<forger>_"; None for the
    JPEG sets (robustness.csv has them)."""
    if set_name == MATCHED:
        return "matched_"
    forger = set_forger(set_name)
    if forger is None:
        return None
    return "" if forger == PAPER_FORGER else f"{forger}_"


def headline(result: Comparison, primary: ModelResult, primary_metrics: Mapping[str, object]) -> dict:
    """metrics/eval.json: the primary model's test metrics (accuracy, AUC, precision, recall, F1,
    confusion matrix); then for the matched set and each forger's set (keys prefixed ``matched_``,
    ``<forger>_``; none for test) the primary model's AUC (``roc_auc``), every family's seed-mean
    AUC (``<family>_auc_mean``), and the primary recipe's baseline AUC and the primary family's
    margin over it."""
    out = {"model": primary.name, **primary_metrics}
    seed_index = result.families[primary.family].seeds.index(primary.seed)
    base = layout.baseline_name(primary.fakes)
    for set_name in result.sets:
        prefix = _headline_prefix(set_name)
        if prefix is None:
            continue
        primary_auc = result.auc(primary.family, set_name)
        if prefix:
            out[f"{prefix}roc_auc"] = primary_auc.auc_per_seed[seed_index]
        for key in result.families:
            out[f"{prefix}{key}_auc_mean"] = result.auc(key, set_name).auc_mean
        base_auc = result.auc(base, set_name)
        if base_auc is not None:
            out[f"{prefix}baseline_auc"] = base_auc.auc_mean
            if primary_auc.auc_mean is not None and base_auc.auc_mean is not None:
                out[f"{prefix}margin_over_baseline"] = round(primary_auc.auc_mean - base_auc.auc_mean, 4)
    return out


def _column_families(recipes: Sequence[str]) -> list[str]:
    """The families that curves.csv and robustness.csv have columns for: every input kind of
    ``INPUTS`` with every recipe of the default run and of ``recipes``, so that plot definitions
    naming the default run's columns hold for any ``train.inputs`` and ``train.fakes``."""
    return [family(kind, recipe) for kind in INPUTS for recipe in dict.fromkeys([*DEFAULT_RECIPES, *recipes])]


def curves(models: Sequence[ModelResult]) -> pd.DataFrame:
    """Per epoch, each family's training and validation accuracy and loss (mean over the seeds
    that ran that epoch): epoch, <family>_accuracy, <family>_val_accuracy, <family>_loss, ...,
    empty where the family was not trained (see ``_column_families``)."""
    longest = max((len(m.history) for m in models), default=0)
    frame = pd.DataFrame({"epoch": np.arange(1, longest + 1)})
    for key in _column_families([m.fakes for m in models]):
        runs = [m.history.set_index("epoch") for m in models if m.family == key]
        for metric in ("accuracy", "val_accuracy", "loss", "val_loss"):
            if not runs:
                frame[f"{key}_{metric}"] = np.nan
                continue
            stacked = pd.concat([h[metric] for h in runs], axis=1).reindex(frame["epoch"])
            frame[f"{key}_{metric}"] = stacked.mean(axis=1, skipna=True).round(6).to_numpy()
    return frame


def robustness(result: Comparison) -> pd.DataFrame:
    """AUC per JPEG quality the test photos were re-saved at: quality, <family>_auc (seed mean) and
    baseline-<recipe>_auc, empty where not trained (see ``_column_families``)."""
    recipes = list(dict.fromkeys([*DEFAULT_RECIPES, *(row.fakes for row in result.rows.values())]))
    keys = [*_column_families(recipes), *(layout.baseline_name(r) for r in recipes)]
    rows = []
    for set_name in result.sets:
        quality = jpeg_quality(set_name)
        if quality is not None:
            rows.append(
                {"quality": quality} | {f"{k}_auc": result.auc(k, set_name).auc_mean for k in result.rows}
            )
    return pd.DataFrame(rows, columns=["quality", *(f"{k}_auc" for k in keys)])


def roc_points(predictions: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(false positive rate, true positive rate) of the ROC curve on the test set."""
    rows = predictions[predictions["set"] == TEST]
    table = evaluation.roc_table(rows["label"].to_numpy(), rows["p_fake"].to_numpy())
    return table["fpr"], table["tpr"]


def roc_curves(
    result: Comparison, models: Sequence[ModelResult], baselines: Mapping[str, pd.DataFrame], seed: int
) -> dict[str, tuple[pd.Series, pd.Series]]:
    """The test-set ROC curves of the models trained with ``seed`` and of each recipe's baseline,
    by legend label: "<family label> s<seed> (AUC <test AUC>)", "<baseline label> (AUC ...)"."""
    curves = {}
    for m in (m for m in models if m.seed == seed):
        seed_index = result.families[m.family].seeds.index(seed)
        auc = number(result.auc(m.family, TEST).auc_per_seed[seed_index], 3)
        curves[f"{result.rows[m.family].label} s{seed} (AUC {auc})"] = roc_points(m.predictions)
    for recipe, frame in baselines.items():
        key = layout.baseline_name(recipe)
        curves[f"{result.rows[key].label} (AUC {number(result.auc(key, TEST).auc_mean, 3)})"] = roc_points(
            frame
        )
    return curves


def cross_forger_long(result: Comparison) -> pd.DataFrame:
    """plots/cross_forger.csv: one line per row and test set (model, set, auc, ci_low, ci_high), the
    seed-mean AUC and its 95% interval."""
    return pd.DataFrame(
        [
            (key, name, auc.auc_mean, *(auc.ci95 or (None, None)))
            for key, cells in result.cross_forger.items()
            for name, auc in cells.items()
        ],
        columns=["model", "set", "auc", "ci_low", "ci_high"],
    )


def cross_forger_grid(result: Comparison) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seed-mean AUC of each row (by label) on each test set, and where the set's forger is one
    the row was trained on."""
    labels = [row.label for row in result.rows.values()]
    aucs = pd.DataFrame(
        [[result.auc(key, name).auc_mean for name in result.sets] for key in result.rows],
        index=labels,
        columns=result.sets,
        dtype=float,
    )
    trained = pd.DataFrame(
        [[_trained_on(row, name) for name in result.sets] for row in result.rows.values()],
        index=labels,
        columns=result.sets,
    )
    return aucs, trained


def _trained_on(row: Row, set_name: str) -> bool:
    return set_forger(set_name) in recipe_forgers(row.fakes)


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


def _by_set(result: Comparison, cells: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """A table with one column per test set: label -> one cell per set."""
    return pd.DataFrame([[label, *row] for label, row in cells.items()], columns=["Model", *result.sets])


def cost_table(result: Comparison) -> pd.DataFrame:
    """Cost, training speed and test AUC of each family, each baseline and the paper's models."""
    rows = []
    for key, row in result.rows.items():
        test = _auc_text(result.auc(key, TEST))
        entry = result.families.get(key)
        if entry is None:
            rows.append((f"{row.label} (logistic regression, 5 features)", "6", "~0", "~0", "–", "–", test))
            continue
        seeds = f"{'seeds' if len(entry.seeds) > 1 else 'seed'} {', '.join(map(str, entry.seeds))}"
        rows.append((
            f"{row.label} ({seeds})", f"{entry.params:,}", f"{entry.multiply_adds / 1e9:.3f}",
            number(entry.size_mib), number(entry.best_epoch), number(entry.epochs_to_95pct_val_accuracy),
            test,
        ))  # fmt: skip
    rows += [
        (row["model"], f"{row['params']:.3g}", f"{row['gmacs']}", f"{row['size_mb']} (MB)", "–",
         f"{row['epochs']} (trained)", f"{row['auc']:.3f}")
        for row in result.paper
    ]  # fmt: skip
    header = ["Model", "Params", "Mult-adds / sample (G)", "Size (MiB)", "Best epoch",
              "Epochs to 95% of best val acc", "Test AUC"]  # fmt: skip
    return pd.DataFrame(rows, columns=header)


def cross_forger_table(result: Comparison) -> pd.DataFrame:
    """The AUC of each family and baseline on every test set, in bold where the set's forger is
    one the row was trained on."""
    cells = {}
    for key, row in result.rows.items():
        texts = [_auc_text(result.auc(key, name)) for name in result.sets]
        cells[row.label] = [
            f"**{text}**" if _trained_on(row, name) else text
            for name, text in zip(result.sets, texts, strict=True)
        ]
    return _by_set(result, cells)


def differences_table(result: Comparison) -> pd.DataFrame:
    """The paired differences on every test set: ELA − RGB within each recipe, and each family −
    its recipe's baseline."""
    cells = {}
    for pair, (a, b) in _pairs(result.rows).items():
        row_a, row_b = result.rows[a], result.rows[b]
        if row_b.input is None:
            label = f"{row_a.label} − baseline"
        else:
            label = f"{row_a.input.upper()} − {row_b.input.upper()} · {row_a.fakes}"
        items = [result.differences.get(name, {}).get(pair) for name in result.sets]
        if any(items):
            cells[label] = ["n/a" if item is None else item.text() for item in items]
    return _by_set(result, cells)


def false_positive_table(result: Comparison) -> pd.DataFrame:
    """The false-positive rate at the threshold of each family and baseline on every test set."""
    return _by_set(
        result,
        {
            row.label: [result.false_positives[key][name].text() for name in result.sets]
            for key, row in result.rows.items()
        },
    )


def _auc_text(auc: Auc | None) -> str:
    return "n/a" if auc is None else auc.text()


def markdown(result: Comparison) -> str:
    """compare.md: the cost and AUC beside the paper, the cross-forger table, the paired
    differences, the false-positive rates, and one sentence on ELA vs RGB."""
    intro = "AUC: seed mean (± sd over seeds when more than one) [95% bootstrap interval over test photos]."
    cross = (
        "Cross-forger AUC: each model family (input · training recipe) and the sharpness baseline fitted "
        "on the same recipe's crops, on the paper's warp fakes (test), other forgers' fakes with the same "
        "reals (test_<forger>), the sharpness-matched and the JPEG re-saved sets; bold: a forger the row "
        "was trained on."
    )
    diff = "Paired differences of AUC (same test photos resampled), within each training recipe."
    fpr = (
        f"False-positive rate: share of real crops with p_fake ≥ {result.threshold:g}, "
        "seed mean (range over seeds when more than one)."
    )
    parts = [
        intro, _table(cost_table(result)), cross, _table(cross_forger_table(result)),
        diff, _table(differences_table(result)), fpr, _table(false_positive_table(result)), claim(result),
    ]  # fmt: skip
    return "\n\n".join(parts) + "\n"


def claim(result: Comparison) -> str:
    """One sentence on the paper's ELA-vs-raw claim from the paired test-set difference of the
    primary recipe's models."""
    recipe = result.primary_recipe
    item = result.differences.get(TEST, {}).get(ela_minus_rgb(recipe))
    if not item:
        return f"ELA vs raw RGB: not measured (no ela and rgb models of recipe {recipe})."
    ci = item.ci95
    interval_text = f" (95% interval {ci[0]:+.3f} to {ci[1]:+.3f})" if ci else ""
    seeds = item.diff_per_seed or {}
    seeds_text = (
        f"; ELA was ahead with {item.seeds_ela_ahead} of {len(seeds)} seeds "
        f"(sd of the difference over seeds {item.diff_sd:.3f})"
        if len(seeds) > 1
        else ""
    )
    trained = f"Trained on {recipe} fakes, "
    if item.verdict == "ELA better":
        return f"{trained}ELA input beats raw RGB on test by {item.diff:+.3f} AUC{interval_text}{seeds_text}."
    if item.verdict == "RGB better":
        return f"{trained}raw RGB beats ELA input on test by {-item.diff:.3f} AUC{interval_text}{seeds_text}."
    return (
        f"{trained}ELA input does not measurably beat raw RGB on test: the AUC difference is "
        f"{item.diff:+.3f}{interval_text}{seeds_text}."
    )
