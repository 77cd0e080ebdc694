"""dvc.yaml's dependencies follow the code: a stage re-runs when a module that shapes its outputs changes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# plumbing that shapes no output: parameter loading, stage entry, atomic writes, worker pools
PLUMBING = {"params", "stage", "outputs", "parallel"}
# imported for something that is not a DVC output of the stage
NOT_OUTPUT_SHAPING = {
    ("train", "figures"),  # the history figure, an MLflow artifact only
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


def test_the_primary_model_is_a_dvc_artifact_named_as_in_the_mlflow_registry():
    artifacts = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (name,) = [name for name, artifact in artifacts.items() if artifact["type"] == "model"]
    model = artifacts[name]
    assert name == params["tracking"]["model_name"]  # `dvc artifacts get . faceswap-ela-cnn`
    seed = params["train"]["seeds"][0]  # the ELA model of the first seed, whatever its name's middle
    assert re.fullmatch(rf"models/ela-[\w-]*s{seed}/model\.keras", model["path"]), model["path"]
    assert model["desc"] and {"ela", "cnn"} <= set(model["labels"])
