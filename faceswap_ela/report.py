"""What the comparison shows, and the files the compare stage writes: compare.json; compare.md
(the cost and AUC beside the paper's Table 2, the cross-forger table, the paired differences, the
false-positive rates, one sentence on ELA vs RGB); eval.json (the primary model's headline); and the
plots, each a CSV frame and a PNG figure: the cross-forger table (long form, heat map), the primary
model's ROC and confusion matrix, the training curves and the robustness to JPEG re-saving."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tabulate

from faceswap_ela import comparison, evaluation, figures, layout, outputs
from faceswap_ela.comparison import (
    Auc,
    Comparison,
    Difference,
    FalsePositives,
    ModelResult,
    Row,
    ela_minus_rgb,
    family,
    pairs,
)
from faceswap_ela.params import INPUTS, TrainParams, recipe_forgers
from faceswap_ela.testsets import TEST, UNSEEN, jpeg_quality, set_forger

# curves.csv and robustness.csv have the columns of these recipes' families even when not trained
DEFAULT_RECIPES = TrainParams().fakes

# an output's content: text as it is, a mapping as JSON, a frame as CSV, or a figure drawn into a path
Content = str | Mapping | pd.DataFrame | Callable[[Path], object]


def files(
    result: Comparison,
    models: Sequence[ModelResult],
    baselines: Mapping[str, pd.DataFrame],
    primary: ModelResult,
    roc_seed: int,
) -> dict[Path, Content]:
    """Every file the compare stage writes, by its ``layout`` path: compare.json (keys in document
    order), compare.md, eval.json (the headline: the primary model's test metrics at the comparison's
    threshold, and its AUC on every set) and the plots. The ROC figure shows the models of
    ``roc_seed`` and the baselines."""
    labels, p_fake = _test_scores(primary.predictions)
    headline = comparison.headline(result, primary, evaluation.evaluate(labels, p_fake, result.threshold))
    predicted = evaluation.predict_labels(p_fake, result.threshold)
    aucs, trained_on = cross_forger_grid(result)
    roc_lines = roc_curves(result, models, baselines, roc_seed)
    training = curves(models)
    families = list(result.families)
    training_panels = {
        "validation accuracy": [f"{k}_val_accuracy" for k in families],
        "validation loss": [f"{k}_val_loss" for k in families],
    }
    jpeg = robustness(result)
    jpeg_panels = {"test AUC, photos re-saved as JPEG": [c for c in jpeg.columns if c.endswith("_auc")]}
    return {
        layout.COMPARE_JSON: json.dumps(result.to_json(), indent=2) + "\n",
        layout.COMPARE_MD: markdown(result),
        layout.EVAL_JSON: headline,
        layout.CROSS_FORGER_CSV: cross_forger_long(result),
        layout.CROSS_FORGER_PNG: lambda path: figures.auc_grid_figure(aucs, path, trained_on),
        layout.ROC_CSV: evaluation.roc_table(labels, p_fake),
        layout.ROC_PNG: lambda path: figures.roc_figure(roc_lines, path),
        layout.CONFUSION_CSV: evaluation.confusion_table(labels, predicted),
        layout.CONFUSION_PNG: lambda path: figures.confusion_figure(headline["confusion_matrix"], path),
        layout.CURVES_CSV: training,
        layout.CURVES_PNG: lambda path: figures.lines_figure(training, "epoch", training_panels, path),
        layout.ROBUSTNESS_CSV: jpeg,
        layout.ROBUSTNESS_PNG: lambda path: figures.lines_figure(
            jpeg, "quality", jpeg_panels, path, "JPEG quality"
        ),
    }


def write(path: Path, content: Content) -> None:
    """Write one of ``files``' contents: text as it is, a mapping as JSON (sorted keys), a frame as
    CSV, a figure by drawing it into ``path``."""
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, Mapping):
        outputs.write_json(path, content)
    elif isinstance(content, pd.DataFrame):
        outputs.write_csv(path, content)
    else:
        content(path)


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
    """AUC per JPEG quality the test photos were re-saved at: quality, <family>_auc (seed mean),
    baseline-<recipe>_auc, empty where not trained (see ``_column_families``), and ghost_auc when
    the comparison has the JPEG-ghost row."""
    recipes = list(
        dict.fromkeys([*DEFAULT_RECIPES, *(row.fakes for row in result.rows.values() if row.fakes)])
    )
    keys = [*_column_families(recipes), *(layout.baseline_name(r) for r in recipes)]
    keys += [layout.GHOST] if layout.GHOST in result.rows else []
    rows = []
    for set_name in result.sets:
        quality = jpeg_quality(set_name)
        if quality is not None:
            rows.append(
                {"quality": quality} | {f"{k}_auc": result.auc(k, set_name).auc_mean for k in result.rows}
            )
    return pd.DataFrame(rows, columns=["quality", *(f"{k}_auc" for k in keys)])


def _test_scores(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The labels and p_fake of the test set's crops."""
    rows = predictions[predictions["set"] == TEST]
    return rows["label"].to_numpy(), rows["p_fake"].to_numpy()


