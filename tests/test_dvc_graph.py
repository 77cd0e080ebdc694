"""dvc.yaml's dependencies follow the code: a stage re-runs when a module that shapes its outputs changes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from faceswap_ela import layout

ROOT = Path(__file__).resolve().parents[1]
# plumbing that shapes no output: parameter loading, stage entry, atomic writes, worker pools
PLUMBING = {"params", "stage", "outputs", "parallel"}
# imported for something that is not a DVC output of the stage
NOT_OUTPUT_SHAPING = {
    ("train", "figures"),  # the history figure, an MLflow artifact only
    ("evaluate", "detector"),  # the served detector, an MLflow logged model only
    # where the files are: dvc.yaml names the same paths (checked below), so editing layout.py need
    # not re-run the stages that take nothing else from it
    *((name, "layout") for name in ("download", "landmarks", "split", "materialize", "ela")),
}
# one model, as the matrix stages name theirs
ITEM = {"input": "ela", "fakes": "warp", "seed": 42}
MODEL = layout.model_name("ela", "warp", 42)
# every stage's outputs, as layout names them
LAYOUT_OUTPUTS = {
    "download": {layout.RAW, layout.DOWNLOAD_METRICS},
    "landmarks": {layout.LANDMARKS, layout.LANDMARK_REJECTS, layout.LANDMARKS_METRICS},
    "split": {layout.SPLIT, layout.SPLIT_METRICS},
    "materialize": {layout.TEMPLATE, layout.CROPS, layout.MATERIALIZE_METRICS},
    "ela": {layout.ELA_DIR, layout.GALLERY},
    "train": {
        layout.model_file(MODEL),
        layout.card_file(MODEL),
        layout.run_file(MODEL),
        layout.train_metrics(MODEL),
        layout.history_file(MODEL),
    },
    "evaluate": {layout.predictions_file(MODEL), layout.eval_metrics(MODEL)},
    "baseline": {
        layout.baseline_predictions("warp"),
        layout.ghost_predictions("warp"),
        layout.baseline_metrics("warp"),
    },
    "compare": {
        layout.COMPARE_JSON,
        layout.COMPARE_MD,
        layout.EVAL_JSON,
        layout.CROSS_FORGER_CSV,
        layout.CROSS_FORGER_PNG,
        layout.ROC_CSV,
        layout.ROC_PNG,
        layout.CONFUSION_CSV,
        layout.CONFUSION_PNG,
        layout.CURVES_CSV,
        layout.CURVES_PNG,
        layout.ROBUSTNESS_CSV,
        layout.ROBUSTNESS_PNG,
    },
}


def package_imports(script: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "faceswap_ela":
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("faceswap_ela."):
            modules.add(node.module.split(".")[1])
    return modules


def test_every_stage_depends_on_its_script_and_the_modules_it_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages
    for name, stage in stages.items():
        script = re.search(r"stages/\w+\.py", stage["cmd"]).group()
        deps = {str(d) for d in stage["deps"]}
        assert script in deps, f"{name}: {script} is not a dependency"
        for module in package_imports(ROOT / script) - PLUMBING:
            if (name, module) not in NOT_OUTPUT_SHAPING:
                assert f"faceswap_ela/{module}.py" in deps, f"{name} imports faceswap_ela.{module}"
        for dep in deps:
            if dep.startswith(("stages/", "faceswap_ela/")):
                assert (ROOT / dep).is_file(), f"{name}: {dep} does not exist"


def declared_outputs(stage: dict) -> set[str]:
    """A stage's outs, metrics and plots, with a matrix stage's ``${item.x}`` set from ITEM."""
    paths = {
        next(iter(entry)) if isinstance(entry, dict) else entry
        for kind in ("outs", "metrics", "plots")
        for entry in stage.get(kind, [])
    }
    return {re.sub(r"\$\{item\.(\w+)\}", lambda m: str(ITEM[m.group(1)]), path) for path in paths}


def test_every_output_is_where_layout_puts_it():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(LAYOUT_OUTPUTS)
    for name, stage in stages.items():
        assert declared_outputs(stage) == {str(path) for path in LAYOUT_OUTPUTS[name]}, name


def test_the_primary_model_is_a_dvc_artifact_named_as_in_the_mlflow_registry():
    artifacts = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (name,) = [name for name, artifact in artifacts.items() if artifact["type"] == "model"]
    model = artifacts[name]
    assert name == params["tracking"]["model_name"]  # `dvc artifacts get . faceswap-ela-cnn`
    seed = params["train"]["seeds"][0]  # the ELA model of the first seed, whatever its name's middle
    assert re.fullmatch(rf"models/ela-[\w-]*s{seed}/model\.keras", model["path"]), model["path"]
    assert model["desc"] and {"ela", "cnn"} <= set(model["labels"])
