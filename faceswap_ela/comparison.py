"""The statistics of the comparison of the trained model families (input kind x training recipe,
one model per seed), each recipe's sharpness baseline and, with ELA at several qualities, the
untrained JPEG-ghost score on every test set: the AUC with mean +- sd over seeds and a 95% bootstrap
interval over test photos (the cross-forger table: each row on the paper's warp fakes, on the other
forgers' fakes, the held-out swaps and the re-saved JPEGs), the paired differences (ELA - RGB within
each recipe, each family - its recipe's baseline), the false-positive rate at eval.threshold, each
family's cost (the cells: faceswap_ela.cells), the headline of the primary model, and the paper's
Table 2. ``faceswap_ela.report`` shows them as tables and plots.

Every model and baseline is scored on the same crops of each test set, so one set of bootstrap
weights (test photos drawn with replacement) serves all of them and the differences are paired.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from faceswap_ela import evaluation, layout
from faceswap_ela import params as P
from faceswap_ela.cells import Auc, Difference, FalsePositives, Family, sd
from faceswap_ela.testsets import MATCHED, PAPER_FORGER, TEST, UNSEEN, set_forger, set_order

INPUT_LABELS = {"ela": "ELA-CNN", "rgb": "RGB-CNN"}
BASELINE_LABEL = "sharpness baseline"
GHOST_LABEL = "JPEG ghost (untrained)"

# Table 2 of Zhang & Zhao (multiply-adds: the paper's "GFLOPs (forward pass)")
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


def load_ghost(p: P.Params) -> pd.DataFrame | None:
    """The JPEG-ghost scores the primary recipe's baseline stage wrote, None when it wrote none
    (the header alone: ELA at fewer than two qualities)."""
    path = layout.ghost_predictions(layout.primary_recipe(p))
    frame = read_predictions(path) if path.is_file() else None
    return None if frame is None or frame.empty else frame


def load_results(p: P.Params) -> tuple[list[ModelResult], dict[str, pd.DataFrame]]:
    """Every model the parameters name (``layout.model_names``), and the baseline predictions of
    each recipe that has them, by recipe."""
    models = [load_model_result(kind, fakes, seed) for kind, fakes, seed, _ in layout.model_names(p)]
    baselines = {
        recipe: read_predictions(layout.baseline_predictions(recipe))
        for recipe in p.train.fakes
        if layout.baseline_predictions(recipe).is_file()
    }
    return models, baselines


@dataclass(frozen=True)
class Row:
    """A row of the cross-forger table: a model family, or (``input`` None) a recipe's baseline, or
    (``fakes`` "" too) the untrained JPEG-ghost score."""

    label: str
    input: str | None
    fakes: str


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
                name: {pair: item.to_json() for pair, item in by_pair.items()}
                for name, by_pair in self.differences.items()
            },
            "sets": list(self.sets),
            "primary_recipe": self.primary_recipe,
            "bootstrap": dict(self.bootstrap),
            "paper": [dict(row) for row in self.paper],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> Comparison:
        """The comparison that ``to_json`` wrote (compare.json), for tables made from a past run."""

        def table(part: Mapping, kind: type) -> dict:
            return {row: {name: kind(**cell) for name, cell in cells.items()} for row, cells in part.items()}

        return cls(
            rows={key: Row(**row) for key, row in doc["rows"].items()},
            families={key: Family(**entry) for key, entry in doc["families"].items()},
            cross_forger=table(doc["cross_forger"], Auc),
            false_positives=table(doc["fpr_at_threshold"]["rows"], FalsePositives),
            differences=table(doc["differences"], Difference),
            sets=list(doc["sets"]),
            threshold=doc["fpr_at_threshold"]["threshold"],
            primary_recipe=doc["primary_recipe"],
            bootstrap=dict(doc["bootstrap"]),
            paper=[dict(row) for row in doc["paper"]],
        )

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


def _scores(frame: pd.DataFrame, set_name: str, crops: np.ndarray, who: str) -> np.ndarray:
    rows = frame[frame["set"] == set_name]
    if not np.array_equal(rows["crop_id"].to_numpy(dtype=str), crops):
        raise ValueError(f"{who}: the crops of {set_name} differ from the other models'")
    return rows["p_fake"].to_numpy(dtype=np.float64)


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
    ghost: pd.DataFrame | None = None,
) -> Comparison:
    """compare.json: per model family (its seeds), per recipe's baseline (``baselines``, by recipe)
    and for the JPEG-ghost score (``ghost``, a last row when given) the AUC on every test set (mean,
    sd over seeds, per seed, 95% bootstrap interval of the seed mean over test photos) and the
    false-positive rate at ``threshold``; the paired ELA - RGB and family - baseline differences
    within each recipe; each family's cost; the paper's rows."""
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
    if ghost is not None:
        rows[layout.GHOST] = Row(GHOST_LABEL, None, "")
        sources[layout.GHOST] = [(layout.GHOST, ghost)]
    families = {key: Family.of(runs[key]) for key in rows if key in runs}
    paired = pairs(rows)
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
            for pair, (a, b) in paired.items()
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


def pairs(rows: Mapping[str, Row]) -> dict[str, tuple[str, str]]:
    """The paired differences by key ``<a>_minus_<b>``, within each recipe: ELA - RGB, then each
    family - the recipe's baseline."""
    found = {}
    for recipe in dict.fromkeys(row.fakes for row in rows.values() if row.fakes):
        ela, rgb, base = family("ela", recipe), family("rgb", recipe), layout.baseline_name(recipe)
        if ela in rows and rgb in rows:
            found[ela_minus_rgb(recipe)] = (ela, rgb)
        if base in rows:
            for key, row in rows.items():
                if row.fakes == recipe and row.input is not None:
                    found[f"{key}_minus_{base}"] = (key, base)
    return found


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
        diff, ci, _verdict(ci), diffs, round(sd(values), 4) if values else None, sum(v > 0 for v in values)
    )


def _headline_prefix(set_name: str) -> str | None:
    """The prefix of a set's keys in eval.json: "" for test, "matched_", "<forger>_",
    "swap_unseen_"; None for the JPEG sets (robustness.csv has them)."""
    if set_name == MATCHED:
        return "matched_"
    if set_name == UNSEEN:
        return "swap_unseen_"
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
