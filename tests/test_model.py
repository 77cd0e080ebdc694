"""The paper's CNN: layer stack, parameter count (2.95e7) and multiply-adds (0.44 G)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from faceswap_ela import model as cnn


@pytest.fixture(scope="module")
def net() -> keras.Model:
    return cnn.build_model()


def test_shapes_and_parameter_count(net):
    assert net.input_shape == (None, 128, 128, 3)
    assert net.output_shape == (None, 2)
    assert cnn.parameter_count(net) == 29_520_034
    assert net.count_params() == 29_520_034


def test_layer_stack_follows_the_paper(net):
    layers = net.layers
    kinds = [type(layer).__name__ for layer in layers]
    assert kinds == ["Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense"]
    for conv in layers[:2]:
        assert conv.filters == 32
        assert conv.kernel_size == (5, 5)
        assert conv.padding == "valid"
        assert conv.activation.__name__ == "relu"
        assert isinstance(conv.kernel_initializer, keras.initializers.GlorotUniform)
    assert layers[2].pool_size == (2, 2)
    assert layers[3].rate == pytest.approx(0.25)
    assert layers[5].units == 256 and layers[5].activation.__name__ == "relu"
    assert layers[6].rate == pytest.approx(0.5)
    assert layers[7].units == 2 and layers[7].activation.__name__ == "softmax"
    assert [tuple(layer.output.shape[1:]) for layer in layers[:5]] == [
        (124, 124, 32),
        (120, 120, 32),
        (60, 60, 32),
        (60, 60, 32),
        (115_200,),
    ]


def test_multiply_adds(net):
    expected = (
        124 * 124 * 32 * (5 * 5 * 3)  # conv 1
        + 120 * 120 * 32 * (5 * 5 * 32)  # conv 2
        + 60 * 60 * 32 * 256  # dense 256
        + 256 * 2  # dense 2
    )
    assert cnn.multiply_adds(net) == expected == 435_034_112
    assert round(cnn.multiply_adds(net) / 1e9, 2) == 0.44  # the paper's "0.44 GFLOPs"


def test_multiply_adds_follow_the_input_size():
    small = cnn.build_model((32, 32, 3))
    assert cnn.multiply_adds(small) == 28 * 28 * 32 * 75 + 24 * 24 * 32 * 800 + 12 * 12 * 32 * 256 + 512


def test_softmax_output_is_a_distribution(net):
    x = np.random.default_rng(0).random((3, 128, 128, 3), dtype=np.float32)
    probabilities = np.asarray(net.predict(x, verbose=0))
    assert probabilities.shape == (3, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("policy,compute", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_mixed_policies_keep_variables_and_the_output_float32(policy, compute):
    before = keras.config.dtype_policy().name
    net = cnn.build_model(policy=policy)
    assert keras.config.dtype_policy().name == before  # the global policy is restored
    assert all(layer.compute_dtype == compute for layer in net.layers[:-1])
    assert all(layer.variable_dtype == "float32" for layer in net.layers)
    assert net.layers[-1].compute_dtype == "float32"
    assert net.count_params() == 29_520_034
    compiled = cnn.compile_model(net, lr=5e-4, rho=0.9, epsilon=1e-8)
    # float16 needs loss scaling, bfloat16 (float32's exponent range) does not
    scaled = isinstance(compiled.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")


@pytest.mark.parametrize("saved_policy", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_a_saved_model_predicts_under_any_policy(tmp_path, saved_policy):
    keras.utils.set_random_seed(3)
    net = cnn.build_model((32, 32, 3), policy=saved_policy)
    trained = cnn.compile_model(cnn.build_model((32, 32, 3), policy=saved_policy), 5e-4, 0.9, 1e-8)
    assert not hasattr(cnn.with_policy(trained, "float32"), "optimizer")  # copies carry no optimizer state
    net.save(tmp_path / "model.keras")
    x = np.random.default_rng(0).random((6, 32, 32, 3), dtype=np.float32)
    reference = np.asarray(cnn.with_policy(net, "float32").predict(x, verbose=0))
    for policy in ("float32", "mixed_bfloat16", "mixed_float16"):
        loaded = cnn.load_for_inference(tmp_path / "model.keras", policy)
        assert {layer.dtype_policy.name for layer in loaded.layers[:-1]} == {policy}
        assert loaded.layers[-1].dtype_policy.name == "float32"
        for a, b in zip(loaded.get_weights(), net.get_weights(), strict=True):
            assert a.dtype == np.float32 and np.array_equal(a, b)
        p_fake = np.asarray(loaded.predict(x, verbose=0))
        assert p_fake.dtype == np.float32
        assert np.allclose(p_fake, reference, atol=0 if policy == "float32" else 0.02)


def test_compile_uses_rmsprop_with_the_given_settings(net):
    compiled = cnn.compile_model(cnn.build_model((32, 32, 3)), lr=5e-4, rho=0.9, epsilon=1e-8)
    optimizer = compiled.optimizer
    assert isinstance(optimizer, keras.optimizers.RMSprop)
    assert float(optimizer.learning_rate) == pytest.approx(5e-4)
    assert optimizer.rho == pytest.approx(0.9)
    assert optimizer.epsilon == pytest.approx(1e-8)
    assert compiled.loss == "categorical_crossentropy"
