"""The comparison of the trained models (ELA-CNN, RGB-CNN, one per seed) and the baseline on every
test set: the paper's Table 2 beside ours, AUC with mean +- sd over seeds and 95% bootstrap
intervals over test photos, the ELA-minus-RGB difference, and the robustness to re-saved JPEGs.

Every model is scored on the same crops of each test set, so one set of bootstrap weights (test
photos drawn with replacement) serves all of them and the differences are paired.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from faceswap_ela import evaluation
from faceswap_ela.dataset import set_order
from faceswap_ela.params import INPUTS

LABELS = {"ela": "ELA-CNN", "rgb": "RGB-CNN", "baseline": "sharpness baseline"}
MIB = 2**20

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
        return f"{self.input}-s{self.seed}"


def _scores(frame: pd.DataFrame, set_name: str, crops: np.ndarray, who: str) -> np.ndarray:
    rows = frame[frame["set"] == set_name]
    if not np.array_equal(rows["crop_id"].to_numpy(dtype=str), crops):
        raise ValueError(f"{who}: the crops of {set_name} differ from the other models'")
    return rows["p_fake"].to_numpy(dtype=np.float64)


def _sd(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _verdict(diff: float, ci: list[float] | None) -> str:
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
) -> dict:
    """compare.json: per input kind its cost, training speed and AUC on every test set (mean, sd
    over seeds, per seed, 95% bootstrap interval of the seed-mean over test photos), the same for
    the baseline, the paired ELA - RGB and CNN - baseline differences, and the paper's rows."""
    if not models:
        raise ValueError("no trained models to compare")
    inputs = list(dict.fromkeys(m.input for m in models))
    first = models[0].predictions
    sets = set_order(first["set"].unique())
    doc: dict = {"inputs": {}, "baseline": {"sets": {}}, "differences": {}, "sets": sets}

    for kind in inputs:
        runs = [m for m in models if m.input == kind]
        train = runs[0].train
        epochs_95 = [evaluation.epochs_to_fraction(m.history["val_accuracy"]) for m in runs]
        doc["inputs"][kind] = {
            "label": LABELS.get(kind, kind),
            "seeds": [m.seed for m in runs],
            "params": train.get("params"),
            "multiply_adds": train.get("multiply_adds"),
            "size_mib": round(float(train["model_bytes"]) / MIB, 1) if train.get("model_bytes") else None,
            "best_epoch": _mean([m.train.get("best_epoch") for m in runs]),
            "epochs_run": _mean([m.train.get("epochs_run") for m in runs]),
            "epochs_to_95pct_val_accuracy": _mean(epochs_95),
            "samples_per_s": _mean([m.train.get("samples_per_s") for m in runs]),
            "sets": {},
        }

    for set_name in sets:
        reference = first[first["set"] == set_name]
        crops = reference["crop_id"].to_numpy(dtype=str)
        labels = reference["label"].to_numpy(dtype=np.int64)
        photos = reference["photo_id"].to_numpy(dtype=str)
        weights = evaluation.photo_weights(photos, resamples, seed) if resamples else None
        boot_means: dict[str, np.ndarray] = {}
        for kind in inputs:
            runs = [m for m in models if m.input == kind]
            aucs, boots = [], []
            for m in runs:
                scores = _scores(m.predictions, set_name, crops, m.name)
                aucs.append(evaluation.evaluate(labels, scores, threshold)["roc_auc"])
                if weights is not None:
                    boots.append(evaluation.weighted_aucs(labels, scores, weights))
            if weights is not None:
                boot_means[kind] = np.mean(boots, axis=0)
            doc["inputs"][kind]["sets"][set_name] = _auc_entry(aucs, boot_means.get(kind))
        if baseline is not None:
            scores = _scores(baseline, set_name, crops, "baseline")
            auc = evaluation.evaluate(labels, scores, threshold)["roc_auc"]
            if weights is not None:
                boot_means["baseline"] = evaluation.weighted_aucs(labels, scores, weights)
            doc["baseline"]["sets"][set_name] = _auc_entry([auc], boot_means.get("baseline"))
        doc["differences"][set_name] = _differences(doc, set_name, boot_means)

    doc["bootstrap"] = {
        "resamples": resamples,
        "unit": "test photo",
        "photos": int(first[first["set"] == "test"]["photo_id"].nunique()) if "test" in sets else None,
        "level": 0.95,
    }
    doc["paper"] = list(PAPER_ROWS)
    return doc


