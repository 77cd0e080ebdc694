"""The paper's CNN (§3.3, Fig. 6) in backend-agnostic Keras 3, and its cost per sample."""

from __future__ import annotations

import keras

from faceswap_ela.testsets import CLASSES

INPUT_SHAPE = (128, 128, 3)


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
    out_h * out_w * filters * (k_h * k_w * in_channels), a dense layer in * out. Pooling,
    activations and biases (additions only) are not counted."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = tuple(layer.kernel.shape)  # (k_h, k_w, in, out)
            out_h, out_w = layer.output.shape[1:3]
            total += int(out_h) * int(out_w) * kernel[0] * kernel[1] * kernel[2] * kernel[3]
        elif isinstance(layer, keras.layers.Dense):
            fan_in, fan_out = tuple(layer.kernel.shape)
            total += int(fan_in) * int(fan_out)
    return total
