"""model.arch: small: the fully convolutional net with a noise-residual first layer. It stays under
a million weights for 3 or 3k input channels, trains through the pipeline's loop (the paper's CNN
too on 3k channels), saves and loads back with the same predictions under any policy, keeps its
residual layer as it should (SRM frozen, Bayar's constraint re-projected), and its card and
`faceswap-ela predict` say and use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from faceswap_ela import card, cli, ela, hardware, landmarks, roi, training
from faceswap_ela import model as cnn
from faceswap_ela import params as P
from faceswap_ela.images import load_rgb, save_png
from tests.helpers.sample_data import portrait

ROOT = Path(__file__).resolve().parents[1]
FLOAT32 = hardware.choose_precision("float32", {"kind": "cpu", "backend": "tensorflow", "device": "CPU"}, ())


def random_set(n: int, size: int, channels: int, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Random uint8 crops whose label shows in their brightness (so a few steps learn something),
    4 per group."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    shift = (labels * 100).astype(np.uint8)[:, None, None, None]
    images = rng.integers(0, 128, (n, size, size, channels), dtype=np.uint8) + shift
    table = pd.DataFrame({"group": [f"g{i // 4}" for i in range(n)], "label": labels})
    return images, table


def short(**changes) -> P.TrainParams:
    return P.TrainParams(**{"epochs": 2, "batch_size": 8, "val_fraction": 0.25, "patience": 2, **changes})


@pytest.mark.parametrize("residual", cnn.RESIDUALS)
@pytest.mark.parametrize("channels", [3, 9])
def test_the_small_net_is_small_and_fully_convolutional(residual, channels):
    net = cnn.build((128, 128, channels), P.ModelParams(arch="small", residual=residual))
    assert net.name == "small_cnn" and net.input_shape == (None, 128, 128, channels)
    assert net.output_shape == (None, 2)
    assert cnn.parameter_count(net) < 1_000_000
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds[0] == "DepthwiseConv2D" and kinds[-3:] == ["GlobalAveragePooling2D", "Dropout", "Dense"]
    assert "Flatten" not in kinds and kinds.count("BatchNormalization") == len(cnn.SMALL_FILTERS)
    assert net.layers[0].output.shape[-1] == 3 * channels  # three residual filters per channel
    assert net.layers[0].trainable == (residual == "bayar")
    assert net.layers[-1].compute_dtype == "float32"
    # multiply-adds from the layer shapes: residual, then each block's conv and batch norm, then dense
    side, total, fan_in = 128, 128 * 128 * 25 * channels * 3, 3 * channels
    for filters in cnn.SMALL_FILTERS:
        total += side * side * filters * (9 * fan_in + 1)
        side, fan_in = side // 2, filters
    assert cnn.multiply_adds(net) == total + fan_in * 2


def test_the_paper_net_is_the_default():
    assert cnn.build((128, 128, 3)).count_params() == 29_520_034
    assert cnn.build((128, 128, 3), P.ModelParams()).name == "ela_cnn"
    assert P.parse({}).model == P.ModelParams(arch="paper", residual="srm")


def test_the_small_net_trains_through_the_training_loop():
    images, table = random_set(32, 32, 9)
    result = training.train(images, table, short(), 0, arch=P.ModelParams(arch="small"), verbose=0,
                            precision=FLOAT32)  # fmt: skip
    net = result.model
    assert net.name == "small_cnn" and net.input_shape == (None, 32, 32, 9)
    assert result.metrics["epochs_run"] == 2 and result.metrics["params"] < 1_000_000
    assert result.metrics["multiply_adds"] == cnn.multiply_adds(net)
    kernel = np.asarray(net.layers[0].kernel)  # the SRM layer is frozen: still the SRM kernels
    np.testing.assert_allclose(
        kernel, np.repeat(cnn.SRM.transpose(1, 2, 0)[:, :, None], 9, axis=2), atol=1e-7
    )


def test_the_paper_net_trains_a_step_on_3k_channels():
    images, table = random_set(16, 16, 6, seed=1)
    result = training.train(images, table, short(epochs=1), 0, verbose=0, precision=FLOAT32)
    assert result.model.name == "ela_cnn" and result.model.input_shape == (None, 16, 16, 6)
    assert result.metrics["epochs_run"] == 1


def test_bayar_constraint_keeps_a_prediction_error_filter():
    keras.utils.set_random_seed(0)
    net = cnn.compile_model(cnn.build_small((16, 16, 6), "bayar"), 0.01, 0.9, 1e-8)
    layer = net.layers[0]
    before = np.asarray(layer.kernel).copy()
    images, table = random_set(16, 16, 6)
    net.fit(images / 255.0, keras.utils.to_categorical(table["label"], 2), batch_size=8, epochs=1, verbose=0)
    kernel = np.asarray(layer.kernel)  # (5, 5, channels, 3)
    assert not np.allclose(kernel, before)  # it learnt
    centre = kernel[2, 2]
    np.testing.assert_allclose(centre, -1.0, atol=1e-6)
    np.testing.assert_allclose(kernel.sum(axis=(0, 1)) - centre, 1.0, atol=1e-5)
    # the constraint alone, on any kernel
    w = np.random.default_rng(0).normal(size=(5, 5, 2, 3)).astype(np.float32)
    projected = np.asarray(cnn.BayarConstraint()(keras.ops.convert_to_tensor(w)))
    np.testing.assert_allclose(projected[2, 2], -1.0)
    np.testing.assert_allclose(projected.sum(axis=(0, 1)) - projected[2, 2], 1.0, atol=1e-5)


@pytest.mark.parametrize("residual", cnn.RESIDUALS)
def test_a_saved_small_net_loads_back_with_the_same_predictions(tmp_path, residual):
    images, table = random_set(16, 32, 6)
    keras.utils.set_random_seed(1)
    net = cnn.compile_model(cnn.build_small((32, 32, 6), residual), 5e-4, 0.9, 1e-8)
    net.fit(images / 255.0, keras.utils.to_categorical(table["label"], 2), batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    training.save_model(training.inference_copy(net), path)
    x = (images / 255.0).astype(np.float32)
    reference = np.asarray(net.predict(x, verbose=0))
    for loaded in (keras.saving.load_model(path, compile=False), cnn.load_for_inference(path, "float32")):
        assert np.array_equal(np.asarray(loaded.predict(x, verbose=0)), reference)
        assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), net.get_weights(), strict=True))
    for policy in ("mixed_bfloat16", "mixed_float16"):
        loaded = cnn.load_for_inference(path, policy)
        assert {layer.dtype_policy.name for layer in loaded.layers[:-1]} == {policy}
        assert loaded.layers[-1].dtype_policy.name == "float32"
        assert np.allclose(np.asarray(loaded.predict(x, verbose=0)), reference, atol=0.05)
    # trained under a mixed policy, it saves and loads the same way
    mixed = cnn.build_small((32, 32, 6), residual, policy="mixed_bfloat16")
    cnn.compile_model(mixed, 5e-4, 0.9, 1e-8).fit(x, keras.utils.to_categorical(table["label"], 2), verbose=0)
    training.save_model(training.inference_copy(mixed), path)
    assert {layer.dtype_policy.name for layer in keras.saving.load_model(path).layers} == {"float32"}


def test_the_card_names_the_network_only_when_not_the_papers():
    default = card.make(P.parse({}), "ela", "warp", 42, "ela-warp-s42", "float32")
    assert list(default) == list(card.KEYS) and card.arch_settings(default) == P.ModelParams()
    p = P.parse({"model": {"arch": "small", "residual": "bayar"}})
    made = card.check(json.loads(json.dumps(card.make(p, "ela", "warp", 42, "n", "float32"))), "card.json")
    assert made["arch"] == "small" and made["residual"] == "bayar"
    assert card.arch_settings(made) == p.model
    with pytest.raises(card.CardError, match="arch"):
        card.check({**made, "arch": "huge"}, "card.json")


def write_params(folder: Path, raw: dict) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_predict_uses_a_small_model_on_several_qualities(tmp_path, capsys):
    """The CLI on a portrait with a small net on ELA at three qualities of the whole photo: its
    card says arch small, and the score is the model's on the stacked single-quality ELAs."""
    pytest.importorskip("dlib")
    size, qualities = 64, [75, 85, 95]
    raw = {"roi": {"size": size}, "model": {"arch": "small"},
           "ela": {"qualities": qualities, "scale": "fixed", "gain": 10.0, "at": "photo"}}  # fmt: skip
    params = write_params(tmp_path, raw)
    p = P.load(params)
    images, table = random_set(16, size, 9)
    keras.utils.set_random_seed(0)
    net = cnn.compile_model(cnn.build((size, size, 9), p.model), 5e-3, 0.9, 1e-8)
    net.fit(images / 255.0, keras.utils.to_categorical(table["label"], 2), batch_size=8, epochs=2, verbose=0)
    model = tmp_path / "ela-warp-s0" / "model.keras"
    model.parent.mkdir()
    training.save_model(training.inference_copy(net), model)
    card.path_for(model).write_text(json.dumps(card.make(p, "ela", "warp", 0, "ela-warp-s0", "float32")))
    assert card.read(card.path_for(model))["arch"] == "small"
    photo = tmp_path / "astronaut.png"
    save_png(photo, portrait("astronaut"))

    (tmp_path / "other").mkdir()
    other = write_params(tmp_path / "other", {"seed": 1})  # the card's settings are used, not these
    code = cli.main(["predict", str(photo), "--model", str(model), "--params", str(other), "--format", "json",
                     "--verbose", "--precision", "float32"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["status"] == "ok"
    assert "recipe warp, network small (srm), ELA qualities [75, 85, 95] subsampling 4:2:0 scale fixed" in err

    rgb = load_rgb(photo)
    (face,) = landmarks.detect_faces(rgb, *landmarks.load_models(), upsample=p.landmarks.upsample,
                                     max_side=p.landmarks.max_side)  # fmt: skip
    box = roi.roi_box(face.points, rgb.shape, None, dx_max=p.roi.dx_max, dy_max=p.roi.dy_max)
    single = [p.ela.model_copy(update={"quality": q, "qualities": ()}) for q in qualities]
    x = np.concatenate(
        [ela.roi_levels(ela.error_levels(rgb, s.quality, s.subsampling), box, size, s) for s in single],
        axis=2,
    )
    expected = float(np.asarray(keras.saving.load_model(model).predict(x[None] / 255.0, verbose=0))[0, 1])
    assert row["p_fake"] == pytest.approx(expected, abs=1e-5)

    # a card whose qualities the model does not take: one line, naming the channels
    narrow = tmp_path / "narrow" / "model.keras"
    narrow.parent.mkdir()
    training.save_model(cnn.build((size, size, 3), p.model), narrow)
    card.path_for(narrow).write_text(card.path_for(model).read_text())
    code = cli.main(["predict", str(photo), "--model", str(narrow), "--params", str(other)])
    err = capsys.readouterr().err
    assert code == 2 and "takes (64, 64, 3) input but its card" in err and "asks for 9 channels" in err


def test_the_train_and_evaluate_stages_run_the_small_net(tmp_path):
    """stages/train.py and stages/evaluate.py with model.arch small, as DVC runs them: the card and
    metrics say so, and evaluate loads the model (its registered pieces) and scores the test set."""
    ela_dir = tmp_path / "data" / "ela"
    ela_dir.mkdir(parents=True)
    for name, n, seed in (("train_warp", 24, 0), ("test", 8, 1)):
        images, table = random_set(n, 32, 3, seed)
        np.save(ela_dir / f"{name}_ela.npy", images)
        ids = {"crop_id": [f"{name}{i}" for i in range(n)], "photo_id": [f"{name}{i}" for i in range(n)]}
        table.assign(**ids).to_csv(ela_dir / f"{name}.csv", index=False)
    raw = {"roi": {"size": 32}, "model": {"arch": "small", "residual": "bayar"},
           "train": {"inputs": ["ela"], "fakes": ["warp"], "seeds": [0], "epochs": 1, "batch_size": 8,
                     "val_fraction": 0.25, "precision": "float32"},
           "tracking": {"experiment": "tiny", "log_model": False}}  # fmt: skip
    write_params(tmp_path, raw)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", TF_CPP_MIN_LOG_LEVEL="2")
    for stage in ("train", "evaluate"):
        command = [sys.executable, str(ROOT / "stages" / f"{stage}.py"), "--input", "ela", "--fakes", "warp"]
        done = subprocess.run(
            [*command, "--seed", "0"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
    model_card = card.read(tmp_path / "models" / "ela-warp-s0" / "card.json")
    assert (model_card["arch"], model_card["residual"]) == ("small", "bayar")
    metrics = json.loads((tmp_path / "metrics" / "train" / "ela-warp-s0.json").read_text())
    assert metrics["params"] < 1_000_000
    loaded = cnn.load_for_inference(tmp_path / "models" / "ela-warp-s0" / "model.keras")
    assert loaded.name == "small_cnn" and loaded.layers[0].depthwise_constraint is not None
    predictions = pd.read_csv(tmp_path / "data" / "predictions" / "ela-warp-s0.csv")
    assert len(predictions) == 8 and predictions["p_fake"].between(0, 1).all()
