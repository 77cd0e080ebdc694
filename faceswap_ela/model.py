"""The paper's CNN (§3.3, Fig. 6) in backend-agnostic Keras 3, and its cost per sample; beside it
(``model.arch: small``) a small fully convolutional net for little data, whose first layer keeps
the noise residual of each input channel.

The small net's custom pieces (the SRM kernels' initializer, Bayar's constraint) are registered
with Keras, so a saved model.keras loads wherever this module is imported.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from faceswap_ela.params import ModelParams
from faceswap_ela.testsets import CLASSES

INPUT_SHAPE = (128, 128, 3)
RESIDUALS = ("srm", "bayar")
SMALL_FILTERS = (32, 64, 128, 128)  # the small net's conv blocks, each halving the side
RESIDUAL_SIZE, RESIDUAL_FILTERS = 5, 3  # the first layer: 3 filters 5 x 5 per input channel
# The three SRM high-pass kernels of Fridrich and Kodovsky's rich models, as Zhou et al. (2018)
# use them for manipulation detection: the 3 x 3 square, the 5 x 5 KV and the horizontal second
# order, each scaled so that its centre is -1 and the others sum to 1 (prediction errors, as Bayar's).
SRM = (
    np.array(
        [
            [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]],
            [
                [-1, 2, -2, 2, -1],
                [2, -6, 8, -6, 2],
                [-2, 8, -12, 8, -2],
                [2, -6, 8, -6, 2],
                [-1, 2, -2, 2, -1],
            ],
            [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
        ],
        dtype=np.float64,
    )
    / np.array([4.0, 12.0, 2.0])[:, None, None]
)


@keras.saving.register_keras_serializable(package="faceswap_ela")
class SRMKernels(keras.initializers.Initializer):
    """The SRM kernels for a depthwise convolution (k_h, k_w, channels, 3): the same three
    high-pass filters on every input channel (the layer is frozen: they stay as they are)."""

    def __call__(self, shape, dtype=None):
        k_h, k_w, channels, multiplier = shape
        if (k_h, k_w, multiplier) != (*SRM.shape[1:], len(SRM)):
            raise ValueError(f"SRM kernels are 5 x 5, 3 per channel: not {tuple(shape)}")
        kernel = np.repeat(SRM.transpose(1, 2, 0)[:, :, None, :], channels, axis=2)
        return ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self) -> dict:
        return {}


@keras.saving.register_keras_serializable(package="faceswap_ela")
class BayarConstraint(keras.constraints.Constraint):
    """Bayar and Stamm's constrained convolution (2016): each k x k slice of the kernel (per input
    channel and filter) is re-projected after every step to a prediction-error filter, the centre
    weight -1 and the others summing to 1, so the layer can learn only residuals, not content."""

    EPSILON = 1e-6  # a sum of the other weights closer to 0 counts as this, not a division by 0

    def __call__(self, w):
        k_h, k_w = int(w.shape[0]), int(w.shape[1])
        centre = np.zeros((k_h, k_w) + (1,) * (len(w.shape) - 2))
        centre[k_h // 2, k_w // 2] = 1.0
        centre = ops.convert_to_tensor(centre, dtype=w.dtype)
        others = w * (1.0 - centre)
        total = ops.sum(others, axis=(0, 1), keepdims=True)
        total = ops.where(ops.abs(total) < self.EPSILON, self.EPSILON, total)
        return others / total - centre

    def get_config(self) -> dict:
        return {}


def build_model(input_shape: tuple[int, int, int] = INPUT_SHAPE, *, policy: str = "float32") -> keras.Model:
    """Two 5x5 valid convolutions (32 filters, ReLU, Glorot uniform), 2x2 max-pool, dropout 0.25,
    dense 256 ReLU, dropout 0.5, dense 2 softmax: 29,520,034 parameters for a 128x128x3 input.

    ``policy`` is the Keras dtype policy of every layer but the softmax output, which stays float32:
    ``float32``, ``mixed_bfloat16`` or ``mixed_float16`` (compile then adds loss scaling). The
    variables are float32 under all three.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        init = "glorot_uniform"
        return keras.Sequential(
            [
                keras.Input(shape=input_shape, name="image"),
                keras.layers.Conv2D(32, 5, padding="valid", activation="relu", kernel_initializer=init),
                keras.layers.Conv2D(32, 5, padding="valid", activation="relu", kernel_initializer=init),
                keras.layers.MaxPooling2D(2),
                keras.layers.Dropout(0.25),
                keras.layers.Flatten(),
                keras.layers.Dense(256, activation="relu", kernel_initializer=init),
                keras.layers.Dropout(0.5),
                keras.layers.Dense(
                    len(CLASSES), activation="softmax", kernel_initializer=init, dtype="float32"
                ),
            ],
            name="ela_cnn",
        )
    finally:
        keras.config.set_dtype_policy(previous)