def roc_points(predictions: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(false positive rate, true positive rate) of the ROC curve on the test set."""
    table = evaluation.roc_table(*_test_scores(predictions))
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
    return bool(row.fakes) and set_forger(set_name) in recipe_forgers(row.fakes)


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


def markdown_table(frame: pd.DataFrame) -> str:
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
        test = auc_text(result.auc(key, TEST))
        entry = result.families.get(key)
        if entry is None and not row.fakes:  # the JPEG ghost: nothing fitted
            rows.append((row.label, "0", "~0", "0", "–", "–", test))
            continue
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
        texts = [auc_text(result.auc(key, name)) for name in result.sets]
        cells[row.label] = [
            f"**{text}**" if _trained_on(row, name) else text
            for name, text in zip(result.sets, texts, strict=True)
        ]
    return _by_set(result, cells)


def differences_table(result: Comparison) -> pd.DataFrame:
    """The paired differences on every test set: ELA − RGB within each recipe, and each family −
    its recipe's baseline."""
    cells = {}
    for pair, (a, b) in pairs(result.rows).items():
        row_a, row_b = result.rows[a], result.rows[b]
        if row_b.input is None:
            label = f"{row_a.label} − baseline"
        else:
            label = f"{row_a.input.upper()} − {row_b.input.upper()} · {row_a.fakes}"
        items = [result.differences.get(name, {}).get(pair) for name in result.sets]
        if any(items):
            cells[label] = ["n/a" if item is None else _difference_text(item) for item in items]
    return _by_set(result, cells)


def false_positive_table(result: Comparison) -> pd.DataFrame:
    """The false-positive rate at the threshold of each family and baseline on every test set."""
    return _by_set(
        result,
        {
            row.label: [fpr_text(result.false_positives[key][name]) for name in result.sets]
            for key, row in result.rows.items()
        },
    )


def cell(value: float, sd: float | None, ci: list[float] | None, sign: str = "") -> str:
    """A table cell: the value, then ± sd when given, then [interval] when there is one."""
    text = f"{value:{sign}.3f}"
    if sd is not None:
        text += f" ± {sd:.3f}"
    if ci:
        text += f" [{ci[0]:{sign}.3f}, {ci[1]:{sign}.3f}]"
    return text


def auc_text(auc: Auc | None) -> str:
    if auc is None or auc.auc_mean is None:
        return "n/a"
    return cell(auc.auc_mean, auc.auc_sd if len(auc.auc_per_seed) > 1 else None, auc.ci95)


def fpr_text(rates: FalsePositives) -> str:
    if rates.fpr_mean is None:
        return "n/a"
    valid = [r for r in rates.fpr_per_seed if r is not None]
    spread = f" ({min(valid):.1%}–{max(valid):.1%})" if len(rates.fpr_per_seed) > 1 else ""
    return f"{rates.fpr_mean:.1%}{spread}"


def _difference_text(item: Difference) -> str:
    return cell(item.diff, item.diff_sd if len(item.diff_per_seed or {}) > 1 else None, item.ci95, "+")


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
    if UNSEEN in result.sets:
        cross += f" {UNSEEN}: swaps by settings no training recipe uses, its reals saved as its fakes."
    if layout.GHOST in result.rows:
        cross += (
            f" {comparison.GHOST_LABEL}: how unlike the frame's the face's error levels run over the ELA "
            "qualities, no fitting."
        )
    diff = "Paired differences of AUC (same test photos resampled), within each training recipe."
    fpr = (
        f"False-positive rate: share of real crops with p_fake ≥ {result.threshold:g}, "
        "seed mean (range over seeds when more than one)."
    )
    parts = [
        intro, markdown_table(cost_table(result)), cross, markdown_table(cross_forger_table(result)),
        diff, markdown_table(differences_table(result)), fpr, markdown_table(false_positive_table(result)),
        claim(result),
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