def _mean(values: Sequence[object]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return round(float(np.mean(numbers)), 2) if numbers else None


def _auc_entry(aucs: Sequence[float | None], boot: np.ndarray | None) -> dict:
    valid = [a for a in aucs if a is not None]
    return {
        "auc_mean": round(float(np.mean(valid)), 4) if valid else None,
        "auc_sd": round(_sd(valid), 4) if valid else None,
        "auc_per_seed": [None if a is None else round(a, 4) for a in aucs],
        "ci95": None if boot is None else evaluation.interval(boot),
    }


def _differences(doc: dict, set_name: str, boots: Mapping[str, np.ndarray]) -> dict:
    """Paired differences of seed-mean AUC: ELA - RGB (also per seed), and each CNN - baseline."""
    pairs = []
    if {"ela", "rgb"} <= set(doc["inputs"]):
        pairs.append(("ela", "rgb"))
    if doc["baseline"]["sets"]:
        pairs += [(kind, "baseline") for kind in doc["inputs"]]
    out = {}
    for a, b in pairs:
        entry_a = doc["inputs"][a]["sets"][set_name]
        entry_b = (doc["inputs"].get(b) or doc["baseline"])["sets"][set_name]
        if entry_a["auc_mean"] is None or entry_b["auc_mean"] is None:
            continue
        diff = round(entry_a["auc_mean"] - entry_b["auc_mean"], 4)
        ci = evaluation.interval(boots[a] - boots[b]) if a in boots and b in boots else None
        item = {"diff": diff, "ci95": ci}
        if (a, b) == ("ela", "rgb"):
            item["verdict"] = _verdict(diff, ci)
            item.update(_per_seed_differences(doc["inputs"], set_name))
        out[f"{a}_minus_{b}"] = item
    return out


def _per_seed_differences(inputs: Mapping[str, dict], set_name: str) -> dict:
    """ELA - RGB for each seed both inputs were trained with (the same seed's two models)."""
    per_input = {
        kind: dict(zip(inputs[kind]["seeds"], inputs[kind]["sets"][set_name]["auc_per_seed"], strict=True))
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


def headline(doc: dict, primary: ModelResult, primary_metrics: Mapping[str, object]) -> dict:
    """metrics/eval.json: the primary model's test metrics (accuracy, AUC, precision, recall, F1,
    confusion matrix), the seed-mean AUC of each input kind, and the baseline's AUC and margin, on
    the standard and the sharpness-matched test sets."""
    out = {"model": primary.name, **primary_metrics}
    for set_name in ("test", "test_matched"):
        if set_name not in doc["sets"]:
            continue
        prefix = "" if set_name == "test" else "matched_"
        for kind, entry in doc["inputs"].items():
            out[f"{prefix}{kind}_auc_mean"] = entry["sets"][set_name]["auc_mean"]
        base = doc["baseline"]["sets"].get(set_name)
        if base is not None:
            out[f"{prefix}baseline_auc"] = base["auc_mean"]
            primary_auc = doc["inputs"][primary.input]["sets"][set_name]["auc_mean"]
            if primary_auc is not None and base["auc_mean"] is not None:
                out[f"{prefix}margin_over_baseline"] = round(primary_auc - base["auc_mean"], 4)
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


def robustness(doc: dict) -> pd.DataFrame:
    """AUC per JPEG quality the test photos were re-saved at: quality, <kind>_auc (seed mean) for
    every kind of ``INPUTS`` (empty where it was not trained), baseline_auc."""
    columns = ["quality", *(f"{kind}_auc" for kind in INPUTS), "baseline_auc"]
    rows = []
    for set_name in doc["sets"]:
        if not set_name.startswith("test_jpeg"):
            continue
        row = {"quality": int(set_name.removeprefix("test_jpeg"))}
        for kind, entry in doc["inputs"].items():
            row[f"{kind}_auc"] = entry["sets"][set_name]["auc_mean"]
        if set_name in doc["baseline"]["sets"]:
            row["baseline_auc"] = doc["baseline"]["sets"][set_name]["auc_mean"]
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def _auc_text(entry: Mapping[str, object] | None) -> str:
    if not entry or entry.get("auc_mean") is None:
        return "n/a"
    text = f"{entry['auc_mean']:.3f}"
    if len(entry.get("auc_per_seed") or []) > 1:
        text += f" ± {entry['auc_sd']:.3f}"
    if entry.get("ci95"):
        low, high = entry["ci95"]
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def number(value: object, digits: int = 1) -> str:
    """A table cell: "n/a" for None, a float to ``digits`` places, anything else as it is."""
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else f"{value}"


def markdown(doc: dict) -> str:
    """compare.md: the three tables (cost and AUC beside the paper, AUC per test set, robustness)
    and one sentence on ELA vs RGB, from the numbers in ``doc``."""
    lines = [
        "AUC: seed mean (± sd over seeds when more than one) [95% bootstrap interval over test photos].",
        "",
        "| Model | Params | Mult-adds / sample (G) | Size (MiB) | Best epoch "
        "| Epochs to 95% of best val acc | Test AUC |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in doc["inputs"].values():
        macs = entry["multiply_adds"]
        lines.append(
            f"| {entry['label']} (seeds {', '.join(map(str, entry['seeds']))}) | {entry['params']:,} "
            f"| {macs / 1e9:.3f} | {number(entry['size_mib'])} | {number(entry['best_epoch'])} "
            f"| {number(entry['epochs_to_95pct_val_accuracy'])} | {_auc_text(entry['sets'].get('test'))} |"
        )
    if doc["baseline"]["sets"]:
        lines.append(
            f"| {LABELS['baseline']} (logistic regression, 5 features) | 6 | ~0 | ~0 | – | – "
            f"| {_auc_text(doc['baseline']['sets'].get('test'))} |"
        )
    for row in doc["paper"]:
        lines.append(
            f"| {row['model']} | {row['params']:.3g} | {row['gmacs']} | {row['size_mb']} (MB) | – "
            f"| {row['epochs']} (trained) | {row['auc']:.3f} |"
        )
    lines += ["", "| Model | " + " | ".join(doc["sets"]) + " |", "| --- |" + " --- |" * len(doc["sets"])]
    rows = [(e["label"], e["sets"]) for e in doc["inputs"].values()]
    if doc["baseline"]["sets"]:
        rows.append((LABELS["baseline"], doc["baseline"]["sets"]))
    for label, sets in rows:
        lines.append(f"| {label} | " + " | ".join(_auc_text(sets.get(s)) for s in doc["sets"]) + " |")
    for pair in ("ela_minus_rgb", "ela_minus_baseline", "rgb_minus_baseline"):
        cells = []
        for s in doc["sets"]:
            item = doc["differences"].get(s, {}).get(pair)
            ci = item and item.get("ci95")
            spread = item and len(item.get("diff_per_seed") or {}) > 1
            cells.append(
                "n/a"
                if not item
                else f"{item['diff']:+.3f}"
                + (f" ± {item['diff_sd']:.3f}" if spread else "")
                + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
            )
        if any(c != "n/a" for c in cells):
            lines.append(
                f"| {pair.replace('_minus_', ' − ').upper().replace('BASELINE', 'baseline')} | "
                + " | ".join(cells)
                + " |"
            )
    lines += ["", claim(doc)]
    return "\n".join(lines) + "\n"


def claim(doc: dict) -> str:
    """One sentence on the paper's ELA-vs-raw claim from the paired test-set difference."""
    item = doc["differences"].get("test", {}).get("ela_minus_rgb")
    if not item:
        return "ELA vs raw RGB: not measured (train.inputs lacks ela or rgb)."
    ci = item.get("ci95")
    interval_text = f" (95% interval {ci[0]:+.3f} to {ci[1]:+.3f})" if ci else ""
    seeds = item.get("diff_per_seed") or {}
    seeds_text = (
        f"; ELA was ahead with {item['seeds_ela_ahead']} of {len(seeds)} seeds "
        f"(sd of the difference over seeds {item['diff_sd']:.3f})"
        if len(seeds) > 1
        else ""
    )
    verdict = item.get("verdict")
    if verdict == "ELA better":
        return f"On this data ELA input beats raw RGB by {item['diff']:+.3f} AUC{interval_text}{seeds_text}."
    if verdict == "RGB better":
        return f"On this data raw RGB beats ELA input by {-item['diff']:.3f} AUC{interval_text}{seeds_text}."
    return (
        f"On this data ELA input does not measurably beat raw RGB: the AUC difference is "
        f"{item['diff']:+.3f}{interval_text}{seeds_text}."
    )