def residual_layer(residual: str) -> keras.layers.Layer:
    """The small net's first layer: a 5 x 5 depthwise convolution, three filters per input channel
    (so it works on 3 or 3k channels alike), either the fixed SRM high-pass kernels (``srm``,
    frozen) or Bayar's constrained, trainable ones (``bayar``)."""
    settings = {
        "depth_multiplier": RESIDUAL_FILTERS,
        "padding": "same",
        "use_bias": False,
        "name": "residual",
    }
    if residual == "srm":
        return keras.layers.DepthwiseConv2D(
            RESIDUAL_SIZE, depthwise_initializer=SRMKernels(), trainable=False, **settings
        )
    if residual == "bayar":
        return keras.layers.DepthwiseConv2D(RESIDUAL_SIZE, depthwise_constraint=BayarConstraint(), **settings)
    raise ValueError(f"residual must be one of {RESIDUALS}, not {residual!r}")


def build_small(
    input_shape: tuple[int, int, int] = INPUT_SHAPE, residual: str = "srm", *, policy: str = "float32"
) -> keras.Model:
    """A small fully convolutional net: the noise-residual layer (``residual_layer``), four blocks
    of 3 x 3 convolution, batch normalisation, ReLU and 2 x 2 max-pooling (SMALL_FILTERS), global
    average pooling, dropout 0.5 and dense 2 softmax (float32), about 0.24 M weights for 3 or 3k
    input channels. ``policy`` as in ``build_model``."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        layers = [keras.Input(shape=input_shape, name="image"), residual_layer(residual)]
        for filters in SMALL_FILTERS:
            layers += [
                keras.layers.Conv2D(
                    filters, 3, padding="same", use_bias=False, kernel_initializer="he_uniform"
                ),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.MaxPooling2D(2),
            ]
        layers += [
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(len(CLASSES), activation="softmax", dtype="float32"),
        ]
        net = keras.Sequential(layers, name="small_cnn")
    finally:
        keras.config.set_dtype_policy(previous)
    first = net.layers[0]
    if first.depthwise_constraint is not None:  # start from a prediction-error filter too
        first.kernel.assign(first.depthwise_constraint(first.kernel))
    return net


def build(
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
    arch: ModelParams | None = None,
    *,
    policy: str = "float32",
) -> keras.Model:
    """The network ``model.arch`` asks for (the paper's by default) for ``input_shape``."""
    arch = arch or ModelParams()
    if arch.arch == "small":
        return build_small(input_shape, arch.residual, policy=policy)
    return build_model(input_shape, policy=policy)


def with_policy(net: keras.Model, policy: str) -> keras.Model:
    """``net``'s architecture and weights, uncompiled, with every layer but the output computing
    under ``policy``: a saved model, whatever policy it was trained under, predicts under any."""
    config = net.get_config()
    layers = [layer for layer in config["layers"] if layer["class_name"] != "InputLayer"]
    for layer in layers:
        layer["config"]["dtype"] = "float32" if layer is layers[-1] else policy
    copy = net.__class__.from_config(config)
    copy.set_weights(net.get_weights())
    return copy


def load_for_inference(path, policy: str = "float32") -> keras.Model:
    """The Keras model saved at ``path``, uncompiled, computing under ``policy``."""
    net = keras.saving.load_model(path, compile=False)
    if {layer.dtype_policy.name for layer in net.layers[:-1]} == {policy}:
        return net
    return with_policy(net, policy)


def compile_model(model: keras.Model, lr: float, rho: float, epsilon: float) -> keras.Model:
    """RMSprop and categorical cross-entropy, with accuracy as the reported metric."""
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=lr, rho=rho, epsilon=epsilon),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def parameter_count(model: keras.Model) -> int:
    """All weights, trainable or not."""
    return int(model.count_params())


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one forward pass for one sample, from the layer shapes: a convolution costs
    out_h * out_w * filters * (k_h * k_w * in_channels), a depthwise one out_h * out_w * k_h * k_w *
    in_channels * multiplier, a dense layer in * out, batch normalisation one per output value (its
    scale and shift folded together). Pooling, activations and biases (additions only) are not
    counted."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            out_h, out_w = layer.output.shape[1:3]
            total += int(out_h) * int(out_w) * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.BatchNormalization):
            total += int(np.prod(layer.output.shape[1:]))
        elif isinstance(layer, keras.layers.Conv2D):
            kernel = tuple(layer.kernel.shape)  # (k_h, k_w, in, out)
            out_h, out_w = layer.output.shape[1:3]
            total += int(out_h) * int(out_w) * kernel[0] * kernel[1] * kernel[2] * kernel[3]
        elif isinstance(layer, keras.layers.Dense):
            fan_in, fan_out = tuple(layer.kernel.shape)
            total += int(fan_in) * int(fan_out)
    return total
